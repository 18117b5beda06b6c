"""Mean absolute difference that keeps only the sign of the difference for backward (issue 24).

``F.l1_loss(a, b)`` (mean reduction) is ``(a - b).abs().mean()`` and autograd keeps the float difference
for abs's backward, ``grad * sgn(a - b)``. The sign alone, as int8, is all that backward reads: a quarter
of the memory. The value and the gradients are those of ``F.l1_loss`` (the same operations in the same
order; tests/losses/test_perceptual.py). pix2pixHD's VGG loss keeps five such differences, 30 MB at
256 px and 16 times that at 1024 px.
"""

import torch


class _SignL1(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        difference = a - b
        ctx.save_for_backward(difference.sgn().to(torch.int8))
        ctx.numel, ctx.dtype = difference.numel(), difference.dtype
        return difference.abs().mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (sign,) = ctx.saved_tensors
        grad_a = (grad / ctx.numel).expand(sign.shape) * sign.to(ctx.dtype)
        return grad_a if ctx.needs_input_grad[0] else None, -grad_a if ctx.needs_input_grad[1] else None


def sign_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``F.l1_loss(a, b)`` (same shapes, mean) keeping only the int8 sign of ``a - b`` for backward."""
    if a.shape != b.shape:
        raise ValueError(f"sign_l1 needs tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return _SignL1.apply(a, b)
