"""Per-image PSNR/SSIM inside the field of view: an empty FOV has no score (NaN), and means skip and count it."""

import math

import numpy as np
import pytest
import torch

from fundus2ffa.metrics.image import MetricTable, image_quality


def _pair(seed: int = 0, n: int = 3, size: int = 32):
    rng = np.random.default_rng(seed)
    real = torch.from_numpy(rng.integers(0, 256, (n, 1, size, size)) / 127.5 - 1.0).float()
    fake = (real + torch.from_numpy(rng.normal(0, 0.1, real.shape)).float()).clamp(-1, 1)
    return fake, real


def test_empty_fov_scores_nan_not_100_or_0():
    fake, real = _pair()
    fov = torch.zeros(3, 1, 32, 32)
    fov[0, :, 8:24, 8:24] = 1  # image 0 has a field of view; images 1 and 2 (crops outside it) none
    fov[2, :, 0, 0] = 0
    scores = image_quality(fake, real, fov)
    assert math.isfinite(scores["psnr_fov"][0].item()) and math.isfinite(scores["ssim_fov"][0].item())
    assert torch.isnan(scores["psnr_fov"][1:]).all() and torch.isnan(scores["ssim_fov"][1:]).all()
    assert torch.isfinite(scores["psnr"]).all()  # the whole-image scores are unaffected
    # image 0's FOV PSNR, computed independently from the quantised 8-bit values inside the mask
    f8 = torch.round((fake[0, 0] + 1) * 127.5)[8:24, 8:24] / 255.0
    r8 = torch.round((real[0, 0] + 1) * 127.5)[8:24, 8:24] / 255.0
    expected = 10 * math.log10(1.0 / ((f8 - r8) ** 2).mean().item())
    assert scores["psnr_fov"][0].item() == pytest.approx(expected, rel=1e-5)


def test_means_exclude_empty_fov_and_count_it():
    fake, real = _pair(seed=1, n=4)
    fov = torch.zeros(4, 1, 32, 32)
    fov[:2, :, 4:28, 4:28] = 1  # two images with a FOV, two without
    table = MetricTable()
    table.add(["a", "b", "c", "d"], ["x", "x", "y", "y"], image_quality(fake, real, fov))
    rows = table.gathered()
    means = MetricTable.aggregate(rows)
    valid = [r["psnr_fov"] for r in rows[:2]]
    assert means["psnr_fov"] == pytest.approx(sum(valid) / 2)  # not diluted by NaN, not pulled to 100
    assert means["psnr"] == pytest.approx(sum(r["psnr"] for r in rows) / 4)
    assert means["fov_empty"] == 2.0 and means["count"] == 4.0
    assert math.isnan(means["psnr_fov/y"]) and means["psnr_fov/x"] == pytest.approx(means["psnr_fov"])
