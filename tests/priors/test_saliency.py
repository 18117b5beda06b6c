"""Li et al.'s local saliency map against exact references on real FFA frames, and its gradient.

Error bounds (derived in fundus2ffa/priors/saliency.py):
- the 51x51 median is exact on 8-bit images (equal to cv2.medianBlur, which replicates borders like
  scipy.ndimage.median_filter(mode="nearest")), and at most half an 8-bit level off on continuous values;
- the 7x7 Gaussian matches cv2.GaussianBlur(7x7, sigma 0; reflect-101 borders) to float32 rounding;
- so the map matches a * (GaussianBlur - medianBlur) to float32 rounding on 8-bit frames.
Timings are printed (pytest -s), not asserted.
"""

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from conftest import FFA_FRAMES
from fundus2ffa.errors import ConfigError
from fundus2ffa.priors import saliency
from fundus2ffa.priors.saliency import gaussian_blur, median_blur, saliency_map

FRAME_FILES = [  # kept at 512 x 512 in the fixtures: the paper's patch size for its 51 px median
    FFA_FRAMES / "02.disease_diagnosis" / "brvo" / "BRVO0002.jpg",
    FFA_FRAMES / "01.phase_identification" / "venous_phase" / "BRVO0579.jpg",
]
LEVEL = 2.0 / 255.0  # one 8-bit level in [-1, 1] units


