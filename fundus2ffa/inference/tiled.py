"""Tiled full-resolution translation: overlapping tiles, smoothly blended, so that peak memory depends
on the tile size and not on the image size (issue 12, item 2).

Why tiles: ``predict.mode=native`` runs a 4000x3000 ultra-widefield image through the generator at
once, 4.8 GB of activations for a narrow U-Net (ngf 32) and more than a 24 GB GPU for pix2pixHD. Here
the image is cut into ``size`` x ``size`` tiles overlapping by ``overlap`` (a fraction of the tile),
``batch`` tiles run together, and each output pixel is the weighted mean of the tiles that cover it.

Which implementation: a small own one (:func:`tiled_apply`), after trying MONAI's
:func:`monai.inferers.sliding_window_inference` (1.6.1), which places, batches and accumulates windows
well but weighs every window with one map. A window flush with the image border then tapers its
weight towards that border, where its output is right (the border is real, not a cut), and hands the
pixels there to its neighbour, whose cut edge lies on them. Measured on a 204x264 synthetic eye, ResNet
generator (1 block, BatchNorm eval), 128 px tiles, overlap 0.5, largest difference from the
whole-image output: MONAI's built-in Gaussian map 31 grey levels (it also clamps the map at 1e-3,
above a tile corner's e^-16), MONAI with our Gaussian as ``roi_weight_map`` 7.5, this module 0 (exact
to float rounding once the overlap covers the receptive field; tests/inference/test_tiled.py). Here
each tile gets its own weights: no taper on a side that lies on the image border.

Blending (``blend``):
  gaussian  a Gaussian importance map, sigma = ``sigma_scale`` x tile side (0.125, nnU-Net's choice):
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

from fundus2ffa.config import settings_from_config
from fundus2ffa.errors import ConfigError
from fundus2ffa.nets.padding import pad_to_multiple

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
    batch: int = 2
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
        return settings_from_config(cls, node, "predict.tiled")

    def wants_tiles(self, height: int, width: int) -> bool:
        """Whether ``predict.mode=native`` should tile an image of this size."""
        return self.auto_above is not None and max(height, width) > int(self.auto_above)


def tile_grid(extent: int, size: int, overlap: float, multiple: int) -> tuple[int, list[int]]:
    """(tile side, tile starts) along one axis of a padded extent (a multiple of ``multiple``).

    One tile when the extent fits ``size`` (rounded up to ``multiple``). Otherwise the tile side, a
    multiple of ``multiple`` no larger than ``size``, whose tiles cover the extent with the least total
    length while neighbours overlap by at least ``overlap`` of a tile (so a 576 px side is two 336 px
    tiles for a generator of multiple 16, not two 512 px ones); ties go to the larger tile. Starts
    step by ``tile * (1 - overlap)`` rounded down to ``multiple``, the last flush with the end.

    Why starts on the multiple: strided generators are periodic in position (a transposed
    convolution's checkerboard has period 2**n_up); a tile that starts off the period computes a
    shifted pattern, a seam on every image. With the image padded to the multiple and every start a
    multiple of it, all tiles sit on the period."""
    cap = max(multiple, -(-int(size) // multiple) * multiple)
    if extent <= cap:
        return extent, [0]
    best = None
    for tile in range(multiple, cap + 1, multiple):
        step = int(tile * (1.0 - overlap)) // multiple * multiple
        if step < multiple:
            continue  # no start on the period keeps the asked overlap
        starts = tile_starts(extent, tile, step)
        cost = (len(starts) * tile, -tile)
        if best is None or cost < best[0]:
            best = (cost, tile, starts)
    if best is None:  # only the largest tile fits the period: step one period
        return cap, tile_starts(extent, cap, multiple)
    return best[1], best[2]


def tile_starts(extent: int, tile: int, step: int) -> list[int]:
    """Starts of the tiles along one axis: every ``step``, the last one flush with the end."""
    starts = list(range(0, max(extent - tile, 0) + 1, step))
    if starts[-1] + tile < extent:
        starts.append(extent - tile)
    return starts


def blend_profile(extent: int, settings: TileSettings, open_start: bool, open_end: bool) -> torch.Tensor:
    """1-D weights of one tile along one axis. Sides on the image border (``open_*`` False) keep full
    weight up to the border: the tile's output there is right, there is no cut to hide."""
    position = torch.arange(extent, dtype=torch.float64)
    centre = (extent - 1) / 2
    if settings.blend == "gaussian":
        weights = torch.exp(-0.5 * ((position - centre) / (float(settings.sigma_scale) * extent)) ** 2)
    elif settings.blend == "linear":
        ramp = max(1.0, round(float(settings.overlap) * extent))
        weights = (torch.minimum(position + 0.5, extent - position - 0.5) / ramp).clamp(max=1.0)
    else:
        weights = torch.ones(extent, dtype=torch.float64)
    if not open_start:
        weights[position <= centre] = 1.0
    if not open_end:
        weights[position >= centre] = 1.0
    return weights / weights.max()


@torch.no_grad()
def tiled_apply(
    net: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    settings: TileSettings,
    multiple: int = 1,
    tile_device: torch.device | str | None = None,
    out_device: torch.device | str | None = None,
    tile_shape: tuple[int, int] | None = None,
) -> torch.Tensor:
    """``net`` over overlapping tiles of ``x`` (N x C x H x W), blended into an N x C' x H x W output.

    The image is padded (reflection) to ``multiple`` and cut into the grid of :func:`tile_grid` (or
    tiles of ``tile_shape`` (h, w), e.g. a model's training patch); ``batch`` tiles run together on
    ``tile_device`` (default: x's device) and are accumulated as a weighted mean on ``out_device``
    (default: x's device). Memory beyond the image and its output: ``batch`` tiles and their
    activations, whatever the image size. A single tile is the whole-image call (no blending).
    """
    padded, crop = pad_to_multiple(x, multiple)
    n, height, width = padded.shape[0], padded.shape[-2], padded.shape[-1]
    overlap = float(settings.overlap)
    if tile_shape is None:
        tile_h, rows = tile_grid(height, int(settings.size), overlap, multiple)
        tile_w, cols = tile_grid(width, int(settings.size), overlap, multiple)
    else:
        tile_h, tile_w = min(int(tile_shape[0]), height), min(int(tile_shape[1]), width)
        rows = tile_starts(height, tile_h, max(1, int(tile_h * (1.0 - overlap))))
        cols = tile_starts(width, tile_w, max(1, int(tile_w * (1.0 - overlap))))
    tile_device = torch.device(tile_device) if tile_device is not None else x.device
    out_device = torch.device(out_device) if out_device is not None else x.device
    windows = [(r, c) for r in rows for c in cols]
    if len(windows) == 1:
        out = net(padded.to(tile_device)).to(out_device)
        return out if crop is None else out[..., crop[0], crop[1]]
    profiles_h = {r: blend_profile(tile_h, settings, r > 0, r + tile_h < height).float() for r in rows}
    profiles_w = {c: blend_profile(tile_w, settings, c > 0, c + tile_w < width).float() for c in cols}
    tiny = torch.finfo(torch.float32).tiny

    out = total = None
    batch = int(settings.batch)
    for first in range(0, len(windows), batch):
        chunk = windows[first:first + batch]
        tiles = torch.cat([padded[..., r:r + tile_h, c:c + tile_w] for r, c in chunk]).to(tile_device)
        pred = net(tiles).to(out_device)
        del tiles
        if out is None:
            out = torch.zeros(n, pred.shape[1], height, width, dtype=torch.float32, device=out_device)
            total = torch.zeros(height, width, dtype=torch.float32, device=out_device)
        for k, (r, c) in enumerate(chunk):
            w = (profiles_h[r][:, None] * profiles_w[c][None, :]).clamp_(min=tiny).to(out_device)
            out[..., r:r + tile_h, c:c + tile_w].addcmul_(pred[k * n:(k + 1) * n].float(), w)
            total[r:r + tile_h, c:c + tile_w] += w
        del pred
    out = out.div_(total).to(x.dtype)
    return out if crop is None else out[..., crop[0], crop[1]]


def tiled_translate(model, cf: torch.Tensor, settings: TileSettings, multiple: int = 1, **options) -> torch.Tensor:
    """A still-image model's ``translate`` over tiles: CF N x 3 x H x W -> FFA N x 1 x H x W."""
    return tiled_apply(model.translate, cf, settings, multiple, **options)


def tiled_translate_video(model, cf: torch.Tensor, num_frames: int, settings: TileSettings, multiple: int = 1, **options) -> torch.Tensor:
    """A video model's window loop with every window step tiled (issue 12: "video models: tile each
    window step"): the previous window is fed back at full resolution, so the autoregression is the
    model's own; only each step's generator call runs over tiles. Returns N x T x 1 x H x W."""
    generator = model.eval_net("generator")
    return model.translate_video(cf, num_frames, step=lambda x: tiled_apply(generator, x, settings, multiple, **options))
