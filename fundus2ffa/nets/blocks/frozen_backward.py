"""Layers of a frozen network (the perceptual VGG19) that keep for backward only what the *input*
gradient needs (issue 24: peak memory at equal maths).

A frozen network's weights get no gradient, so nothing needs the activations a weight gradient would
read. What autograd keeps by default is more than the input gradient needs:

- a convolution keeps its input (for the weight gradient); the input gradient needs only the weight
  (``torch.nn.grad.conv2d_input``, the same ``aten.convolution_backward`` autograd calls);
- a ReLU keeps its float output; its backward needs only where the output is positive: a mask of
  bits, packed eight to a byte (1/32 of the float output; packing and unpacking take about 30 ms per
  pix2pixHD iteration at 256 px, for 16 MB less at its peak);
- a 2 x 2 max pool keeps its input and int64 indices; its backward needs only which of the four inputs
  won: an int8 position, 1 byte per output instead of 4 + 8 per input and output.

The forward values are those of ``F.conv2d`` / ``F.relu`` / ``F.max_pool2d`` and the gradients those of
autograd's own formulas (tests/losses/test_perceptual.py compares the loss and the input gradient with
the plain path). For pix2pixHD's VGG loss at 256 px this keeps about 95 -> 8 MB for backward; at
1024 px, 16 times as much.
"""

import torch
import torch.nn.functional as F
from torch import nn


class _FrozenConv(torch.autograd.Function):
    """``F.conv2d`` with a weight and bias that get no gradient: keeps the weight, not the input."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        ctx.conv, ctx.input_shape = conv, x.shape
        with torch.no_grad():
            return conv(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        conv = ctx.conv
        weight = conv.weight.to(grad.dtype)
        if conv.stride == (1, 1) and conv.in_channels >= 64:
            # the same values bit for bit as conv2d_input at the VGG's 64-512 channels (oneDNN runs both as its
            # backward-data convolution; at 3 channels it picks kernels that differ by 1e-5), for 16 MB less
            # scratch at 64 channels x 256 x 256 (32 against 48 MB beside the 16 MB result)
            return F.conv_transpose2d(grad, weight, None, 1, conv.padding, 0, conv.groups, conv.dilation), None
        return torch.nn.grad.conv2d_input(ctx.input_shape, weight, grad, conv.stride, conv.padding, conv.dilation,
                                          conv.groups), None


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor whose size is a multiple of 8 -> uint8, eight elements to a byte (bit k: element k)."""
    bits = mask.reshape(-1, 8).view(torch.uint8)
    packed = bits[:, 0].clone()
    for k in range(1, 8):
        packed |= bits[:, k] << k
    return packed


def unpack_bits(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """:func:`pack_bits`'s inverse: the bool tensor of ``shape``."""
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    return ((packed.unsqueeze(1) >> shifts) & 1).view(torch.bool).view(shape)


class _MaskedReLU(torch.autograd.Function):
    """``F.relu`` keeping a mask of the positive outputs, in bits where the size allows (autograd's
    threshold_backward: grad where the output is > 0, else 0)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(x)
        positive = y > 0
        ctx.packed = positive.numel() % 8 == 0
        ctx.save_for_backward(pack_bits(positive) if ctx.packed else positive)
        ctx.shape = y.shape
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (positive,) = ctx.saved_tensors
        if ctx.packed:
            positive = unpack_bits(positive, ctx.shape)
        return torch.where(positive, grad, grad.new_zeros(()))


class _MaxPool2x2(torch.autograd.Function):
    """``F.max_pool2d(x, 2, 2)`` keeping each output's winning position in its 2 x 2 window (int8, 0-3),
    taken from max_pool2d's own indices (so ties resolve as in its forward)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y, indices = F.max_pool2d(x, 2, 2, return_indices=True)
        width = x.shape[-1]
        ctx.save_for_backward((indices // width % 2 * 2 + indices % width % 2).to(torch.int8))
        ctx.input_shape = x.shape
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (position,) = ctx.saved_tensors
        n, c, height, width = ctx.input_shape
        out_h, out_w = grad.shape[-2:]
        grad_x = grad.new_zeros(n, c, height, width)
        # floor mode: an odd last row / column is in no window and gets no gradient
        windows = grad_x[:, :, : 2 * out_h, : 2 * out_w].view(n, c, out_h, 2, out_w, 2)
        zero = grad.new_zeros(())
        for k in range(4):
            windows[:, :, :, k // 2, :, k % 2] = torch.where(position == k, grad, zero)
        return grad_x


def frozen_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` for a layer of a frozen network, keeping only what the input gradient needs (module
    notes). A layer that trains (a weight that requires grad) or of another kind runs as itself."""
    if isinstance(module, nn.ReLU):
        return _MaskedReLU.apply(x)
    if isinstance(module, nn.MaxPool2d) and module.kernel_size in (2, (2, 2)) and module.stride in (2, (2, 2)) \
            and module.padding in (0, (0, 0)) and module.dilation in (1, (1, 1)) and not module.ceil_mode:
        return _MaxPool2x2.apply(x)
    if type(module) is nn.Conv2d and module.padding_mode == "zeros" and not any(p.requires_grad for p in module.parameters()):
        return _FrozenConv.apply(x, module)
    return module(x)
