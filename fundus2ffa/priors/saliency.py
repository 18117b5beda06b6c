"""Local saliency map of Li et al. (MIDL 2020): ``I_sal = a * (Gaussian_7x7(I) - Median_51x51(I))``.

reference_spec section 2.2: the background ``I_b`` is a 51x51 median filter of the FFA (large against a
vessel's ~15 px, small against the ~120 px optic disc), the denoised image ``I_f`` a 7x7 Gaussian filter,
and bright structures (vessels, optic disc, leakage) come out positive. Section 2.4 makes the map a loss
(the MSE between the maps of the generated and the real FFA), so it must be differentiable with respect to
the generated image. Section 9: ``a = 1``, no clamp and no normalisation by default.

Everything here is a pure tensor function (CPU or GPU, any batch size) on ``N x C x H x W`` tensors whose
values lie in ``value_range``: ``(-1, 1)`` for model tensors (the default), ``(0, 1)`` or ``(0, 255)``
for others. Channels are filtered independently; an FFA is one channel. The map is returned in the units
of the input (on ``[-1, 1]`` tensors it is twice the map of the same image on ``[0, 1]``).

How the 51x51 median is computed (exactly, without materialising 2601 values per pixel)
-------------------------------------------------------------------------------------------
Intensities are quantised to ``levels`` (256: the 8-bit grey levels of ``value_range``) by rounding. For a
level ``L`` let ``C_L(p)`` be the number of pixels ``<= L`` in the window of ``p``; it is a box filter of the
indicator image ``[q <= L]``, computed with two cumulative sums and two differences (constant cost per
pixel whatever the window). ``C_L`` grows with ``L``, so the median level is the number of levels whose
count stays below the median rank ``(k*k + 1) / 2``: ``m(p) = #{L : C_L(p) < rank}``. Cost: O(levels * H * W)
cheap integer operations in level chunks (bounded memory, reused buffers), no sort, independent of the
window size. A coarse pass over every 16th level first bounds the median of every pixel, so only the
levels between the smallest and the largest bound are counted (a 51x51 background rarely spans all 256
levels). On this project's 2-core CPU a 512x512 median of an FFA frame takes about 75 ms (OpenCV's
uint8 medianBlur: 4 ms), its backward pass about 110 ms (experiments/li2020/README.md). Borders are replicated, as OpenCV's ``medianBlur``
(which documents BORDER_REPLICATE) and ``scipy.ndimage.median_filter(mode="nearest")`` do.

Accuracy: on 8-bit images (values ``value_range[0] + k * span / 255``, as every image read from a file) the
median is exact: it equals ``cv2.medianBlur`` bit for bit (tests/priors/test_saliency.py). On continuous
values (a generator's output) it is the exact median of the rounded values, which is the rounded exact
median because the median commutes with a monotone map: the error is at most half a level (span / 510).

Gradient (``median_gradient``)
------------------------------
``selected`` (default, reference_spec 2.4): the median of a window moves with the element it selects, so the
gradient of each output pixel is routed to the selected element. With quantised levels the selected element
is only known up to its level, so the gradient is shared equally among the ``n`` window elements in the
median's level (1/n each; for untied continuous values n = 1, the selected element alone). This is the
derivative of the mean of those tied elements, a straight-through estimate of the exact median's gradient
(both sum to 1 over the window: shifting every pixel by d shifts the median by d). Computing it costs one
more pass over the levels the median takes, like the forward pass.
``detach``: the background is a constant (no gradient through the median); the gradient flows through the
Gaussian term only. No backward median pass (about 60 % of the cost of ``selected`` per loss call), but the
background estimate then follows every change of the image unseen and optimising the loss stalls
(tests/losses/test_saliency_loss.py): an option, not the default.
"""

import math

import torch
import torch.nn.functional as F

from fundus2ffa.errors import ConfigError

