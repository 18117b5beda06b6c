"""PatchGAN discriminator of pix2pix (70x70 with n_layers=3; reference_spec section 5).

n_layers stride-2 4x4 convolutions (the first without norm), one stride-1 4x4 convolution with norm,
and a stride-1 4x4 convolution to a one-channel patch map of logits. With n_layers=3 that is the
five 4x4 convolutions, LeakyReLU after the first four, of Li et al. (2020) section 2.3; their sigmoid
is folded into the loss (BCE with logits), which is the same function and numerically safer.
"""

import torch
from torch import nn

from fundus2ffa.nets.init import init_weights
from fundus2ffa.nets.norm import conv_bias, norm_layer


def patchgan_receptive_field(n_layers: int) -> int:
    """Receptive field in pixels of one patch-map element: 70 for n_layers=3, 286 for 5."""
    rf = 1
    strides = [2] * n_layers + [1, 1]
    for stride in reversed(strides):
        rf = (rf - 1) * stride + 4
    return rf


class PatchGAN(nn.Module):
    """Returns ``[[f1, ..., fn, logits]]``: one scale, the activations of every block and the patch map."""

    def __init__(
        self,
        in_channels: int = 4,
        ndf: int = 64,
        n_layers: int = 3,
        norm: str = "batch",
        max_mult: int = 8,
        init_type: str = "normal",
        init_gain: float = 0.02,
    ):
        super().__init__()
        norm_fn, bias = norm_layer(norm), conv_bias(norm)
        blocks = [nn.Sequential(nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2))]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, max_mult)
            stride = 2 if n < n_layers else 1
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=bias), norm_fn(ndf * mult), nn.LeakyReLU(0.2)
                )
            )
        blocks.append(nn.Sequential(nn.Conv2d(ndf * mult, 1, 4, 1, 1)))
        self.blocks = nn.ModuleList(blocks)
        self.receptive_field = patchgan_receptive_field(n_layers)
        init_weights(self, init_type, init_gain)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return [features]
