"""LPIPS, the learned perceptual image patch similarity (Zhang et al., CVPR 2018), version 0.1 with the
AlexNet trunk: the perceptual distance Fundus2Video's code computes and reference_spec 6.1-6.2 ask for.

    d(x, y) = sum_l  mean_{h,w}  w_l . (f_l(x) - f_l(y))^2

where ``f_l`` are the AlexNet ReLU1..ReLU5 activations (torchvision ``alexnet().features`` indices 1, 4,
7, 9, 11) of the inputs after LPIPS' scaling layer ``(x - shift) / scale``, each unit-normalised over
channels (``f / (||f||_2 + 1e-10)``), and ``w_l`` are the 1x1 linear heads that v0.1 calibrated on human
judgements. Inputs are in [-1, 1] (this project's image range, which is what LPIPS expects); grey (one
channel) images are replicated to 3 channels (spec 6.2).

Two variants (``compat``):

- standard (spec 6.2): the above, one value per image;
- compat (spec 6.1, pitfall F6): what the released Fundus2Video metric code computes on its [-1, 1]
  tensors: its helper maps ``x -> 2x - 1`` as if the input were [0, 1] (giving [-3, 1]), runs LPIPS with
  ``spatial=True`` (each layer's map upsampled bilinearly to the input size) and takes the mean.

Weights, never silently random (as the VGG19 of the perceptual losses, nets/backbones/vgg.py):

- the AlexNet trunk (ImageNet) from ``pretrained.lpips_backbone``: a local file (torchvision's
  ``alexnet-owt-7be5be79.pth`` or any state dict with ``features.<i>.weight`` keys), ``torchvision``
  (downloads, needs the internet once), or ``random`` for tests only;
- the linear heads from ``pretrained.lpips_heads``: ``package`` (the ``alex.pth`` shipped in the
  ``lpips`` PyPI package, BSD-2, ``pip install lpips==0.1.4`` or ``pip install 'fundus2ffa[lpips]'``;
  read as data, its code is not imported) or a local copy of that file. Both load with
  ``weights_only=True``.
"""

import importlib.util
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fundus2ffa.errors import WeightsError
from fundus2ffa.metrics.full_precision import full_precision
from fundus2ffa.weights import sha256_of

log = logging.getLogger(__name__)

ALEXNET_CHANNELS = (64, 192, 384, 256, 256)
ALEXNET_TAPS = (1, 4, 7, 9, 11)  # ReLU1..ReLU5 in torchvision's alexnet().features
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
HEADS_PACKAGE = "lpips==0.1.4"
HEADS_MEMBER = "weights/v0.1/alex.pth"
HEADS_SHA256 = "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"  # lpips 0.1.4, v0.1 alex.pth

BACKBONE_HELP = (
    "set pretrained.lpips_backbone to a local AlexNet ImageNet file (torchvision's alexnet-owt-7be5be79.pth, "
    "or any state dict with features.<i>.weight keys), or to `torchvision` to download it (needs the internet "
    "once; cached), or to `random` for tests only (the distance is then not LPIPS). Offline users can copy the "
    "file from a machine with internet access."
)
HEADS_HELP = (
    f"install the lpips package ({HEADS_PACKAGE}: `pip install 'fundus2ffa[lpips]'`), whose {HEADS_MEMBER} holds "
    "the v0.1 linear heads, or set pretrained.lpips_heads=/path/to/alex.pth (a copy of that file)."
)


class AlexNetFeatures(nn.Module):
    """torchvision's AlexNet ``features`` up to ReLU5; ``forward`` returns the five ReLU activations."""

    def __init__(self):
        super().__init__()
        from torchvision.models import alexnet

        self.features = alexnet(weights=None).features[: ALEXNET_TAPS[-1] + 1]
        for module in self.features:
            if isinstance(module, nn.ReLU):
                module.inplace = False

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for index, module in enumerate(self.features):
            x = module(x)
            if index in ALEXNET_TAPS:
                out.append(x)
        return out


