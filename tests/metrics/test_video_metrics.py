"""Per-frame video PSNR/SSIM: the standard [0, 1] definitions and the Fundus2Video code's variants."""

import math

import numpy as np
import pytest
import torch
from scipy.signal import correlate2d

from fundus2ffa.metrics.image import image_quality
from fundus2ffa.metrics.video import (
    PSNR_COMPAT_OFFSET_DB,
    VideoQuality,
    compat_psnr_frames,
    compat_ssim_frames,
    video_quality,
)


def eight_bit_videos(n=2, t=3, size=24, seed=0):
    """Grey videos on the 8-bit grid (quantisation is then a no-op), replicated to 3 channels, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    real = rng.integers(20, 236, (n, t, 1, size, size))
    fake = np.clip(real + rng.integers(-20, 21, real.shape), 0, 255)
    to_video = lambda a: torch.from_numpy(a).float().div(127.5).sub(1.0).expand(-1, -1, 3, -1, -1)
    return to_video(fake), to_video(real)


def test_compat_psnr_is_6_02_db_below_the_standard_psnr():
    fake, real = eight_bit_videos()
    standard = video_quality(fake, real, per_frame=True)["psnr"].double()
    compat = video_quality(fake, real, compat_mode=True, per_frame=True)["psnr"]
    assert PSNR_COMPAT_OFFSET_DB == pytest.approx(6.0206, abs=1e-4)
    torch.testing.assert_close(standard - compat, torch.full_like(compat, 10 * math.log10(4)), rtol=0, atol=1e-4)
    # the compat value by its definition: 20 log10(1 / sqrt(MSE over C x H x W)) on [-1, 1] values
    mse = (fake[0, 1].double() - real[0, 1].double()).square().mean()
    assert compat[0, 1].item() == pytest.approx(20 * math.log10(1 / math.sqrt(mse)), rel=1e-12)


def test_compat_psnr_of_identical_frames_is_100():
    _, real = eight_bit_videos(n=1, t=2)
    assert torch.equal(compat_psnr_frames(real, real), torch.full((1, 2), 100.0, dtype=torch.float64))


def _scipy_compat_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of one channel as the released code computes it: Gaussian statistics where the window fits."""
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5 ** 2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    filt = lambda a: correlate2d(a, window, mode="valid")
    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx ** 2, filt(y * y) - my ** 2, filt(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return float((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))).mean())


def test_compat_ssim_is_the_channel_mean_over_the_valid_region_of_raw_values():
    rng = np.random.default_rng(3)
    real = torch.from_numpy(rng.uniform(-1, 1, (1, 2, 3, 20, 23)))
    fake = (real + torch.from_numpy(rng.normal(0, 0.2, real.shape))).clamp(-1, 1)
    ours = compat_ssim_frames(fake, real)
    for t in range(2):
        expected = np.mean([_scipy_compat_ssim(fake[0, t, c].numpy(), real[0, t, c].numpy()) for c in range(3)])
        assert ours[0, t].item() == pytest.approx(expected, rel=1e-10)
    assert torch.allclose(compat_ssim_frames(real, real), torch.ones(1, 2, dtype=torch.float64))


def test_standard_scores_are_per_frame_image_scores_of_the_grey_frames_averaged_per_video():
    fake, real = eight_bit_videos(n=2, t=3)
    fov = torch.zeros(2, 1, 24, 24)
    fov[..., 4:20, 4:20] = 1
    video = video_quality(fake, real, fov=fov)
    frames = image_quality(fake[:, :, :1].flatten(0, 1), real[:, :, :1].flatten(0, 1), fov.repeat_interleave(3, 0))
    for key in ("psnr", "ssim", "psnr_fov", "ssim_fov"):
        torch.testing.assert_close(video[key], frames[key].view(2, 3).mean(1))
    # a difference outside the field of view lowers the full-frame score only
    damaged = real.clone()
    damaged[..., :2, :] = -1.0
    scores = video_quality(damaged, real, fov=fov)
    assert torch.all(scores["psnr_fov"] == 100.0) and torch.all(scores["psnr"] < 40.0)


def test_video_quality_metric_averages_videos_and_skips_nan_scores():
    fake, real = eight_bit_videos(n=3, t=2)
    per_video = video_quality(fake, real)
    metric = VideoQuality()
    metric.update(fake[:2], real[:2])
    metric.update(fake[2:], real[2:])
    result = metric.compute()
    assert set(result) == {"psnr", "ssim"}
    for key in result:
        assert result[key].item() == pytest.approx(per_video[key].double().mean().item(), rel=1e-6)

    compat = VideoQuality(compat_mode=True)
    compat.update(fake, real)
    assert compat.compute()["psnr"].item() == pytest.approx(result["psnr"].item() - PSNR_COMPAT_OFFSET_DB, abs=1e-4)

    broken = fake.clone()
    broken[0, :, 0, 0, 0] = float("nan")  # every frame of video 0 unscorable
    skipping = VideoQuality(compat_mode=True)
    skipping.update(broken[:2], real[:2])
    assert skipping.compute()["psnr"].item() == pytest.approx(
        compat_psnr_frames(fake[1:2], real[1:2]).mean().item(), rel=1e-9)
