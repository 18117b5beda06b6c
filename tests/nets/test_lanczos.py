"""The Lanczos-3 resampler (Fundus2Angio's 512 -> 256 step, reference_spec 3.3) against PIL."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import synthetic_pairs
from fundus2ffa.data.transforms import to_tensor_pm1
from fundus2ffa.nets.resample import lanczos_halve, lanczos_matrix_np, lanczos_resize


def pil_lanczos(image: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((width, height), Image.LANCZOS)).astype(np.float64)


def pil_two_pass(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """PIL's uint8 algorithm with our filter matrices: 22-bit fixed-point weights, a horizontal pass
    rounded and clipped to 8 bits, then the vertical pass (libImaging/Resample.c)."""
    bits = 22

    def fixed(matrix):
        scaled = matrix * (1 << bits)
        return np.where(scaled < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5)).astype(np.int64)

    def rounded(values):
        return np.clip((values + (1 << (bits - 1))) >> bits, 0, 255)

    rows, cols = fixed(lanczos_matrix_np(image.shape[0], height)), fixed(lanczos_matrix_np(image.shape[1], width))
    horizontal = rounded(image.astype(np.int64) @ cols.T)
    return rounded(rows @ horizontal).astype(np.float64)


@pytest.mark.parametrize("shape,size", [((64, 96), (32, 48)), ((57, 33), (20, 11)), ((40, 30), (40, 60))])
def test_filter_weights_are_pils(shape, size):
    # With PIL's 8-bit arithmetic on top, the matrices reproduce Image.LANCZOS exactly, including the
    # borders, odd sizes and upscaling: same kernel, same centres, same antialiasing, same normalisation.
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_array_equal(pil_two_pass(image, *size), pil_lanczos(image, *size))


def test_float_halving_matches_pil_on_retina_images():
    # The float path has no intermediate 8-bit rounding/clipping; PIL clips the ringing of its first pass
    # at the sharp field-of-view edge. Measured on these synthetic retinas: max 4.6 grey levels at that
    # edge, mean 0.19; bounds below leave a little room.
    errors = []
    for cf, ffa, _ in synthetic_pairs(2, 128, 160, seed=3):
        for image in (cf, ffa):
            reference = pil_lanczos(image, 64, 80)
            ours = (lanczos_halve(to_tensor_pm1(image)[None].double())[0].permute(1, 2, 0).numpy().squeeze() + 1) * 127.5
            errors.append(np.abs(ours - reference))
    assert max(e.max() for e in errors) <= 6.0
    assert np.mean([e.mean() for e in errors]) <= 0.3


def test_clamp_and_quantize():
    edge = -torch.ones(1, 1, 16, 16)
    edge[..., 8:] = 1.0  # a step: Lanczos overshoots on both sides
    raw = lanczos_halve(edge, clamp=None)
    assert raw.max() > 1.0 and raw.min() < -1.0
    clamped = lanczos_halve(edge)
    assert clamped.max() == 1.0 and clamped.min() == -1.0
    levels = (lanczos_halve(torch.rand(1, 3, 16, 16) * 2 - 1, quantize=True) + 1) * 127.5
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)


def test_constant_images_and_gradients():
    x = torch.full((2, 3, 24, 40), 0.3, requires_grad=True)
    y = lanczos_resize(x, (12, 20))
    torch.testing.assert_close(y, torch.full_like(y, 0.3))  # weights sum to one, also at the borders
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="even"):
        lanczos_halve(torch.zeros(1, 1, 7, 8))