def _alexnet_state(weights: str) -> dict:
    if weights == "torchvision":
        try:
            from torchvision.models import AlexNet_Weights, alexnet

            return alexnet(weights=AlexNet_Weights.IMAGENET1K_V1).state_dict()
        except Exception as exc:  # network errors come in many types
            raise WeightsError(f"could not download AlexNet weights from torchvision ({exc.__class__.__name__}: {exc}); {BACKBONE_HELP}") from exc
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(f"pretrained.lpips_backbone={weights}: no such file; {BACKBONE_HELP}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def load_alexnet(weights: str | None) -> AlexNetFeatures:
    """A frozen, eval-mode :class:`AlexNetFeatures` with weights from ``weights`` (module docstring)."""
    if weights in (None, "", "null"):
        raise WeightsError(f"pretrained.lpips_backbone is not set (LPIPS needs the ImageNet AlexNet): {BACKBONE_HELP}")
    net = AlexNetFeatures()
    if weights == "random":
        log.warning("LPIPS AlexNet trunk has RANDOM weights (pretrained.lpips_backbone=random): use only for tests")
    else:
        state = _alexnet_state(str(weights))
        features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        own = net.features.state_dict()
        missing = [k for k in own if k not in features]
        if missing:
            raise WeightsError(f"{weights} is not an AlexNet state dict (missing features.{missing[0]}, ...); {BACKBONE_HELP}")
        net.features.load_state_dict({k: features[k] for k in own})
    return net.eval().requires_grad_(False)


def heads_path(source: str | None = "package") -> Path:
    """The v0.1 AlexNet heads file: from the installed lpips package, or a local copy (sha256-checked)."""
    if source in (None, "", "package"):
        spec = importlib.util.find_spec("lpips")  # locates the package without running its code
        if spec is None or not spec.submodule_search_locations:
            raise WeightsError(f"the LPIPS linear heads come from the lpips package, which is not installed; {HEADS_HELP}")
        path = Path(list(spec.submodule_search_locations)[0]) / HEADS_MEMBER
        if not path.is_file():
            raise WeightsError(f"the installed lpips package has no {HEADS_MEMBER}; {HEADS_HELP}")
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise WeightsError(f"pretrained.lpips_heads={source}: no such file; {HEADS_HELP}")
    digest = sha256_of(path)
    if digest != HEADS_SHA256:
        raise WeightsError(f"{path} has sha256 {digest}, expected {HEADS_SHA256} (lpips 0.1.4 v0.1 alex.pth); {HEADS_HELP}")
    return path


class LPIPS(nn.Module):
    """LPIPS v0.1 (AlexNet): ``forward(x, y)`` -> N distances of N x C x H x W images in [-1, 1] (C 1 or 3).

    Args:
        backbone: ``pretrained.lpips_backbone`` (a file | torchvision | random).
        heads: ``pretrained.lpips_heads`` (package | a file).
    """

    def __init__(self, backbone: str | None, heads: str | None = "package"):
        super().__init__()
        self.net = load_alexnet(backbone)
        state = torch.load(heads_path(heads), map_location="cpu", weights_only=True)
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in ALEXNET_CHANNELS)
        try:
            for i, head in enumerate(self.heads):
                head.weight.data.copy_(state[f"lin{i}.model.1.weight"])
        except (KeyError, RuntimeError) as exc:
            raise WeightsError(f"{heads} does not hold the LPIPS v0.1 AlexNet heads ({exc}); {HEADS_HELP}") from exc
        self.heads.requires_grad_(False)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # a fixed metric: always in eval mode

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"LPIPS takes 1- or 3-channel images, got {x.shape[1]} channels")
        feats = self.net((x.float() - self.shift) / self.scale)
        return [f / (f.square().sum(1, keepdim=True).sqrt() + 1e-10) for f in feats]

    @torch.no_grad()
    @full_precision
    def forward(self, x: torch.Tensor, y: torch.Tensor, compat: bool = False) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"LPIPS needs images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        if compat:  # the Fundus2Video helper's [0, 1] -> [-1, 1] map applied to [-1, 1] data (F6)
            x, y = 2 * x - 1, 2 * y - 1
        total = torch.zeros(x.shape[0], device=x.device)
        for fx, fy, head in zip(self._features(x), self._features(y), self.heads):
            layer = head((fx - fy).square())
            if compat:  # spatial=True: each map upsampled to the input size, then the mean
                layer = F.interpolate(layer, size=x.shape[-2:], mode="bilinear", align_corners=False)
            total = total + layer.mean((1, 2, 3))
        return total


_CACHE: dict[tuple, LPIPS] = {}


def lpips_network(backbone: str | None, heads: str | None = "package") -> LPIPS:
    """One shared :class:`LPIPS` per weights source (kept out of LightningModules and checkpoints)."""
    key = (backbone, heads)
    if key not in _CACHE:
        _CACHE[key] = LPIPS(backbone, heads)
    return _CACHE[key]
