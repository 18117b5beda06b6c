"""Lanczos-3 resampling of image tensors (Fundus2Angio's 512 -> 256 pyramid step; reference_spec 3.3 and
3.6), with and without antialiasing.

Output sample ``i`` of a resize from ``n`` to ``m`` samples sits at input coordinate
``c = (i + 0.5) * n / m``; input pixel ``j`` gets the weight ``L3(((j + 0.5) - c) / s)`` for
``|(j + 0.5) - c| < 3 s``, and the weights are normalised to sum to one over the taps that fall inside the
image (no padding at the borders). The two variants differ only in the kernel scale ``s``:

- ``antialias=False`` (``s = 1``): what the official Fundus2Angio loader computes,
  ``tf.image.resize(X, shape, method=LANCZOS3)`` on [-1, 1] floats with TensorFlow's default
  ``antialias=False`` (``scale_and_translate`` with an unscaled kernel). Halving is a **6-tap** kernel at
  stride 2 (taps at distances 0.5, 1.5, 2.5 on each side).
- ``antialias=True`` (``s = max(n / m, 1)``: the kernel is stretched when shrinking): PIL's
  ``Image.LANCZOS`` (the SZU reproduction's path, on uint8 before normalising) and
  ``tf.image.resize(..., antialias=True)``. Halving is a 12-tap low-pass kernel.

On real 512 px angiograms the two halvings differ by 4.3 grey levels on average and up to 57 at vessel
edges (``python experiments/kamran2020/lanczos_variants.py``: 20 arterial-phase frames of the shared
ffa_frames set), so which one a model was trained with matters; Fundus2Angio's configs default to the
code's (``model.lanczos_antialias: false``).

The filter is a precomputed ``m x n`` matrix per axis (cached per size, variant, device and dtype),
applied as two matrix products: exact at the borders for any size, differentiable, on any device. PIL
rounds to 8 bits after each of its two passes; this float version does not, so on uint8 input the two
agree to within a grey level or two (tests/nets/test_lanczos.py measures it). Lanczos rings: outputs are
clamped to ``clamp`` (the [-1, 1] image range by default here, as the spec asks); TensorFlow does not clip
the float result, so Fundus2Angio's model passes ``clamp=None`` unless ``model.lanczos_clamp``.
"""

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

LANCZOS_SUPPORT = 3.0


def lanczos3(x: np.ndarray) -> np.ndarray:
    """The Lanczos-3 kernel ``sinc(x) sinc(x / 3)`` on ``[-3, 3)``, 0 elsewhere."""
    x = np.asarray(x, dtype=np.float64)
    inside = (x >= -LANCZOS_SUPPORT) & (x < LANCZOS_SUPPORT)
    return np.where(inside, np.sinc(x) * np.sinc(x / LANCZOS_SUPPORT), 0.0)


