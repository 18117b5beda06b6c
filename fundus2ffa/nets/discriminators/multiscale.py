"""pix2pixHD multi-scale discriminator (Wang et al., CVPR 2018; reference_spec sections 4.4 and 5).

``num_D`` PatchGANs with identical design and separate weights; scale ``k`` sees the input average-pooled
``k`` times by AvgPool2d(3, stride 2, padding 1, count_include_pad=False). Each scale is pix2pixHD's
``NLayerDiscriminator``: every convolution is 4x4 with padding 2 (``ceil((4 - 1) / 2)``), so maps grow by
one pixel at every stride-1 layer:

    Conv4 s2 -> ndf, LReLU 0.2                      (no norm)
    Conv4 s2 -> 2 ndf, norm, LReLU   ...            (n_layers - 1 stride-2 layers, widths capped at 512)
    Conv4 s1 -> 8 ndf, norm, LReLU
    Conv4 s1 -> 1                                   (patch map of logits; no sigmoid: LSGAN)

With n_layers 3 the patch maps are 67x67 for a 512 px input and 35x35 for its 256 px pooled copy
(reference_spec 4.4). Convolutions keep their bias as in pix2pixHD's code; weights N(0, 0.02).

Output (the project-wide discriminator contract): ``[[f_1, ..., f_{n_layers+1}, patch], ...]``, one list
per scale, finest scale first. pix2pixHD's ``getIntermFeat`` returns the same per-scale features; its
list order over scales is also finest first. Feature matching reads every element but the last.
"""

import torch
import torch.nn.functional as F
from torch import nn

from fundus2ffa.nets.init import init_weights
from fundus2ffa.nets.norm import norm_layer


class NLayerDiscriminator(nn.Module):
    """One scale of the pix2pixHD discriminator; returns the list of its block outputs."""

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm: str = "instance", max_channels: int = 512):
        super().__init__()
        norm_fn = norm_layer(norm)
        blocks = [nn.Sequential(nn.Conv2d(in_channels, ndf, 4, 2, 2), nn.LeakyReLU(0.2))]
        width = ndf
        for n in range(1, n_layers + 1):
            prev, width = width, min(width * 2, max_channels)
            stride = 2 if n < n_layers else 1
            blocks.append(nn.Sequential(nn.Conv2d(prev, width, 4, stride, 2), norm_fn(width), nn.LeakyReLU(0.2)))
        blocks.append(nn.Sequential(nn.Conv2d(width, 1, 4, 1, 2)))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features


class MultiscaleDiscriminator(nn.Module):
    """pix2pixHD's D: ``num_D`` scales of ``NLayerDiscriminator``.

    Args:
        in_channels: 4 for concat(CF, FFA) (PairedGAN, conditional), 6 for Fundus2Video.
        ndf: width of the first layer (64).
        n_layers: stride-2 layers per scale (3).
        num_D: number of scales (2 in pix2pixHD's 512 px setting and Fundus2Video; 3 at 2048 px).
        norm: instance (pix2pixHD) | batch | none.
        max_channels: width cap (512, as pix2pixHD).
        init_type / init_gain: N(0, 0.02) convolutions.
    """

    def __init__(
        self,
        in_channels: int = 4,
        ndf: int = 64,
        n_layers: int = 3,
        num_D: int = 2,
        norm: str = "instance",
        max_channels: int = 512,
        init_type: str = "normal",
        init_gain: float = 0.02,
    ):
        super().__init__()
        if num_D < 1:
            raise ValueError(f"discriminator.num_D must be >= 1, got {num_D}")
        self.num_D, self.n_layers = num_D, n_layers
        self.scales = nn.ModuleList(NLayerDiscriminator(in_channels, ndf, n_layers, norm, max_channels) for _ in range(num_D))
        init_weights(self, init_type, init_gain)

    @staticmethod
    def downsample(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        outputs = []
        for k, scale in enumerate(self.scales):
            if k:
                x = self.downsample(x)
            outputs.append(scale(x))
        return outputs
