"""Per-frame PSNR and SSIM of FFA videos: the standard definitions and the Fundus2Video code's variants.

Videos are N x T x C x H x W in [-1, 1] (C = 1 grey FFA, or 3 with the grey replicated, as Fundus2Video
feeds its metrics). Scores are computed per frame and averaged over frames per video (nanmean); the
mean over videos is :class:`VideoQuality`'s job (or the caller's), so per-frame and per-phase
breakdowns stay possible (``per_frame=True`` returns the N x T scores).

Standard (default, reference_spec 6.2): frames are mapped to [0, 1] and reduced to one grey channel
(the channel mean: the grey itself for replicated channels), and scored with
:func:`fundus2ffa.metrics.image.image_quality` per frame: PSNR with peak 1 (8-bit quantisation by
default, as the written frames would be) and the Wang et al. SSIM (11 x 11 Gaussian, sigma 1.5, K1 0.01,
K2 0.03, data range 1), on the whole frame and, given a field-of-view mask, inside it.

Compatibility (``compat_mode=True``, spec 6.1 and pitfall F6), the released metric code as it runs on
Fundus2Video's [-1, 1] tensors:

- PSNR per frame = 20 log10(1 / sqrt(MSE)) with the MSE over C x H x W of the [-1, 1] values, 100 when
  MSE < 1e-10. The values span 2, not 1, so the MSE is 4 times the [0, 1] MSE and the PSNR is
  10 log10 4 = 6.02 dB **lower** than the standard one (e.g. the paper's 11.81 dB is about 17.8 dB in
  standard terms); tests/metrics/test_video_metrics.py checks the offset numerically.
- SSIM per frame and channel on the raw [-1, 1] values with C1 = 0.01^2 and C2 = 0.03^2 (constants for a
  range of 1), the 11 x 11 Gaussian (sigma 1.5) statistics taken only where the window fits (the code
  filters and crops a 5-pixel border: a "valid" convolution), the mean of that map; then the mean over
  channels. Computed in float64 as the code's numpy version.
"""

import math

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from fundus2ffa.metrics.full_precision import full_precision
from fundus2ffa.metrics.image import image_quality

COMPAT_MAX_PSNR = 100.0
COMPAT_MSE_FLOOR = 1e-10
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
PSNR_COMPAT_OFFSET_DB = 10.0 * math.log10(4.0)  # standard minus compat PSNR for the same frames: 6.0206 dB


def _check_videos(fake: torch.Tensor, real: torch.Tensor) -> None:
    if fake.dim() != 5 or fake.shape != real.shape:
        raise ValueError(f"expected fake and real videos of one N x T x C x H x W shape, got "
                         f"{tuple(fake.shape)} and {tuple(real.shape)}")


