"""The Lanczos-3 resampler (Fundus2Angio's 512 -> 256 step, reference_spec 3.3): the antialiased variant
against PIL, the default (TensorFlow's antialias=False, the official code) against its kernel formula."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import compose_run, synthetic_pairs
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

    rows = fixed(lanczos_matrix_np(image.shape[0], height, antialias=True))
    cols = fixed(lanczos_matrix_np(image.shape[1], width, antialias=True))
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
            ours = (lanczos_halve(to_tensor_pm1(image)[None].double(), antialias=True)[0].permute(1, 2, 0).numpy().squeeze() + 1) * 127.5
            errors.append(np.abs(ours - reference))
    assert max(e.max() for e in errors) <= 6.0
    assert np.mean([e.mean() for e in errors]) <= 0.3


def tf_lanczos3(x: float) -> float:
    """TensorFlow's LanczosKernelFunc(radius 3): 3 sin(pi x) sin(pi x / 3) / (pi x)^2, 1 at 0, 0 beyond 3."""
    x = abs(x)
    if x > 3.0:
        return 0.0
    if x <= 1e-3:
        return 1.0
    return 3.0 * math.sin(math.pi * x) * math.sin(math.pi * x / 3.0) / (math.pi * math.pi * x * x)


def tf_resize_reference(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """tf.image.resize(method=LANCZOS3, antialias=False) of a 2-D float image, written from TensorFlow's
    scale_and_translate span rule: for output x, sample_f = (x + 0.5) / scale; taps from
    ceil(sample_f - 3 - 0.5) to floor(sample_f + 3 - 0.5), clamped to the image, weights kernel(j + 0.5 -
    sample_f) normalised by their sum; rows then columns."""

    def one_axis(values: np.ndarray, out_size: int) -> np.ndarray:
        in_size = values.shape[0]
        scale = out_size / in_size
        out = np.zeros((out_size,) + values.shape[1:])
        for x in range(out_size):
            sample = (x + 0.5) / scale
            start = min(max(math.ceil(sample - 3.0 - 0.5), 0), in_size - 1)
            end = min(max(math.floor(sample + 3.0 - 0.5), 0), in_size - 1) + 1
            weights = [tf_lanczos3(j + 0.5 - sample) for j in range(start, end)]
            total = sum(weights)
            out[x] = sum(w / total * values[j] for w, j in zip(weights, range(start, end)))
        return out

    return one_axis(one_axis(image.astype(np.float64), height).T, width).T


def test_default_halving_is_tensorflows_6_tap_kernel():
    # Interior halving weights by hand: output i sits at 2i + 1, taps at distances 0.5, 1.5, 2.5 where
    # L3 = 6/pi^2, -4/(3 pi^2), 0.24/pi^2, i.e. 450 : -100 : 18 (x 75/pi^2), normalised by 2 x 368 = 736.
    matrix = lanczos_matrix_np(32, 16)  # antialias=False is the default (the official code)
    expected = np.array([18, -100, 450, 450, -100, 18]) / 736.0
    for i in range(2, 14):
        np.testing.assert_allclose(matrix[i, 2 * i - 2: 2 * i + 4], expected, rtol=0, atol=1e-12)
        assert np.count_nonzero(matrix[i]) == 6
    # at the border the taps outside the image are dropped and the rest renormalised: 450, 450, -100, 18
    np.testing.assert_allclose(matrix[0, :4], np.array([450, 450, -100, 18]) / 818.0, rtol=0, atol=1e-12)
    assert np.count_nonzero(lanczos_matrix_np(32, 16, antialias=True)[8]) == 12  # PIL's stretched kernel


@pytest.mark.parametrize("shape,size", [((64, 96), (32, 48)), ((57, 33), (20, 11)), ((40, 30), (40, 60))])
def test_default_resize_matches_tensorflows_scale_and_translate_rule(shape, size):
    image = np.random.default_rng(1).uniform(-1, 1, shape)
    ours = lanczos_resize(torch.from_numpy(image)[None, None], size, clamp=None)[0, 0].numpy()
    np.testing.assert_allclose(ours, tf_resize_reference(image, *size), rtol=0, atol=1e-10)


def test_the_two_kernels_differ_on_a_vessel_like_image_and_configs_pick_the_codes():
    # a thin bright line (a vessel) on a dark background: the 6-tap kernel keeps more of its contrast
    image = -torch.ones(1, 1, 64, 64, dtype=torch.float64)
    image[..., 30:32, :] = 1.0
    tf_default, pil = lanczos_halve(image, clamp=None), lanczos_halve(image, clamp=None, antialias=True)
    assert tf_default.max() > pil.max() + 0.1
    cfg = compose_run(["model=fundus2angio"])
    assert cfg.model.lanczos_antialias is False
    assert cfg.generator.lanczos_antialias is False and cfg.discriminator.lanczos_antialias is False
    assert compose_run(["model=fundus2angio", "model.lanczos_antialias=true"]).discriminator.lanczos_antialias is True


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


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("size", [(16, 16), (10, 22)])
def test_halve_conv_matches_matrix_form(antialias, size):
    """The export's convolution halving equals the matrix one, for both variants (6 and 12 taps)."""
    from fundus2ffa.nets.resample import lanczos_halve_conv

    x = torch.rand(2, 3, *size, dtype=torch.float64) * 2 - 1
    for clamp in (None, (-1.0, 1.0)):
        torch.testing.assert_close(
            lanczos_halve_conv(x, clamp=clamp, antialias=antialias), lanczos_halve(x, clamp=clamp, antialias=antialias)
        )
    assert not torch.allclose(lanczos_halve_conv(x, clamp=None, antialias=antialias), lanczos_halve(x, clamp=None, antialias=not antialias))
