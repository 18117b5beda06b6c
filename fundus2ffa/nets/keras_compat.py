"""Keras semantics in PyTorch, for faithful ports of Keras/TensorFlow models (Fundus2Angio's official
code is Keras; reference_spec section 3.2 "Porting notes" and pitfall A8).

- :func:`batch_norm`: Keras ``BatchNormalization`` keeps ``moving = 0.99 * moving + 0.01 * batch`` with
  eps 1e-3; PyTorch's ``momentum`` is the weight of the *new* value, so that is ``momentum=0.01, eps=1e-3``.
- :func:`initialize`: Keras' two initialisers in that code, ``RandomNormal(stddev=0.02)`` and the
  default Glorot-uniform kernels, both with zero biases and BatchNorm gamma 1, beta 0.
- :class:`TFSamePad`: TensorFlow's "same" padding, ``total = max((ceil(n / s) - 1) * s + k - n, 0)``
  split ``total // 2`` before and the rest after, computed per input size. For stride 1 and k4 that is
  ``ZeroPad2d((1, 2, 1, 2))``; for stride 2 on even sizes ``(k - 2) // 2`` before, i.e. (1, 1) for k4 (the
  same as PyTorch ``padding=1``) and (0, 1) for k3 (not the same: PyTorch pads (1, 1)).
- :class:`SameConvTranspose2d`: the transpose of a TF-"same" stride-2 convolution (the adjoint of
  ``TFSamePad`` + conv), output exactly ``stride * n``.
- :class:`SameAvgPool2d`: ``AveragePooling2D(padding="same")``, which averages only the pixels inside
  the image (padding is not counted).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

BN_MODES = ("keras", "torch")
INIT_SCHEMES = ("normal", "glorot", "torch")


def batch_norm(channels: int, bn: str = "keras") -> nn.BatchNorm2d:
    """BatchNorm2d with Keras' defaults (``bn="keras"``: momentum 0.99 there, 0.01 here; eps 1e-3) or
    PyTorch's (``bn="torch"``: momentum 0.1, eps 1e-5)."""
    if bn == "keras":
        return nn.BatchNorm2d(channels, momentum=0.01, eps=1e-3)
    if bn == "torch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"bn must be one of {'|'.join(BN_MODES)}, got {bn!r}")


def initialize(module: nn.Module, scheme: str = "normal", std: float = 0.02) -> nn.Module:
    """Initialise every convolution (and linear layer) of ``module`` in place; returns ``module``.

    normal: kernels N(0, std) (Keras ``RandomNormal(stddev=0.02)``, the pix2pix habit); glorot: Keras'
    default Glorot-uniform kernels (``xavier_uniform_``; for a depthwise kernel PyTorch's fan_in + fan_out
    is Keras' with the roles swapped, and the bound depends only on the sum); torch: leave PyTorch's
    defaults. Biases become 0 and BatchNorm gamma 1, beta 0 (Keras' defaults) except with ``torch``.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init scheme must be one of {'|'.join(INIT_SCHEMES)}, got {scheme!r}")
    if scheme == "torch":
        return module
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if scheme == "normal":
                nn.init.normal_(m.weight, 0.0, std)
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same" padding of one dimension: (before, after)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class TFSamePad(nn.Module):
    """Zero-pad the last two dimensions as TensorFlow's "same" padding would for (kernel, stride)."""

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel, self.stride)
        left, right = same_padding(x.shape[-1], self.kernel, self.stride)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return x

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}"


def same_conv2d(in_channels: int, out_channels: int, kernel: int, stride: int, bias: bool = True) -> nn.Sequential:
    """Conv2d with TensorFlow "same" padding: ``TFSamePad`` then an unpadded convolution."""
    return nn.Sequential(TFSamePad(kernel, stride), nn.Conv2d(in_channels, out_channels, kernel, stride, bias=bias))


class SameConvTranspose2d(nn.Module):
    """``Conv2DTranspose(padding="same")``: output ``stride * n``, the adjoint of a TF-"same" convolution.

    The full transposed convolution has ``(n - 1) * stride + kernel`` samples; TensorFlow keeps
    ``stride * n`` of them starting at the "before" padding of the forward convolution, which is 0 for
    k3 s2 (PyTorch's ``padding=1, output_padding=1`` keeps those starting at 1: a one-pixel shift).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, bias: bool = True):
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, kernel, stride, bias=bias)
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2] * self.stride, x.shape[-1] * self.stride
        top, _ = same_padding(height, self.kernel, self.stride)
        left, _ = same_padding(width, self.kernel, self.stride)
        return self.conv(x)[..., top : top + height, left : left + width]

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight


class SameAvgPool2d(nn.Module):
    """Keras ``AveragePooling2D(pool_size, strides, padding="same")``: the mean over the in-image pixels
    of each window (TF does not count the padding)."""

    def __init__(self, kernel: int = 3, stride: int = 2):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.pad = TFSamePad(kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sums = F.avg_pool2d(self.pad(x), self.kernel, self.stride, divisor_override=1)
        ones = torch.ones((1, 1, *x.shape[-2:]), dtype=x.dtype, device=x.device)
        counts = F.avg_pool2d(self.pad(ones), self.kernel, self.stride, divisor_override=1)
        return sums / counts

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, padding=same"
