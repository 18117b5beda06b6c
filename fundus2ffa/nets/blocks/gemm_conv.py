"""A 3 x 3 convolution computed as one matrix product (im2col), for the residual blocks of the pix2pixHD
generator (issue 24, a lever found by the profiler).

Why: at 256 px the global generator's nine residual blocks run 1024 -> 1024 channel convolutions on a
16 x 16 map, half of a training iteration on a CPU. There oneDNN's direct convolution reaches about 73
GFLOP/s on one core where the same arithmetic as one GEMM (``unfold`` to 9216 x 256 columns, then
weight 1024 x 9216 times columns) reaches about 95: measured 65.7 -> 53.7 ms forward and 227 -> 210 ms
forward + backward per convolution on this EPYC (one thread). On large maps (64 x 64 and up) the
direct convolution wins (43 -> 83 ms at 256 channels, 66 px), so this is used only where it is asked
for: ``generator.block_conv: gemm`` (default ``native``, nn.Conv2d).

The maths is that of ``nn.Conv2d`` (stride 1, no padding: the blocks reflection-pad first) up to the
order of the float sums (1e-6 relative; tests/models/test_step_in_backward.py compares outputs and all three
gradients). Memory: the backward recomputes the columns from the saved input instead of keeping them
(the input is what nn.Conv2d keeps too), so the activations kept are the same; the columns live in a
reused workspace (nets/blocks/workspace.py: two buffers of the largest columns seen, per device and dtype). Parameters are
``weight`` and ``bias`` as in nn.Conv2d: checkpoints load into either. Any device and dtype (the
backward casts to the gradient's dtype, so bf16 autocast works).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fundus2ffa.nets.blocks.matmul import matmul, mm
from fundus2ffa.nets.blocks.workspace import workspace


def _columns(x: torch.Tensor, k: int) -> torch.Tensor:
    """``F.unfold(x, k)`` (N x C k k x L, channel-major as ``weight.view(O, -1)``) written into the workspace."""
    n, c, height, width = x.shape
    out_h, out_w = height - k + 1, width - k + 1
    s_n, s_c, s_h, s_w = x.stride()
    columns = workspace("columns", (n, c, k, k, out_h, out_w), x)
    columns.copy_(x.as_strided((n, c, k, k, out_h, out_w), (s_n, s_c, s_h, s_w, s_h, s_w)))
    return columns.view(n, c * k * k, out_h * out_w)


def weight_gradient(x: torch.Tensor, grad: torch.Tensor, weight_shape: torch.Size) -> torch.Tensor:
    """The weight gradient of a stride-1 unpadded convolution, O x C x k x k in ``grad``'s dtype: the output
    gradient (O x L per image) times the input's columns (L x C k k), images added into one buffer."""
    n, out_channels = grad.shape[:2]
    grad = grad.reshape(n, out_channels, -1)
    columns = _columns(x, weight_shape[-1])
    grad_w = mm(grad[0], columns[0].t())
    for i in range(1, n):
        grad_w += mm(grad[i], columns[i].t())
    return grad_w.view(weight_shape)


class _Im2colConv(torch.autograd.Function):
    """out = W (O x CKK) @ columns(x) (+ b), backward by the same two products; columns recomputed."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        n, _, height, width = x.shape
        out_channels, _, k, _ = weight.shape
        columns = _columns(x, k)
        out = matmul(weight.reshape(out_channels, -1).to(columns.dtype), columns)
        if bias is not None:
            out = out + bias.to(out.dtype).view(1, out_channels, 1)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return out.view(n, out_channels, height - k + 1, width - k + 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        n, _, height, width = x.shape
        out_channels, _, k, _ = weight.shape
        grad = grad.reshape(n, out_channels, -1)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[1]:
            grad_w = weight_gradient(x.to(grad.dtype), grad, weight.shape).to(weight.dtype)
        if ctx.needs_input_grad[0]:
            weight_t = weight.reshape(out_channels, -1).t().to(grad.dtype)
            columns_grad = workspace("columns_grad", (n, weight_t.shape[0], grad.shape[-1]), grad)
            for i in range(n):
                mm(weight_t, grad[i], out=columns_grad[i])
            grad_x = F.fold(columns_grad, (height, width), k).to(x.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2)).to(weight.dtype)
        return grad_x, grad_w, grad_b


class GemmConv2d(nn.Conv2d):
    """``nn.Conv2d`` (square kernel, stride 1, no padding, no dilation, one group) computed by
    :class:`_Im2colConv` (module notes); the same parameters and state-dict keys as nn.Conv2d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Im2colConv.apply(x, self.weight, self.bias)
