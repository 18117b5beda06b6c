"""Gradient-variance loss (Fundus2Video L_GV, reference_spec 4.5)."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from fundus2ffa.losses.base import LossInputs
from fundus2ffa.losses.gradient_variance import GREY_WEIGHTS, GradientVariance, gradient_variance_loss


def reference(fake: np.ndarray, real: np.ndarray, patch: int) -> float:
    """Independent numpy version: grey, Sobel (zero border), p x p patch variances (ddof 1), MSE x + MSE y."""

    def variances(image):
        grey = np.tensordot(np.array(GREY_WEIGHTS), image, axes=1) if image.shape[0] == 3 else image[0]
        kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
        out = []
        for kernel in (kx, kx.T):
            g = ndimage.correlate(grey, kernel, mode="constant", cval=0.0)
            h, w = (g.shape[0] // patch) * patch, (g.shape[1] // patch) * patch
            blocks = g[:h, :w].reshape(h // patch, patch, w // patch, patch).transpose(0, 2, 1, 3).reshape(-1, patch * patch)
            out.append(blocks.var(axis=1, ddof=1))
        return out

    (fx, fy), (rx, ry) = variances(fake), variances(real)
    return float(np.mean((fx - rx) ** 2) + np.mean((fy - ry) ** 2))


def test_matches_an_independent_reference_including_a_partial_border():
    rng = np.random.default_rng(0)
    fake, real = rng.uniform(-1, 1, (3, 30, 26)), rng.uniform(-1, 1, (3, 30, 26))  # 30 x 26: 2 x 2 patches of 12
    value = gradient_variance_loss(torch.from_numpy(fake)[None], torch.from_numpy(real)[None], patch_size=12)
    assert value.item() == pytest.approx(reference(fake, real, 12), rel=1e-10)


def test_zero_for_identical_images_and_positive_otherwise():
    torch.manual_seed(0)
    real = torch.rand(2, 3, 24, 24) * 2 - 1
    term = GradientVariance()
    assert term(LossInputs(cf=real, real=real, fake=real.clone())).item() == 0.0
    assert term(LossInputs(cf=real, real=real, fake=real + 0.3 * torch.randn_like(real))).item() > 0.0


def test_separate_frames_average_the_per_frame_losses_and_mix_blends_them():
    torch.manual_seed(1)
    fake, real = torch.randn(1, 3, 24, 24), torch.randn(1, 3, 24, 24)
    per_frame = [gradient_variance_loss(fake[:, i : i + 1], real[:, i : i + 1]) for i in range(3)]
    separate = gradient_variance_loss(fake, real, frames="separate")
    torch.testing.assert_close(separate, torch.stack(per_frame).mean())
    w = torch.tensor(GREY_WEIGHTS).view(1, 3, 1, 1)
    mixed = gradient_variance_loss((fake * w).sum(1, keepdim=True), (real * w).sum(1, keepdim=True))
    torch.testing.assert_close(gradient_variance_loss(fake, real, frames="mix"), mixed)


def test_decreases_under_optimisation():
    torch.manual_seed(2)
    real = torch.tanh(2 * torch.randn(1, 3, 36, 36))
    fake = torch.zeros(1, 3, 36, 36, requires_grad=True)
    with torch.no_grad():
        fake += 0.05 * torch.randn_like(fake)
    opt = torch.optim.Adam([fake], lr=0.05)
    start = gradient_variance_loss(fake, real).item()
    for _ in range(60):
        opt.zero_grad()
        loss = gradient_variance_loss(fake, real)
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * start


def test_bad_options_name_the_key():
    with pytest.raises(ValueError, match="loss.gradient_variance.frames"):
        GradientVariance(frames="rgb")
    with pytest.raises(ValueError, match="at least 12 x 12"):
        gradient_variance_loss(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
