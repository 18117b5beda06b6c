"""Fundus2Angio's four PatchGAN discriminators (Kamran et al. 2020; reference_spec 3.3, pitfall A1).

Each sees concat(CF, FFA) (4 channels); all share one design, in Keras "same" padding:

    [AvgPool 3x3 s2 "same"]   optional input downsampling (n_downsampling = 0 or 1)
    Conv4 s2 -> ndf, LReLU 0.2            (no norm)
    Conv4 s2 -> 2 ndf, BN, LReLU
    Conv4 s2 -> 2 ndf (bug) | 4 ndf, BN, LReLU
    Conv4 s1 -> 2 ndf (bug) | 8 ndf, BN, LReLU      (pad (1, 2): Keras "same" for an even kernel)
    Conv4 s1 -> 1, linear                             (the LSGAN patch map)

Channel bug [C] (A1): the official loop sets every width after the first to ``min(ndf * 2, 512)``
instead of growing it, so with ndf = 32 all later layers have 64 channels. ``grow_channels=false`` keeps
that (the spec's faithful default); true gives 32 -> 64 -> 128 -> 256.

The four discriminators and their patch maps for a 512 crop (:class:`Fundus2AngioDiscriminators`):

    d1_fine    (CF512, FFA512)          64 x 64
    d2_fine    (CF512, FFA512), pooled  32 x 32
    d1_coarse  (CF256, FFA256)          32 x 32
    d2_coarse  (CF256, FFA256), pooled  16 x 16

Paper vs code on the pyramid [C != P]: the paper builds 1, 1/2, 1/4 with Lanczos; the code uses Lanczos
only for 512 -> 256 and average pooling inside d2_*. ``pyramid="avgpool"`` (default, the code) or
``"lanczos"`` (the paper: d2_fine sees the Lanczos-halved 512 pair, d2_coarse the 128 one, and neither
pools; ``lanczos_antialias`` picks the 6-tap TensorFlow-default or the 12-tap antialiased kernel, as for
the model's own halving).

Convolutions are initialised N(0, 0.02) as in the code (``init``), BatchNorm uses Keras' momentum and
epsilon (``bn``), and convolutions feeding a BatchNorm carry no bias.
"""

import torch
from torch import nn

from fundus2ffa.nets.keras_compat import SameAvgPool2d, batch_norm, initialize, same_conv2d
from fundus2ffa.nets.resample import lanczos_halve

PYRAMIDS = ("avgpool", "lanczos")


def fundus2angio_d_widths(ndf: int, n_layers: int = 3, grow_channels: bool = False, max_channels: int = 512) -> list[int]:
    """Output widths of the ``n_layers + 1`` LReLU convolutions (the last is the stride-1 one)."""
    widths = [ndf]
    for i in range(1, n_layers + 1):
        widths.append(min(ndf * 2**i, max_channels) if grow_channels else min(ndf * 2, max_channels))
    return widths


class Fundus2AngioPatchGAN(nn.Module):
    """One Fundus2Angio PatchGAN. Returns ``[[f1, ..., f4, patch_map]]`` (one scale; the last element is
    the linear patch map; the others are the block activations, for feature matching).

    Args:
        in_channels: 4 (CF + FFA).
        ndf: width of the first convolution (32).
        n_layers: stride-2 convolutions (3).
        n_downsampling: 0 or 1 "same" 3x3 stride-2 average poolings at the input (d2_*).
        grow_channels: false = the code's constant width after the first layer (A1); true = doubling.
        bn: keras | torch BatchNorm defaults; init: normal (code) | glorot | torch.
    """

    def __init__(
        self,
        in_channels: int = 4,
        ndf: int = 32,
        n_layers: int = 3,
        n_downsampling: int = 0,
        grow_channels: bool = False,
        max_channels: int = 512,
        bn: str = "keras",
        init: str = "normal",
        negative_slope: float = 0.2,
    ):
        super().__init__()
        if n_downsampling < 0:
            raise ValueError(f"n_downsampling must be >= 0, got {n_downsampling}")
        self.pool = nn.Sequential(*[SameAvgPool2d(3, 2) for _ in range(n_downsampling)])
        widths = fundus2angio_d_widths(ndf, n_layers, grow_channels, max_channels)
        blocks = [nn.Sequential(same_conv2d(in_channels, widths[0], 4, 2), nn.LeakyReLU(negative_slope))]
        for i in range(1, n_layers + 1):
            stride = 2 if i < n_layers else 1
            blocks.append(
                nn.Sequential(
                    same_conv2d(widths[i - 1], widths[i], 4, stride, bias=False),
                    batch_norm(widths[i], bn),
                    nn.LeakyReLU(negative_slope),
                )
            )
        blocks.append(nn.Sequential(same_conv2d(widths[-1], 1, 4, 1)))
        self.blocks = nn.ModuleList(blocks)
        self.widths = widths
        initialize(self, init)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        x = self.pool(x)
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return [features]


class Fundus2AngioDiscriminators(nn.Module):
    """The four discriminators of Fundus2Angio, each trained by its own optimiser.

    ``discriminate(name, pair)`` runs one of :attr:`names` on a concat(CF, FFA) pair at that
    discriminator's level (the full-resolution pair for ``*_fine``, the Lanczos-halved one for
    ``*_coarse``); with ``pyramid="lanczos"`` the ``d2_*`` ones first halve it with Lanczos-3 (clipped to
    [-1, 1] only with ``lanczos_clamp``, as ``model.lanczos_clamp``).
    ``forward(pair_fine, pair_coarse)`` runs all four and returns {name: [[features..., patch_map]]}.
    """

    names = ("d1_fine", "d2_fine", "d1_coarse", "d2_coarse")

    def __init__(
        self,
        in_channels: int = 4,
        ndf: int = 32,
        n_layers: int = 3,
        grow_channels: bool = False,
        pyramid: str = "avgpool",
        bn: str = "keras",
        init: str = "normal",
        lanczos_antialias: bool = False,
        lanczos_clamp: bool = False,
    ):
        super().__init__()
        self.lanczos_antialias = bool(lanczos_antialias)
        self.lanczos_clamp = bool(lanczos_clamp)
        if pyramid not in PYRAMIDS:
            raise ValueError(f"discriminator pyramid must be one of {'|'.join(PYRAMIDS)}, got {pyramid!r}")
        self.pyramid = pyramid
        self.nets = nn.ModuleDict(
            {
                name: Fundus2AngioPatchGAN(
                    in_channels,
                    ndf,
                    n_layers,
                    n_downsampling=1 if name.startswith("d2") and pyramid == "avgpool" else 0,
                    grow_channels=grow_channels,
                    bn=bn,
                    init=init,
                )
                for name in self.names
            }
        )

    def discriminate(self, name: str, pair: torch.Tensor) -> list[list[torch.Tensor]]:
        if name.startswith("d2") and self.pyramid == "lanczos":
            pair = lanczos_halve(pair, clamp=(-1.0, 1.0) if self.lanczos_clamp else None, antialias=self.lanczos_antialias)
        return self.nets[name](pair)

    def forward(self, pair_fine: torch.Tensor, pair_coarse: torch.Tensor) -> dict[str, list[list[torch.Tensor]]]:
        return {name: self.discriminate(name, pair_fine if name.endswith("fine") else pair_coarse) for name in self.names}