MEDIAN_GRADIENTS = ("selected", "detach")
# Elements per chunk of levels in the counting passes. On a CPU 2^23 (16 MB per int16 buffer, ~26 levels of
# a 512 px image) measured fastest: smaller chunks pay the per-operation overhead many more times (2^20 was
# 2-5x slower at 512 px). A GPU takes more levels per call.
_CHUNK_ELEMENTS = {"cpu": 1 << 23}
_DEFAULT_CHUNK_ELEMENTS = 1 << 26
_INT16_MAX = 32767


# OpenCV's getGaussianKernel(k, sigma <= 0) returns these fixed taps for k <= 7 (not the sigma formula).
_OPENCV_SMALL_GAUSSIANS = {
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
}


def opencv_gaussian_sigma(kernel_size: int) -> float:
    """The sigma OpenCV derives when given 0 (used for kernels wider than 7): 0.3 * ((k - 1) / 2 - 1) + 0.8."""
    return 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8


def gaussian_kernel1d(kernel_size: int, sigma: float | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised 1D Gaussian taps; ``sigma`` None (or <= 0) gives OpenCV's ``getGaussianKernel(k, 0)``.

    For the 7x7 filter of Li et al. that is OpenCV's fixed table (1, 3.5, 7, 9, 7, 3.5, 1) / 32, close to
    sigma 1.4; any sigma > 0 gives the sampled Gaussian.
    """
    if (sigma is None or sigma <= 0) and kernel_size in _OPENCV_SMALL_GAUSSIANS:
        return torch.tensor(_OPENCV_SMALL_GAUSSIANS[kernel_size], device=device, dtype=dtype)
    if sigma is None or sigma <= 0:
        sigma = opencv_gaussian_sigma(kernel_size)
    x = torch.arange(kernel_size, device=device, dtype=torch.float64) - (kernel_size - 1) / 2
    taps = torch.exp(-(x**2) / (2 * sigma**2))
    return (taps / taps.sum()).to(dtype)


def gaussian_blur(x: torch.Tensor, kernel_size: int = 7, sigma: float | None = None) -> torch.Tensor:
    """Separable Gaussian filter of ``N x C x H x W`` with reflect-101 borders (OpenCV's default).

    Li et al.'s "7x7 Gaussian filter" names no sigma; without one this is ``cv2.GaussianBlur(x, (7, 7), 0)``.
    """
    _check_kernel(kernel_size, "gaussian_size")
    n, c, h, w = x.shape
    r = kernel_size // 2
    if r == 0:
        return x
    taps = gaussian_kernel1d(kernel_size, sigma, x.device, x.dtype)
    y = F.pad(x.reshape(n * c, 1, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, taps.view(1, 1, 1, -1))
    y = F.conv2d(y, taps.view(1, 1, -1, 1))
    return y.view(n, c, h, w)


def median_blur(
    x: torch.Tensor,
    kernel_size: int = 51,
    value_range: tuple[float, float] = (-1.0, 1.0),
    levels: int = 256,
    gradient: str = "selected",
) -> torch.Tensor:
    """``kernel_size`` x ``kernel_size`` median filter of ``N x C x H x W`` (replicated borders).

    Exact on images quantised to ``levels`` steps of ``value_range`` (8-bit images with the defaults), at
    most half a step off otherwise. ``gradient``: selected (routed to the selected element, ties in its
    level shared) | detach (no gradient). See the module docstring for the method and its cost.
    """
    _check_kernel(kernel_size, "median_size")
    if gradient not in MEDIAN_GRADIENTS:
        raise ConfigError(f"median_gradient must be one of {'|'.join(MEDIAN_GRADIENTS)}, got {gradient!r}")
    if levels < 2:
        raise ConfigError(f"saliency levels must be at least 2, got {levels}")
    low, high = (float(v) for v in value_range)
    if not high > low:
        raise ConfigError(f"value_range must be (low, high) with high > low, got {tuple(value_range)}")
    n, c, h, w = x.shape
    r = kernel_size // 2
    flat = x.reshape(n * c, 1, h, w)
    padded = F.pad(flat, (r, r, r, r), mode="replicate") if r else flat
    if gradient == "detach" or not torch.is_grad_enabled() or not padded.requires_grad:
        with torch.no_grad():
            out = _WindowMedian.apply(padded.detach(), kernel_size, levels, low, high)
    else:
        out = _WindowMedian.apply(padded, kernel_size, levels, low, high)
    return out.view(n, c, h, w)


def saliency_map(
    x: torch.Tensor,
    contrast: float = 1.0,
    median_size: int = 51,
    gaussian_size: int = 7,
    gaussian_sigma: float | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0),
    levels: int = 256,
    clamp_negative: bool = False,
    normalise: bool = False,
    median_gradient: str = "selected",
) -> torch.Tensor:
    """Li et al.'s local saliency ``contrast * (Gaussian(x) - Median(x))`` of ``N x C x H x W`` in ``value_range``.

    Args:
        contrast: the factor ``a`` (the paper gives no value; 1 by default, reference_spec 9).
        median_size, gaussian_size, gaussian_sigma: the 51x51 background and 7x7 denoising filters
            (sigma None: OpenCV's kernel for sigma 0, i.e. ``cv2.GaussianBlur(x, (7, 7), 0)``).
        levels: quantisation of the median (256 = 8-bit, exact on 8-bit images).
        clamp_negative: keep only the bright side (structures above their background); off in the paper.
        normalise: divide each image's map by its largest absolute value (maps in [-1, 1]); off in the paper.
        median_gradient: selected | detach (module docstring).
    """
    x = x.float() if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16) else x
    sal = gaussian_blur(x, gaussian_size, gaussian_sigma) - median_blur(
        x, median_size, value_range, levels, median_gradient
    )
    if contrast != 1.0:
        sal = sal * contrast
    if clamp_negative:
        sal = sal.clamp_min(0.0)
    if normalise:
        scale = sal.detach().abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
        sal = sal / scale
    return sal


# --------------------------------------------------------------------------------------------- internals
def _check_kernel(kernel_size: int, key: str) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"{key} must be a positive odd window size, got {kernel_size}")


def _chunk(device: torch.device, plane: int) -> int:
    budget = _CHUNK_ELEMENTS.get(device.type, _DEFAULT_CHUNK_ELEMENTS)
    return max(1, budget // max(plane, 1))


class _Workspace:
    """Flat buffers reused across the chunks of one call: large allocations are not free on a CPU."""

    def __init__(self, device: torch.device):
        self.device, self.buffers = device, {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        size = math.prod(shape)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.numel() < size:
            buffer = self.buffers[name] = torch.empty(size, dtype=dtype, device=self.device)
        return buffer[:size].view(shape)


def _box_valid(x: torch.Tensor, k: int, dtype: torch.dtype, work: _Workspace) -> torch.Tensor:
    """Sum over every k x k window of ``x`` whose first row and column are zeros (a sentinel border).

    ``... x (1+H) x (1+W)`` -> ``... x (H-k+1) x (W-k+1)``: with the leading zeros each window sum is one
    difference of running sums, without a copy for the first window. Two workspace buffers hold the
    running sums; the result is a view of one of them (valid until the next call).
    """
    *lead, rows, cols = x.shape
    c = torch.cumsum(x, -1, dtype=dtype, out=work.get("box_a", (*lead, rows, cols), dtype))
    h = torch.sub(c[..., k:], c[..., :-k], out=work.get("box_b", (*lead, rows, cols - k), dtype))
    c = torch.cumsum(h, -2, dtype=dtype, out=work.get("box_a", (*lead, rows, cols - k), dtype))
    return torch.sub(c[..., k:, :], c[..., :-k, :], out=work.get("box_b", (*lead, rows - k, cols - k), dtype))


def _row_blocks(rows_out: int, k: int, int16_ok: bool) -> list[tuple[int, int]]:
    """Output-row blocks whose running column sums (at most k * (rows + k)) fit int16 on a CPU."""
    if not int16_ok:
        return [(0, rows_out)]
    step = max(1, _INT16_MAX // k - k)
    return [(start, min(start + step, rows_out)) for start in range(0, rows_out, step)]


def _median_levels(q: torch.Tensor, k: int, track_ties: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Median level of every k x k window of the replicate-padded level image ``q`` (``B x Hp x Wp``).

    Returns ``(m, ties)``: ``m`` ``B x H x W`` int64 levels; ``ties`` the number of window elements at level
    ``m`` (float), or None unless ``track_ties``. On a CPU the rows are processed in blocks small enough
    for int16 running sums (half the memory traffic of int32); elsewhere in one block with int32.
    """
    b, hp, wp = q.shape
    int16_ok = q.device.type == "cpu" and wp + 1 <= _INT16_MAX and k * (k + 1) <= _INT16_MAX
    dtype = torch.int16 if int16_ok else torch.int32
    blocks = _row_blocks(hp - k + 1, k, int16_ok)
    parts = [_median_block(q[:, r0 : r1 + k - 1], k, track_ties, dtype) for r0, r1 in blocks]
    if len(parts) == 1:
        return parts[0]
    m = torch.cat([p[0] for p in parts], 1)
    return m, (torch.cat([p[1] for p in parts], 1) if track_ties else None)


def _median_block(
    q: torch.Tensor, k: int, track_ties: bool, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`_median_levels` of one block, counting in ``dtype``."""
    device = q.device
    b, hp, wp = q.shape
    h, w = hp - k + 1, wp - k + 1
    rank = (k * k + 1) // 2
    qmin, qmax = int(q.min()), int(q.max())
    if qmin == qmax:
        m = torch.full((b, h, w), qmin, dtype=torch.int64, device=device)
        return m, (torch.full((b, h, w), float(k * k), device=device) if track_ties else None)
    # Leading sentinel row and column above every level: their indicator is 0 (see _box_valid).
    sentinel = torch.iinfo(q.dtype).max
    qs = F.pad(q, (1, 0, 1, 0), value=sentinel).unsqueeze(0)
    chunk = _chunk(device, b * (hp + 1) * (wp + 1))
    work = _Workspace(device)

    def counts(thresholds: torch.Tensor) -> torch.Tensor:  # T x B x H x W window counts C_L
        indicator = work.get("indicator", (len(thresholds), b, hp + 1, wp + 1), dtype)
        torch.le(qs, thresholds.view(-1, 1, 1, 1), out=indicator)
        return _box_valid(indicator, k, dtype, work)

    def below(c: torch.Tensor) -> torch.Tensor:  # number of levels of the chunk whose count is under the rank
        flags = torch.lt(c, rank, out=work.get("below", c.shape, dtype))
        return flags.sum(0, dtype=dtype)

    # Coarse pass: every ``step``-th level bounds each pixel's median to one coarse bin.
    step = max(2, math.isqrt(qmax - qmin))
    coarse = torch.arange(qmin + step - 1, qmax, step, device=device, dtype=q.dtype)
    lo_level, hi_level = qmin, qmax
    if len(coarse):
        bins = torch.zeros((b, h, w), dtype=torch.int32, device=device)
        for s in range(0, len(coarse), chunk):
            bins += below(counts(coarse[s : s + chunk]))
        b_min, b_max = int(bins.min()), int(bins.max())
        lo_level = int(coarse[b_min - 1]) + 1 if b_min > 0 else qmin
        hi_level = int(coarse[b_max]) if b_max < len(coarse) else qmax
    # Fine pass over [start, end]: below ``start`` every count is under the rank for every pixel, from
    # ``end`` on none is. With ties tracked the pass also sees the count just below the lowest median
    # (start = lo_level - 1) and at the highest one (end = hi_level).
    start = lo_level - 1 if (track_ties and lo_level > qmin) else lo_level
    end = hi_level if track_ties else hi_level - 1
    m = torch.full((b, h, w), start, dtype=torch.int32, device=device)
    lo_count = hi_count = carry = None
    if track_ties:  # counts at the levels m - 1 and m, read off each chunk by gathering (no T-sized pass)
        lo_count = torch.zeros((b, h, w), dtype=torch.int32, device=device)
        hi_count = torch.full((b, h, w), k * k, dtype=torch.int32, device=device)
        carry = torch.zeros((b, h, w), dtype=torch.int32, device=device)  # count just below the chunk
    fine = torch.arange(start, end + 1, device=device, dtype=q.dtype)
    for s in range(0, len(fine), chunk):
        c = counts(fine[s : s + chunk])
        below_here = below(c).to(torch.int32)
        if track_ties:
            # the median lies in this chunk where every earlier level was below the rank and not all here are
            here = (m == start + s) & (below_here < len(c))
            at_m = c.gather(0, below_here.clamp(max=len(c) - 1).long().unsqueeze(0))[0].to(torch.int32)
            before_m = c.gather(0, (below_here - 1).clamp(min=0).long().unsqueeze(0))[0].to(torch.int32)
            before_m = torch.where(below_here > 0, before_m, carry)
            hi_count = torch.where(here, at_m, hi_count)
            lo_count = torch.where(here, before_m, lo_count)
            carry = c[-1].to(torch.int32)
        m += below_here
    ties = (hi_count - lo_count).float() if track_ties else None
    return m.long(), ties


def _quantise(x: torch.Tensor, levels: int, low: float, high: float) -> torch.Tensor:
    """Level indices 0..levels-1 of ``x`` (rounded; clamped to ``value_range``), int16 or int32."""
    scaled = (x.detach().float() - low) * ((levels - 1) / (high - low))
    q = torch.round(scaled).clamp_(0, levels - 1)
    return q.to(torch.int16 if levels < _INT16_MAX else torch.int32)


class _WindowMedian(torch.autograd.Function):
    """Median of every k x k window of a padded ``B x 1 x Hp x Wp`` tensor, gradient to the selected element."""

    @staticmethod
    def forward(ctx, padded, k, levels, low, high):
        q = _quantise(padded[:, 0], levels, low, high)
        track = ctx.needs_input_grad[0]
        m, ties = _median_levels(q, k, track_ties=track)
        if track:
            ctx.save_for_backward(q, m, ties)
            ctx.k = k
        scale = (high - low) / (levels - 1)
        return (m.to(padded.dtype) * scale + low).unsqueeze(1)

    @staticmethod
    def backward(ctx, grad):
        q, m, ties = ctx.saved_tensors
        k = ctx.k
        b, hp, wp = q.shape
        h, w = m.shape[-2:]
        device = q.device
        weights = grad[:, 0].float() / ties  # each output's gradient, shared among its tied elements
        grad_in = torch.zeros(q.shape, dtype=torch.float32, device=device)
        m_min, m_max = int(m.min()), int(m.max())
        chunk = min(m_max - m_min + 1, _chunk(device, b * (hp + k) * (wp + k)))
        # Chunk and slot of every output's median level and of every input's own level.
        out_level = m - m_min
        out_chunk, out_slot = (out_level // chunk).to(torch.int16), (out_level % chunk).unsqueeze(0)
        in_level = q.to(torch.int64) - m_min
        in_chunk, in_slot = (in_level // chunk).to(torch.int16), (in_level % chunk).unsqueeze(0)
        # Outputs routed to their median level's slot, zero-padded for the adjoint box filter (leading
        # zero row and column as _box_valid expects). Every output only ever writes its own slot (its
        # weight in its chunk, 0 in the others), so the buffer never needs clearing.
        routed = torch.zeros((chunk, b, h + 2 * k - 1, w + 2 * k - 1), dtype=torch.float32, device=device)
        inner = routed[:, :, k : k + h, k : k + w]
        work = _Workspace(device)
        for index, first in enumerate(range(m_min, m_max + 1, chunk)):
            t = min(chunk, m_max + 1 - first)
            inner.scatter_(0, out_slot, torch.where(out_chunk == index, weights, 0.0).unsqueeze(0))
            # Adjoint of the valid box filter: every input element collects from each window holding
            # it, then keeps what was routed to its own level.
            spread = _box_valid(routed[:t], k, torch.float32, work)  # t x B x Hp x Wp
            slot = in_slot if t == chunk else in_slot.clamp(max=t - 1)
            grad_in += torch.where(in_chunk == index, spread.gather(0, slot)[0], 0.0)
        return grad_in.unsqueeze(1).to(grad.dtype), None, None, None, None