@torch.no_grad()
def compat_psnr_frames(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """The released code's per-frame PSNR on [-1, 1] values with peak 1: N x T (float64)."""
    _check_videos(fake, real)
    mse = (fake.double() - real.double()).square().flatten(2).mean(-1)
    psnr = 20.0 * torch.log10(1.0 / mse.sqrt())
    return torch.where(mse < COMPAT_MSE_FLOOR, torch.full_like(psnr, COMPAT_MAX_PSNR), psnr)


def _gaussian_window(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    offsets = torch.arange(SSIM_WINDOW, dtype=dtype, device=device) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-offsets.square() / (2 * SSIM_SIGMA ** 2))
    g = g / g.sum()
    return torch.outer(g, g)[None, None]


@torch.no_grad()
def compat_ssim_frames(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """The released code's per-frame SSIM (raw values, valid region, channel mean): N x T (float64)."""
    _check_videos(fake, real)
    n, t, c, h, w = fake.shape
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels, got {h} x {w}")
    x = fake.double().reshape(n * t * c, 1, h, w)
    y = real.double().reshape(n * t * c, 1, h, w)
    window = _gaussian_window(x.dtype, x.device)
    stats = F.conv2d(torch.cat([x, y, x * x, y * y, x * y], dim=1).view(-1, 1, h, w), window)
    mu_x, mu_y, xx, yy, xy = stats.view(n * t * c, 5, h - SSIM_WINDOW + 1, w - SSIM_WINDOW + 1).unbind(1)
    var_x, var_y, cov = xx - mu_x.square(), yy - mu_y.square(), xy - mu_x * mu_y
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1).view(n, t, c).mean(-1)


@torch.no_grad()
@full_precision
def video_quality(fake: torch.Tensor, real: torch.Tensor, fov: torch.Tensor | None = None,
                  compat_mode: bool = False, quantize: bool = True, per_frame: bool = False) -> dict[str, torch.Tensor]:
    """Per-video (N) or per-frame (N x T, ``per_frame``) PSNR and SSIM of N x T x C x H x W videos in [-1, 1].

    Standard: psnr, ssim and, with ``fov`` (N x 1 x H x W or N x T x 1 x H x W), psnr_fov and ssim_fov.
    ``compat_mode``: the released code's psnr and ssim (no FOV variants; ``fov`` and ``quantize`` unused).
    Frame averages are nanmeans.
    """
    _check_videos(fake, real)
    if compat_mode:
        scores = {"psnr": compat_psnr_frames(fake, real), "ssim": compat_ssim_frames(fake, real)}
    else:
        n, t = fake.shape[:2]
        f, r = fake.flatten(0, 1), real.flatten(0, 1)
        if f.shape[1] > 1:  # one grey channel (spec 6.2): the mean of the (replicated) channels
            f, r = f.mean(1, keepdim=True), r.mean(1, keepdim=True)
        mask = None
        if fov is not None:
            if fov.dim() not in (4, 5):
                raise ValueError(f"fov: expected an N x 1 x H x W or N x T x 1 x H x W mask, got {tuple(fov.shape)}")
            mask = fov if fov.dim() == 5 else fov.unsqueeze(1)
            mask = mask.expand(n, t, *mask.shape[2:]).flatten(0, 1)[:, :1]
        frames = image_quality(f, r, mask, quantize=quantize)
        scores = {k: v.view(n, t) for k, v in frames.items()}
    if per_frame:
        return scores
    return {k: v.nanmean(1) for k, v in scores.items()}


class VideoQuality(Metric):
    """Mean over videos of the per-video PSNR/SSIM of :func:`video_quality` (sums gathered across DDP ranks).

    ``update(fake, real, fov=None)`` (torchmetrics' preds, target order); ``compute()`` returns
    {"psnr": ..., "ssim": ... [, "psnr_fov", "ssim_fov"]}. Videos whose score is NaN are left out.
    """

    higher_is_better = True
    is_differentiable = False
    full_state_update = False

    KEYS = ("psnr", "ssim", "psnr_fov", "ssim_fov")

    def __init__(self, compat_mode: bool = False, quantize: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.compat_mode, self.quantize = bool(compat_mode), bool(quantize)
        for key in self.KEYS:
            self.add_state(f"{key}_sum", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{key}_count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, fake: torch.Tensor, real: torch.Tensor, fov: torch.Tensor | None = None) -> None:
        scores = video_quality(fake, real, fov, compat_mode=self.compat_mode, quantize=self.quantize)
        for key, values in scores.items():
            values = values.double()
            valid = ~torch.isnan(values)
            setattr(self, f"{key}_sum", getattr(self, f"{key}_sum") + values[valid].sum())
            setattr(self, f"{key}_count", getattr(self, f"{key}_count") + valid.sum())

    def compute(self) -> dict[str, torch.Tensor]:
        return {key: getattr(self, f"{key}_sum") / getattr(self, f"{key}_count")
                for key in self.KEYS if getattr(self, f"{key}_count") > 0}


__all__ = ["PSNR_COMPAT_OFFSET_DB", "VideoQuality", "compat_psnr_frames", "compat_ssim_frames", "video_quality"]
