"""A k x k convolution to few output channels computed as one matrix product to the k * k tap maps and
their shifted sum, for the generators' 7 x 7 output convolution (issue 24, ``generator.output_conv: taps``).

Why: pix2pixHD's output layer maps 64 channels to 1 (CF -> FFA) or 3 with a 7 x 7 kernel at full
resolution. oneDNN's kernel for that shape costs per pixel, not per FLOP: at 256 px it took 196 ms
forward + backward at 6 GFLOP/s, and a 64 -> 8 one the same time (experiments/perf/layer_speeds.py),
about 3 % of a pix2pixHD iteration. Here the weight, read as (O k k) x C, multiplies the input's C x (H
W) pixels in one matrix product (the tap maps: what each of the k * k taps contributes at each pixel),
and the output is the sum of the k * k tap maps, each shifted by its tap's offset. The backward is the
adjoint: the output gradient placed at each tap's offset gives the tap maps' gradient, and two matrix
products give the input and weight gradients. Every multiplication is in a matrix product at matmul
speed; the shifted additions are O k k maps of the output's size.

The maths is that of ``nn.Conv2d`` (stride 1, no padding: the generators reflection-pad first), summed
in another order (1e-6 relative; tests/models/test_step_in_backward.py compares outputs and all three
gradients). Memory: the tap maps (O k k maps of the input's size: 13 MB at 256 px for one output channel)
are transient in forward and backward; the backward recomputes nothing from them and keeps only the input,
as nn.Conv2d does. Parameters are ``weight`` and ``bias`` as in nn.Conv2d: checkpoints load into either.
Any device and dtype (under autocast it computes in autocast's dtype, as nn.Conv2d does).
"""

from __future__ import annotations

import torch
from torch import nn

from fundus2ffa.nets.blocks.matmul import matmul, mm


def _tap_weight(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """O x C x k x k -> (O k k) x C: row (o, i, j) holds tap (i, j) of output channel o."""
    out_channels, in_channels, k, _ = weight.shape
    return weight.permute(0, 2, 3, 1).reshape(out_channels * k * k, in_channels).to(dtype)


class _TapConv(torch.autograd.Function):
    """y[o, h, w] = sum over taps (i, j) of (W_oij . x)[h + i, w + j] (+ b_o)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        n, in_channels, height, width = x.shape
        out_channels, _, k, _ = weight.shape
        out_h, out_w = height - k + 1, width - k + 1
        with torch.autocast(device, enabled=False):
            maps = matmul(_tap_weight(weight, dtype), x.to(dtype).reshape(n, in_channels, height * width))
            maps = maps.view(n, out_channels, k, k, height, width)
            y = maps[:, :, 0, 0, :out_h, :out_w].clone()
            for i in range(k):
                for j in range(k):
                    if i or j:
                        y += maps[:, :, i, j, i:i + out_h, j:j + out_w]
            if bias is not None:
                y += bias.to(dtype).view(1, out_channels, 1, 1)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        n, in_channels, height, width = x.shape
        out_channels, _, k, _ = weight.shape
        out_h, out_w = grad.shape[-2:]
        grad_maps = grad.new_zeros(n, out_channels, k, k, height, width)
        for i in range(k):
            for j in range(k):
                grad_maps[:, :, i, j, i:i + out_h, j:j + out_w] = grad
        grad_maps = grad_maps.view(n, out_channels * k * k, height * width)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = matmul(_tap_weight(weight, grad.dtype).t(), grad_maps).view(x.shape).to(x.dtype)
        if ctx.needs_input_grad[1]:
            pixels = x.to(grad.dtype).reshape(n, in_channels, height * width)
            grad_w = mm(grad_maps[0], pixels[0].t())
            for b in range(1, n):
                grad_w += mm(grad_maps[b], pixels[b].t())
            grad_w = grad_w.view(out_channels, k, k, in_channels).permute(0, 3, 1, 2).contiguous().to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3)).to(weight.dtype)
        return grad_x, grad_w, grad_b


class TapConv2d(nn.Conv2d):
    """``nn.Conv2d`` (square kernel, stride 1, no padding, no dilation, one group) computed by
    :class:`_TapConv` (module notes); the same parameters and state-dict keys as nn.Conv2d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _TapConv.apply(x, self.weight, self.bias)


OUTPUT_CONVS = {"native": nn.Conv2d, "taps": TapConv2d}
