"""VGG19 convolutional trunk (Simonyan & Zisserman 2015) with named layers, and its weight sources.

The layer indices match torchvision's ``vgg19().features`` (conv1_1 is index 0, relu5_4 index 35), so
torchvision's and timm's ImageNet state dicts load directly. Names follow SRGAN: ``conv{i}_{j}`` and
``relu{i}_{j}`` are the j-th convolution (and its ReLU) before the i-th max-pool; Li et al.'s phi_{5,4}
is ``relu5_4``.

Weights (never silently random): a local file, ``torchvision`` or ``timm`` (downloads, needs the
internet or a warm cache), or ``random`` when explicitly asked for (tests).
"""

import logging
from pathlib import Path

import torch
from torch import nn

from fundus2ffa.errors import WeightsError
from fundus2ffa.nets.blocks.frozen_backward import frozen_forward
from fundus2ffa.nets.blocks.winograd_conv import WinogradConv2d

log = logging.getLogger(__name__)

_STAGES = (2, 2, 4, 4, 4)  # convolutions per stage in VGG19


def _layer_names() -> list[str]:
    names = []
    for stage, convs in enumerate(_STAGES, start=1):
        for j in range(1, convs + 1):
            names += [f"conv{stage}_{j}", f"relu{stage}_{j}"]
        names.append(f"pool{stage}")
    return names


VGG19_LAYERS = tuple(_layer_names())

WEIGHTS_HELP = (
    "set it to a local VGG19 ImageNet file (torchvision's vgg19-dcbb9e9d.pth, or any state dict with "
    "features.<i>.weight keys), or to `torchvision` / `timm` to download them (needs the internet once; "
    "they are cached), or to `random` for tests only. Offline users can copy the file from a machine "
    "with internet access."
)


#: the narrowest input (channels) a convolution computed by Winograd (``conv: winograd``) has: from 256
#: channels (stages 3-5, at 1/4 of the image side and below) it is faster than oneDNN's direct convolution
#: on this CPU (256 channels at 64 x 64: 44 -> 39 ms forward; 512 at 32 x 32: 45 -> 33 ms), below it slower
WINOGRAD_FROM_CHANNELS = 256


class VGG19Features(nn.Module):
    """VGG19 ``features`` up to the deepest of ``layers``; ``forward`` returns {name: activation}.

    ``conv``: native (nn.Conv2d) | winograd: the convolutions of 256 or more input channels computed by
    Winograd F(2x2, 3x3) (nets/blocks/winograd_conv.py; the same maths to 1e-6 and the same state-dict
    keys), a speed option for the frozen perceptual network (issue 24).

    ``lean_backward``: with frozen weights, keep for backward only what the input gradient needs (ReLU
    masks, max-pool positions, no convolution inputs: nets/blocks/frozen_backward.py); the same values and
    input gradient, about a quarter of the memory (issue 24). Layers whose weights train run as usual."""

    def __init__(self, layers: list[str] | tuple[str, ...], conv: str = "native", lean_backward: bool = False):
        super().__init__()
        unknown = [name for name in layers if name not in VGG19_LAYERS]
        if unknown:
            raise ValueError(f"unknown VGG19 layers {unknown}; choose from {', '.join(VGG19_LAYERS)}")
        if conv not in ("native", "winograd"):
            raise ValueError(f"the VGG19 conv must be native or winograd, got {conv!r}")
        self.layers = tuple(layers)
        self.lean_backward = bool(lean_backward)
        depth = max(VGG19_LAYERS.index(name) for name in layers) + 1
        modules, channels = [], 3
        for name in VGG19_LAYERS[:depth]:
            if name.startswith("conv"):
                stage = int(name[4])
                width = min(64 * 2 ** (stage - 1), 512)
                winograd = conv == "winograd" and channels >= WINOGRAD_FROM_CHANNELS
                modules.append((WinogradConv2d if winograd else nn.Conv2d)(channels, width, 3, padding=1))
                channels = width
            elif name.startswith("relu"):
                modules.append(nn.ReLU(inplace=False))
            else:
                modules.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*modules)
        self._wanted = {VGG19_LAYERS.index(name): name for name in layers}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        lean = self.lean_backward and torch.is_grad_enabled() and x.requires_grad
        for index, module in enumerate(self.features):
            x = frozen_forward(module, x) if lean else module(x)
            if index in self._wanted:
                out[self._wanted[index]] = x
        return out

    def paired(self, x: torch.Tensor, target: torch.Tensor):
        """Yield ``(name, x's feature, target's feature)`` at each of ``layers``, shallowest first, running
        the two images through the network layer by layer together, ``target`` without gradient.

        The values are ``forward``'s; what differs is what is alive at once: a loss that reads each pair
        as it comes (losses/perceptual.py) never holds all of both images' features, and the gradient of
        a shallow layer's term is made in backward only when backward reaches that layer (autograd runs
        the later-made nodes first) instead of waiting from the start of backward (issue 24: pix2pixHD's
        peak memory falls in the perceptual loss's forward or backward)."""
        lean = self.lean_backward and torch.is_grad_enabled() and x.requires_grad
        for index, module in enumerate(self.features):
            with torch.no_grad():
                target = module(target)
            x = frozen_forward(module, x) if lean else module(x)
            if index in self._wanted:
                yield self._wanted[index], x, target


def _state_dict_from_file(path: Path) -> dict:
    if not path.is_file():
        raise WeightsError(f"VGG19 weights file {path} does not exist; {WEIGHTS_HELP}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def _download(source: str) -> dict:
    try:
        if source == "torchvision":
            from torchvision.models import VGG19_Weights, vgg19

            return vgg19(weights=VGG19_Weights.IMAGENET1K_V1).state_dict()
        import timm

        return timm.create_model("vgg19.tv_in1k", pretrained=True).state_dict()
    except Exception as exc:  # network errors come in many types
        raise WeightsError(f"could not get VGG19 weights from {source} ({exc.__class__.__name__}: {exc}); {WEIGHTS_HELP}") from exc


def load_vgg19(layers, weights: str | None, config_key: str = "pretrained.vgg19", conv: str = "native",
               lean_backward: bool = False) -> VGG19Features:
    """A frozen, eval-mode :class:`VGG19Features` with weights from ``weights``."""
    if weights in (None, "", "null"):
        raise WeightsError(f"{config_key} is not set: {WEIGHTS_HELP}")
    net = VGG19Features(layers, conv, lean_backward)
    if weights == "random":
        log.warning("VGG19 perceptual backbone has RANDOM weights (%s=random): use only for tests", config_key)
    else:
        state = _download(weights) if weights in ("torchvision", "timm") else _state_dict_from_file(Path(weights).expanduser())
        features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        own = net.features.state_dict()
        missing = [k for k in own if k not in features]
        if missing:
            raise WeightsError(f"{weights} is not a VGG19 state dict (missing features.{missing[0]}, ...); {WEIGHTS_HELP}")
        net.features.load_state_dict({k: features[k] for k in own})
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
