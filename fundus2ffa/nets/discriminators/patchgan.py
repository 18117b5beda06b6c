"""PatchGAN discriminator of pix2pix (70x70 with n_layers=3; reference_spec section 5).

n_layers stride-2 4x4 convolutions (the first without norm), one stride-1 4x4 convolution with norm,
and a stride-1 4x4 convolution to a one-channel patch map of logits. With n_layers=3 that is the
five 4x4 convolutions, LeakyReLU after the first four, of Li et al. (2020) section 2.3; their sigmoid
is folded into the loss (BCE with logits), which is the same function and numerically safer.
"""

from fundus2ffa.nets.discriminators.conv import ConvDiscriminator, receptive_field


def patchgan_layout(n_layers: int) -> tuple[list[int], list[int]]:
    """Kernel sizes and strides of pix2pix's PatchGAN: n_layers stride-2 4x4 convolutions, two stride-1."""
    return [4] * (n_layers + 2), [2] * n_layers + [1, 1]


def patchgan_receptive_field(n_layers: int) -> int:
    """Receptive field in pixels of one patch-map element: 70 for n_layers=3, 286 for 5."""
    return receptive_field(*patchgan_layout(n_layers))


class PatchGAN(ConvDiscriminator):
    """Returns ``[[f1, ..., fn, logits]]``: one scale, the activations of every block and the patch map.

    The :class:`ConvDiscriminator` with pix2pix's layout: 4x4 kernels, padding 1, channels ndf, 2ndf, ...
    capped at ``max_mult`` ndf, no norm on the first convolution.
    """

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
        kernel_sizes, strides = patchgan_layout(n_layers)
        super().__init__(in_channels, ndf, kernel_sizes, strides, norm, max_mult, init_type, init_gain)
