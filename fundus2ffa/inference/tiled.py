"""Tiled full-resolution translation: overlapping tiles, smoothly blended, so that peak memory depends
on the tile size and not on the image size (issue 12, item 2).

Why tiles: ``predict.mode=native`` runs a 4000x3000 ultra-widefield image through the generator at
once, 4.8 GB of activations for a narrow U-Net (ngf 32) and more than a 24 GB GPU for pix2pixHD. Here
the image is cut into ``size`` x ``size`` tiles overlapping by ``overlap`` (a fraction of the tile),
``batch`` tiles run together, and each output pixel is the weighted mean of the tiles that cover it.

Which implementation: MONAI's :func:`monai.inferers.sliding_window_inference` (a well-kept library of
this field) does all of it - window placement with the last window flush with the border, batched
windows, Gaussian importance weights, a caller-supplied weight map (used here for linear ramps),
windows computed on ``sw_device`` while the full-size output accumulates on ``device`` - so no own
implementation is kept. What MONAI leaves to us: the linear-ramp weight map, tile sizes rounded up to
the generator's size multiple (so no tile is padded inside the generator), and config checks.

Blending (``blend``):
  gaussian  MONAI's Gaussian importance map, sigma = ``sigma_scale`` x tile side (0.125, nnU-Net's choice):
            a tile's border pixels, where zero padding and the missing context make the output wrong,
            weigh e^-8 of its centre.
  linear    tent ramps over the overlap width at each side (weight > 0 everywhere), flat in the middle.
  constant  plain averaging (visible seams on models whose tile borders differ; for comparison only).

Limitation (documented, measured by tests/inference/test_tiled.py): tiling is exact only for a
translation-equivariant network whose receptive field fits inside the overlap. Instance normalisation
(the default of pix2pixHD, CycleGAN's ResNet, Fundus2Video) normalises by per-tile statistics, so a
tile's output depends on what else lies in the tile: tiled and whole-image outputs of such generators
differ by a low-frequency contrast change, not only at seams. BatchNorm in eval mode (pix2pix's U-Net,
Fundus2Angio) is a per-channel affine map and tiles exactly. Use the largest tile the device allows.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from fundus2ffa.errors import ConfigError

BLENDS = ("gaussian", "linear", "constant")


@dataclass(frozen=True)
class TileSettings:
    """``predict.tiled``: size (pixels, rounded up to the generator's multiple), overlap (fraction of a
    tile, in [0, 1)), blend (gaussian | linear | constant), sigma_scale (Gaussian), batch (tiles per
    forward pass), auto_above (``predict.mode=native`` switches to tiles for images whose longer side
    exceeds this many pixels; null: never)."""

    size: int = 512
    overlap: float = 0.25
    blend: str = "gaussian"
    sigma_scale: float = 0.125
    batch: int = 4
    auto_above: int | None = 2048

    def __post_init__(self):
        if int(self.size) < 8:
            raise ConfigError(f"predict.tiled.size must be at least 8 pixels, got {self.size}")
        if not 0.0 <= float(self.overlap) < 1.0:
            raise ConfigError(f"predict.tiled.overlap is a fraction of the tile in [0, 1), got {self.overlap}")
        if self.blend not in BLENDS:
            raise ConfigError(f"predict.tiled.blend must be one of {'|'.join(BLENDS)}, got {self.blend!r}")
        if float(self.sigma_scale) <= 0:
            raise ConfigError(f"predict.tiled.sigma_scale must be positive, got {self.sigma_scale}")
        if int(self.batch) < 1:
            raise ConfigError(f"predict.tiled.batch must be at least 1, got {self.batch}")
        if self.auto_above is not None and int(self.auto_above) < 1:
            raise ConfigError(f"predict.tiled.auto_above must be a positive side in pixels or null, got {self.auto_above}")

    @classmethod
    def from_config(cls, node: Mapping | None) -> "TileSettings":
        node = dict(node or {})
        unknown = sorted(set(node) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown predict.tiled keys {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**node)

    def wants_tiles(self, height: int, width: int) -> bool:
        """Whether ``predict.mode=native`` should tile an image of this size."""
        return self.auto_above is not None and max(height, width) > int(self.auto_above)


def tile_side(settings: TileSettings, multiple: int, height: int, width: int) -> tuple[int, int]:
    """The tile (h, w): ``size`` rounded up to ``multiple``, no larger than the image rounded up to it."""
    def side(extent: int) -> int:
        wanted = -(-int(settings.size) // multiple) * multiple
        return min(wanted, -(-extent // multiple) * multiple)

    return side(height), side(width)


def linear_ramp_map(tile: tuple[int, int], overlap: float, device=None) -> torch.Tensor:
    """Tent weights for one tile: 1 in the middle, ramping linearly to a small positive value over
    the overlap width at every side (positive, so a pixel covered by one tile only keeps its value)."""
    axes = []
    for extent in tile:
        ramp_width = max(1, int(round(overlap * extent)))
        position = torch.arange(extent, dtype=torch.float32, device=device)
        distance = torch.minimum(position + 0.5, extent - position - 0.5)  # to the nearest edge
        axes.append((distance / ramp_width).clamp(max=1.0))
    return axes[0][:, None] * axes[1][None, :]


def tiled_apply(
    net: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    settings: TileSettings,
    multiple: int = 1,
    tile_device: torch.device | str | None = None,
    out_device: torch.device | str | None = None,
) -> torch.Tensor:
    """``net`` over overlapping tiles of ``x`` (N x C x H x W), blended into an N x C' x H x W output.

    Tiles run on ``tile_device`` (default: x's device) and the output accumulates on ``out_device``
    (default: x's device): with x on the CPU and tiles on a GPU, GPU memory is bounded by ``batch``
    tiles whatever the image size.
    """
    from monai.inferers import sliding_window_inference

    height, width = x.shape[-2:]
    tile = tile_side(settings, multiple, height, width)
    tile_device = torch.device(tile_device) if tile_device is not None else x.device
    weights = None
    if settings.blend == "linear":
        weights = linear_ramp_map(tile, float(settings.overlap), device=tile_device)
    out = sliding_window_inference(
        x,
        roi_size=tile,
        sw_batch_size=int(settings.batch),
        predictor=net,
        overlap=float(settings.overlap),
        mode="constant" if settings.blend == "linear" else settings.blend,
        sigma_scale=float(settings.sigma_scale),
        padding_mode="replicate",  # only when the image is smaller than a tile
        sw_device=tile_device,
        device=torch.device(out_device) if out_device is not None else x.device,
        roi_weight_map=weights,
    )
    return torch.as_tensor(out)  # a plain tensor, not a MONAI MetaTensor


def tiled_translate(model, cf: torch.Tensor, settings: TileSettings, multiple: int = 1, **devices) -> torch.Tensor:
    """A still-image model's ``translate`` over tiles: CF N x 3 x H x W -> FFA N x 1 x H x W."""
    return tiled_apply(model.translate, cf, settings, multiple, **devices)


def tiled_translate_video(model, cf: torch.Tensor, num_frames: int, settings: TileSettings, multiple: int = 1, **devices) -> torch.Tensor:
    """A video model's window loop with every window step tiled (issue 12: "video models: tile each
    window step"): the previous window is fed back at full resolution, so the autoregression is the
    model's own; only each step's generator call runs over tiles. Returns N x T x 1 x H x W."""
    generator = model.eval_net("generator")
    return model.translate_video(cf, num_frames, step=lambda x: tiled_apply(generator, x, settings, multiple, **devices))
