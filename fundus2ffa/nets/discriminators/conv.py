"""A pix2pix-style discriminator with free kernel sizes and strides, for a chosen receptive field.

Li et al. (MIDL 2020) ablate their PatchGAN with "a regular discriminator configured like pix2pix's one
with a 256x256 receptive field" (reference_spec section 2.3). pix2pix's PatchGAN layout (4x4 kernels,
``n_layers`` stride-2 convolutions then two stride-1 ones) only reaches 70, 142 and 286 px
(:func:`~fundus2ffa.nets.discriminators.patchgan.patchgan_receptive_field`). The receptive field of a
stack of convolutions is ``1 + sum_i (k_i - 1) * prod_{j<i} s_j``; with pix2pix's strides
(2, 2, 2, 2, 2, 1, 1: the n_layers=5 depth) and 4x4 kernels it is 286. Two kernels changed give exactly
256: the second convolution 5x5 (+2 px) and the penultimate (stride-1) one 3x3 (-32 px):
``1 + 3*1 + 4*2 + 3*4 + 3*8 + 3*16 + 2*32 + 3*32 = 256`` (``conf/discriminator/regular.yaml``). Everything
else is pix2pix's: channels ndf, 2ndf, 4ndf, 8ndf, ... capped at 8ndf, norm after every convolution but
the first and the last, LeakyReLU(0.2) after every convolution but the last, a one-channel map of logits.
"""

import torch
from torch import nn

from fundus2ffa.nets.init import init_weights
from fundus2ffa.nets.norm import conv_bias, norm_layer


def receptive_field(kernel_sizes, strides) -> int:
    """Receptive field in pixels of one output element of a stack of convolutions."""
    rf, jump = 1, 1
    for kernel, stride in zip(kernel_sizes, strides):
        rf += (int(kernel) - 1) * jump
        jump *= int(stride)
    return rf


class ConvDiscriminator(nn.Module):
    """Returns ``[[f1, ..., fn, logits]]`` like :class:`~fundus2ffa.nets.discriminators.PatchGAN`.

    Args:
        in_channels: 4 for pix2pix's conditional input concat(CF, FFA).
        ndf: width of the first convolution.
        kernel_sizes, strides: one entry per convolution (the last maps to one channel).
        norm: batch | instance | none (after every convolution but the first and the last).
        max_mult: channel cap as a multiple of ndf (8 in pix2pix).
    """

    def __init__(
        self,
        in_channels: int = 4,
        ndf: int = 64,
        kernel_sizes=(4, 5, 4, 4, 4, 3, 4),
        strides=(2, 2, 2, 2, 2, 1, 1),
        norm: str = "batch",
        max_mult: int = 8,
        init_type: str = "normal",
        init_gain: float = 0.02,
    ):
        super().__init__()
        kernel_sizes, strides = [int(k) for k in kernel_sizes], [int(s) for s in strides]
        if len(kernel_sizes) != len(strides) or len(kernel_sizes) < 2:
            raise ValueError(
                f"discriminator.kernel_sizes and discriminator.strides need one entry per convolution (at least 2), "
                f"got {kernel_sizes} and {strides}"
            )
        norm_fn, bias = norm_layer(norm), conv_bias(norm)
        blocks, width = [], in_channels
        for i, (kernel, stride) in enumerate(zip(kernel_sizes, strides)):
            padding = (kernel - 1) // 2
            if i == len(kernel_sizes) - 1:
                blocks.append(nn.Sequential(nn.Conv2d(width, 1, kernel, stride, padding)))
                break
            out = ndf * min(2**i, max_mult)
            if i == 0:
                layers = [nn.Conv2d(width, out, kernel, stride, padding)]
            else:
                layers = [nn.Conv2d(width, out, kernel, stride, padding, bias=bias), norm_fn(out)]
            blocks.append(nn.Sequential(*layers, nn.LeakyReLU(0.2)))
            width = out
        self.blocks = nn.ModuleList(blocks)
        self.kernel_sizes, self.strides = kernel_sizes, strides
        self.receptive_field = receptive_field(kernel_sizes, strides)
        init_weights(self, init_type, init_gain)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return [features]
