"""Fundus2Angio's novel residual block (NRB): a residual block whose second 3x3 convolution is
depthwise separable (Kamran et al. 2020, section 2.1 and its parameter table; reference_spec 3.2).

    ReflPad1 -> Conv3x3 (C -> C) -> BN -> LeakyReLU(0.2) -> ReflPad1 -> SeparableConv3x3 -> BN, + identity

No activation follows the addition. The separable convolution is a depthwise 3x3 (multiplier 1) then a
pointwise 1x1, which replaces the second block's ``K*K*C*C`` weights by ``K*K*C + C*C``. The paper's
table (C = 32, K = 3) counts 18,688 parameters for the original block (two plain 3x3 convolutions and
two BN) and 10,784 for the NRB; :func:`paper_parameter_count` reproduces its counting: convolution
kernels without bias, and four values per BatchNorm channel (gamma, beta, moving mean and variance, as
Keras' ``model.summary()`` counts them).

Convolutions that feed a BatchNorm have no bias here: the BN's mean subtraction cancels a bias, so the
function is the one Keras computes (its layers keep a redundant bias by default) and the parameter count
is the paper's.
"""

import torch
from torch import nn

from fundus2ffa.nets.keras_compat import batch_norm


class SeparableConv2d(nn.Sequential):
    """Keras ``SeparableConv2D`` without padding: depthwise ``kernel`` x ``kernel`` (one filter per input
    channel, depth multiplier 1) followed by a pointwise 1x1 convolution to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, bias: bool = False):
        super().__init__(
            nn.Conv2d(in_channels, in_channels, kernel, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels, 1, bias=bias),
        )


class NovelResidualBlock(nn.Module):
    """The NRB of Fundus2Angio; ``bn``: keras (momentum 0.99 / eps 1e-3, the code) | torch.

    ``separable=False`` gives the block the paper's table compares against (OriginalResidualBlock).
    """

    def __init__(self, channels: int, bn: str = "keras", negative_slope: float = 0.2, separable: bool = True):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=False),
            batch_norm(channels, bn),
            nn.LeakyReLU(negative_slope),
            nn.ReflectionPad2d(1),
            SeparableConv2d(channels, channels, 3) if separable else nn.Conv2d(channels, channels, 3, bias=False),
            batch_norm(channels, bn),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class OriginalResidualBlock(NovelResidualBlock):
    """The block the paper's table compares against: two plain 3x3 convolutions, each followed by BN."""

    def __init__(self, channels: int, bn: str = "keras", negative_slope: float = 0.2):
        super().__init__(channels, bn, negative_slope, separable=False)


def paper_parameter_count(module: nn.Module) -> int:
    """Parameters as Fundus2Angio's table counts them: convolution kernels (biases excluded) plus four
    values per BatchNorm channel (gamma, beta and the two running statistics)."""
    total = 0
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            total += m.weight.numel()
        elif isinstance(m, nn.BatchNorm2d):
            total += 4 * m.num_features
    return total