def read_frame(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert image is not None, f"cannot read {path}"
    return image


def to_model(image: np.ndarray) -> torch.Tensor:
    """uint8 H x W -> 1 x 1 x H x W in [-1, 1], as the datasets make them."""
    return torch.from_numpy(image).float()[None, None] / 127.5 - 1.0


def to_levels(x: torch.Tensor) -> np.ndarray:
    return torch.round((x[0, 0] + 1.0) * 127.5).to(torch.uint8).numpy()


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return [read_frame(p) for p in FRAME_FILES]


def test_median_is_exact_on_real_8bit_frames(frames):
    # a full 512x512 frame (the paper's patch size) and a non-square crop with its own borders
    images = [frames[0], frames[1][37:337, 11:431]]
    for image in images:
        start = time.perf_counter()
        ours = to_levels(median_blur(to_model(image), 51))
        seconds = time.perf_counter() - start
        reference = cv2.medianBlur(image, 51)
        print(f"median 51x51 of {image.shape}: {seconds:.2f} s (cv2.medianBlur is the reference)")
        np.testing.assert_array_equal(ours, reference)


def test_int32_counting_and_row_blocks_give_the_same_exact_median(frames, monkeypatch):
    """The other code paths: int32 running sums (any non-CPU device) and int16 row blocks (tall images)."""
    tall = np.concatenate([frames[0][:, 200:296], frames[1][:, 200:296]], axis=0)  # 1024 x 96: two blocks
    reference = cv2.medianBlur(tall, 51)
    np.testing.assert_array_equal(to_levels(median_blur(to_model(tall), 51)), reference)
    monkeypatch.setattr(saliency, "_INT16_MAX", 100)  # no int16 anywhere: the GPU path, on the CPU
    np.testing.assert_array_equal(to_levels(median_blur(to_model(tall), 51)), reference)


def test_opencv_median_replicates_borders_like_scipy_nearest(frames):
    crop = frames[1][100:196, 200:320]
    np.testing.assert_array_equal(cv2.medianBlur(crop, 51), ndimage.median_filter(crop, size=51, mode="nearest"))


def test_median_of_continuous_values_is_within_half_a_level(frames):
    torch.manual_seed(0)
    x = (to_model(frames[0][200:328, 150:310]) + 0.01 * torch.randn(1, 1, 128, 160)).clamp(-1, 1)
    reference = ndimage.median_filter(x[0, 0].double().numpy(), size=51, mode="nearest")
    error = (median_blur(x, 51)[0, 0].double() - torch.from_numpy(reference)).abs().max().item()
    print(f"median of continuous values: max error {error / LEVEL:.3f} levels (bound 0.5)")
    assert error <= 0.5 * LEVEL + 1e-6


def test_gaussian_matches_opencv(frames):
    image = frames[0].astype(np.float32) / 127.5 - 1.0
    reference = cv2.GaussianBlur(image, (7, 7), 0)  # OpenCV taps for sigma 0, BORDER_REFLECT_101
    ours = gaussian_blur(torch.from_numpy(image)[None, None], 7)[0, 0].numpy()
    assert np.abs(ours - reference).max() < 1e-5


def test_saliency_map_matches_the_opencv_reference(frames):
    image = frames[1][64:320, 96:416]
    unit = image.astype(np.float32) / 127.5 - 1.0
    reference = cv2.GaussianBlur(unit, (7, 7), 0) - (cv2.medianBlur(image, 51).astype(np.float32) / 127.5 - 1.0)
    ours = saliency_map(to_model(image))[0, 0].numpy()
    assert np.abs(ours - reference).max() < 1e-5
    # options as defined: contrast scales, clamp keeps the bright side, normalise divides by the max |value|
    scaled = saliency_map(to_model(image), contrast=2.5, clamp_negative=True, normalise=False)[0, 0].numpy()
    np.testing.assert_allclose(scaled, np.maximum(2.5 * reference, 0.0), atol=3e-5)
    unit_max = saliency_map(to_model(image), normalise=True)[0, 0].numpy()
    np.testing.assert_allclose(unit_max, reference / np.abs(reference).max(), atol=1e-4)
    # bright structures are salient: the map's positive part holds most of the brightest pixels
    bright = image >= np.percentile(image, 95)
    assert (reference[bright] > 0).mean() > 0.8


def test_value_ranges_give_the_same_map_in_their_units(frames):
    image = frames[0][:160, :192]
    pm1 = saliency_map(to_model(image))
    unit = saliency_map(torch.from_numpy(image).float()[None, None] / 255.0, value_range=(0.0, 1.0))
    grey = saliency_map(torch.from_numpy(image).float()[None, None], value_range=(0.0, 255.0))
    torch.testing.assert_close(pm1, 2.0 * unit, atol=1e-5, rtol=0)
    torch.testing.assert_close(grey, 255.0 * unit, atol=2e-3, rtol=0)


def brute_force_median(x: torch.Tensor, k: int, grad_out: torch.Tensor):
    """Median and tie-shared gradient from all k*k window values (small images only)."""
    r = k // 2
    padded = F.pad(x, (r, r, r, r), mode="replicate")
    levels = torch.round((padded + 1.0) * 127.5)
    windows = F.unfold(levels, k)  # N x k*k x HW
    median = windows.median(1).values  # k*k is odd: the exact median
    ties = (windows == median.unsqueeze(1)).float()
    share = ties / ties.sum(1, keepdim=True) * grad_out.flatten(1).unsqueeze(1)
    grad_padded = F.fold(share, padded.shape[-2:], k)
    leaf = x.clone().requires_grad_(True)
    F.pad(leaf, (r, r, r, r), mode="replicate").backward(grad_padded)
    return (median / 127.5 - 1.0).view_as(x), leaf.grad


@pytest.mark.parametrize("steps", [255, 8])  # 8-bit values, and 9 levels only (many ties)
def test_median_gradient_matches_the_brute_force_reference(steps):
    torch.manual_seed(steps)
    x = torch.round(torch.rand(2, 1, 23, 31) * steps) / steps * 2 - 1
    grad_out = torch.randn(2, 1, 23, 31)
    leaf = x.clone().requires_grad_(True)
    out = median_blur(leaf, 7)
    out.backward(grad_out)
    median, grad = brute_force_median(x, 7, grad_out)
    torch.testing.assert_close(out, median, atol=1e-6, rtol=0)
    torch.testing.assert_close(leaf.grad, grad, atol=1e-5, rtol=0)


def test_loss_gradient_restores_missing_bright_structures(frames):
    """Remove the vessels in a box of the fake: descent raises exactly what the real frame shows there."""
    real = to_model(frames[0][96:352, 96:352])  # 256 px of vessels, with the paper's 51 / 7 px filters
    with torch.no_grad():
        background = median_blur(real, 51)
        target = saliency_map(real)
    box = torch.zeros_like(real, dtype=torch.bool)
    box[..., 64:192, 64:192] = True
    fake0 = torch.where(box, background, real)
    grads = {}
    for mode in ("selected", "detach"):
        fake = fake0.clone().requires_grad_(True)
        start = time.perf_counter()
        prediction = saliency_map(fake, median_gradient=mode)
        loss = F.mse_loss(prediction, target)
        loss.backward()
        print(f"saliency loss forward+backward at 256 px ({mode}): {time.perf_counter() - start:.2f} s")
        g = fake.grad[0, 0]
        grads[mode] = fake.grad
        assert g.abs().sum() > 0
        difference = (prediction - target).detach().abs()[0, 0]
        # concentrated where the maps differ: within the Gaussian's reach (3 px) of the top decile
        top = (difference > difference.flatten().quantile(0.9)).float()[None, None]
        near = F.max_pool2d(top, 7, 1, 3)[0, 0] > 0
        share = (g.abs()[near].sum() / g.abs().sum()).item()
        print(f"  |grad| share within 3 px of the top-decile saliency difference: {share:.3f} "
              f"(area {near.float().mean().item():.3f})")
        assert share > 0.75 and share > 3 * near.float().mean().item()
        # descent brightens the salient structures the fake lacks, and darkens nothing there on average
        salient = (target[0, 0] > 0.1) & box[0, 0]
        assert salient.sum() > 500
        assert (-g[salient]).mean() > 0
        assert (-g[salient]).mean() > 2 * g[box[0, 0] & ~salient].abs().mean()
    # the median term's gradient sums to one per output (the selected element): selected - detach = -sum(dL/dsal)
    d_sal = 2.0 * (saliency_map(fake0) - target) / target.numel()
    torch.testing.assert_close((grads["detach"] - grads["selected"]).sum(), d_sal.sum(), rtol=1e-4, atol=1e-9)


def test_bad_arguments_name_the_setting():
    x = torch.zeros(1, 1, 16, 16)
    with pytest.raises(ConfigError, match="median_gradient"):
        median_blur(x, 5, gradient="soft")
    with pytest.raises(ConfigError, match="median_size"):
        median_blur(x, 4)
    with pytest.raises(ConfigError, match="gaussian_size"):
        gaussian_blur(x, 6)
    with pytest.raises(ConfigError, match="value_range"):
        median_blur(x, 5, value_range=(1.0, 1.0))
