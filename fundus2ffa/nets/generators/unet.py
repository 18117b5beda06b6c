"""U-Net generator of pix2pix (Isola et al. 2017; reference_spec section 5).

``num_downs`` stride-2 4x4 convolutions halve the image down to 1x1 (8 for 256 px, 9 for 512 px);
the decoder mirrors them with transposed convolutions and concatenates the encoder feature of the
same resolution (skip connection). Dropout 0.5 in the intermediate 8ngf -> 8ngf decoder stages is
pix2pix's only source of noise: junyanz builds ``num_downs - 5`` of them (3 for unet_256, 4 for unet_512),
the paper's decoder CD512-CD1024-CD1024-C1024-...; the innermost stage and the 16ngf -> 4ngf stage have none.
"""

import torch
from torch import nn

from fundus2ffa.nets.blocks.upsample import upsample_layer
from fundus2ffa.nets.init import init_weights
from fundus2ffa.nets.norm import conv_bias, norm_layer
from fundus2ffa.nets.padding import pad_to_multiple


class UNetGenerator(nn.Module):
    """pix2pix ``unet_256`` (num_downs=8) / ``unet_512`` (num_downs=9).

    Args:
        in_channels: input channels (3 for a colour fundus photograph).
        out_channels: output channels (1 for FFA).
        num_downs: number of stride-2 downsamplings; the input side must be divisible by 2**num_downs.
        ngf: width of the first layer; widths double up to 8*ngf.
        norm: batch | instance | none.
        use_dropout: dropout 0.5 in the ``num_downs - 5`` intermediate 8*ngf -> 8*ngf decoder stages
            (pix2pix default True).
        upsample: transpose (pix2pix) | resize_conv (resize then 3x3 conv, no checkerboard;
            nets/blocks/upsample.py); upsample_interpolation: nearest | bilinear for resize_conv.
        pad_to_multiple: pad inputs whose sides are not multiples of 2**num_downs (reflection) and crop
            the output back, instead of refusing them (e.g. 288x360 Isfahan patches).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        num_downs: int = 8,
        ngf: int = 64,
        norm: str = "batch",
        use_dropout: bool = True,
        init_type: str = "normal",
        init_gain: float = 0.02,
        pad_to_multiple: bool = False,
        upsample: str = "transpose",
        upsample_interpolation: str = "nearest",
    ):
        super().__init__()
        self.pad_to_multiple = pad_to_multiple
        if num_downs < 5:
            raise ValueError(f"num_downs must be at least 5 (pix2pix layout), got {num_downs}")
        self.num_downs = num_downs
        norm_fn, bias = norm_layer(norm), conv_bias(norm)
        widths = [ngf, ngf * 2, ngf * 4] + [ngf * 8] * (num_downs - 3)
        innermost = num_downs - 1

        self.down = nn.ModuleList()
        for i, width in enumerate(widths):
            cin = in_channels if i == 0 else widths[i - 1]
            if i == 0:
                layers = [nn.Conv2d(cin, width, 4, 2, 1, bias=bias)]
            elif i == innermost:
                layers = [nn.LeakyReLU(0.2), nn.Conv2d(cin, width, 4, 2, 1, bias=bias)]
            else:
                layers = [nn.LeakyReLU(0.2), nn.Conv2d(cin, width, 4, 2, 1, bias=bias), norm_fn(width)]
            self.down.append(nn.Sequential(*layers))

        self.up = nn.ModuleList()
        for i, width in enumerate(widths):
            cin = width if i == innermost else width * 2
            if i == 0:
                layers = [nn.ReLU(), upsample_layer(cin, out_channels, upsample, 4, interpolation=upsample_interpolation), nn.Tanh()]
            else:
                cout = widths[i - 1]
                layers = [nn.ReLU(), upsample_layer(cin, cout, upsample, 4, bias=bias, interpolation=upsample_interpolation), norm_fn(cout)]
                # dropout in the 8ngf -> 8ngf stages between the innermost one and up[3] (16ngf -> 4ngf)
                if use_dropout and 4 <= i < innermost:
                    layers.append(nn.Dropout(0.5))
            self.up.append(nn.Sequential(*layers))
        init_weights(self, init_type, init_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = 2**self.num_downs
        if self.pad_to_multiple:
            x, crop = pad_to_multiple(x, side)
            y = self._forward(x)
            return y if crop is None else y[..., crop[0], crop[1]]
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        side = 2**self.num_downs
        if x.shape[-1] % side or x.shape[-2] % side:
            raise ValueError(
                f"UNetGenerator with num_downs={self.num_downs} needs H and W divisible by {side}, got "
                f"{tuple(x.shape[-2:])}; set data.image_size to a multiple of {side} or generator.pad_to_multiple=true"
            )
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        y = self.up[-1](skips[-1])
        for i in range(self.num_downs - 2, -1, -1):
            y = self.up[i](torch.cat([y, skips[i]], dim=1))
        return y