@lru_cache(maxsize=64)
def lanczos_matrix_np(in_size: int, out_size: int, antialias: bool = False) -> np.ndarray:
    """``out_size x in_size`` float64 matrix of the Lanczos-3 resize of one axis (module docstring)."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"Lanczos resize needs positive sizes, got {in_size} -> {out_size}")
    scale = in_size / out_size
    stretch = max(scale, 1.0) if antialias else 1.0  # antialias: widen the kernel when shrinking
    support = LANCZOS_SUPPORT * stretch
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        center = (i + 0.5) * scale
        first = max(math.floor(center - support + 0.5), 0)
        last = min(math.floor(center + support + 0.5), in_size)
        taps = np.arange(first, last)
        weights = lanczos3((taps + 0.5 - center) / stretch)
        matrix[i, first:last] = weights / weights.sum()
    return matrix


_TORCH_CACHE: dict[tuple, torch.Tensor] = {}


def lanczos_matrix(in_size: int, out_size: int, device=None, dtype=torch.float32, antialias: bool = False) -> torch.Tensor:
    """The resize matrix as a tensor, cached per (sizes, variant, device, dtype)."""
    key = (in_size, out_size, bool(antialias), str(device), dtype)
    matrix = _TORCH_CACHE.get(key)
    if matrix is None:
        matrix = torch.from_numpy(lanczos_matrix_np(in_size, out_size, bool(antialias))).to(device=device, dtype=dtype)
        _TORCH_CACHE[key] = matrix
    return matrix


def lanczos_resize(
    x: torch.Tensor,
    size: tuple[int, int],
    clamp: tuple[float, float] | None = (-1.0, 1.0),
    quantize: bool = False,
    antialias: bool = False,
) -> torch.Tensor:
    """Resize the last two dimensions of ``x`` (..., H, W) to ``size`` = (height, width) with Lanczos-3.

    antialias: false = TensorFlow's default (6-tap halving, the Fundus2Angio code) | true = stretched
        kernel when shrinking (PIL, 12-tap halving); see the module docstring.
    clamp: clip the result to this range (Lanczos overshoots at edges); None keeps the overshoot.
    quantize: round the result to the 256 levels of an 8-bit image in [-1, 1], ``(k / 127.5) - 1``
        (what the PIL-uint8 path of the SZU reproduction produces before normalising); not differentiable.
    """
    height, width = x.shape[-2:]
    out_h, out_w = int(size[0]), int(size[1])
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    y = x.to(dtype)
    if (out_h, out_w) != (height, width):
        rows = lanczos_matrix(height, out_h, y.device, dtype, antialias)
        cols = lanczos_matrix(width, out_w, y.device, dtype, antialias)
        y = rows @ y @ cols.transpose(0, 1)
    if clamp is not None:
        y = y.clamp(*clamp)
    if quantize:
        y = torch.round((y + 1.0) * 127.5) / 127.5 - 1.0
    return y.to(x.dtype)


def lanczos_halve(
    x: torch.Tensor, clamp: tuple[float, float] | None = (-1.0, 1.0), quantize: bool = False, antialias: bool = False
) -> torch.Tensor:
    """Half the height and width of ``x`` with Lanczos-3 (the 512 -> 256 step): 6 taps (TensorFlow's
    default, the code) or, with ``antialias``, 12 (PIL)."""
    height, width = x.shape[-2:]
    if height % 2 or width % 2:
        raise ValueError(f"lanczos_halve needs even height and width, got {height}x{width}")
    return lanczos_resize(x, (height // 2, width // 2), clamp=clamp, quantize=quantize, antialias=antialias)


def lanczos_halve_conv(
    x: torch.Tensor, clamp: tuple[float, float] | None = (-1.0, 1.0), quantize: bool = False, antialias: bool = False
) -> torch.Tensor:
    """:func:`lanczos_halve` as a stride-2 convolution, for graphs with dynamic height and width (ONNX,
    TorchScript export): the matrices of :func:`lanczos_resize` are built per size in NumPy and would be
    frozen into the graph. Output ``i`` of an exact halving sits at input coordinate ``2i + 1`` and reads
    taps ``t = 2i + k``, ``k = -5 .. 6``, with weights ``L3((k - 0.5) / s)``: ``s = 2`` with ``antialias``
    (12 taps, PIL) and ``s = 1`` without (TensorFlow's default: only ``k = -2 .. 3`` are non-zero, 6 taps).
    The border renormalisation over the taps inside the image is a division by the same convolution of ones
    (zero-padded). Equal to the matrix form of either variant up to float rounding (tests/nets/test_lanczos.py)."""
    height, width = x.shape[-2:]
    if height % 2 or width % 2:
        raise ValueError(f"lanczos_halve_conv needs even height and width, got {height}x{width}")
    stretch = 2.0 if antialias else 1.0
    taps = torch.tensor(lanczos3((np.arange(-5, 7) - 0.5) / stretch), dtype=x.dtype, device=x.device)
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    for axis in (2, 3):
        kernel = taps.view(1, 1, 12, 1) if axis == 2 else taps.view(1, 1, 1, 12)
        pad = (0, 0, 5, 6) if axis == 2 else (5, 6, 0, 0)
        ones = torch.ones_like(y[:1, :1, :, :1] if axis == 2 else y[:1, :1, :1, :])
        stride = (2, 1) if axis == 2 else (1, 2)
        y = F.conv2d(F.pad(y, pad), kernel, stride=stride) / F.conv2d(F.pad(ones, pad), kernel, stride=stride)
    y = y.reshape(n, c, y.shape[-2], y.shape[-1])
    if clamp is not None:
        y = y.clamp(*clamp)
    if quantize:
        y = torch.round((y + 1.0) * 127.5) / 127.5 - 1.0
    return y
