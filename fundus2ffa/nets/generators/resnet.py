"""ResNet generator of CycleGAN/pix2pix (``resnet_9blocks``), the default of the saliency cGAN.

Layout (reference_spec sections 2.3 and 5): reflection-padded 7x7 stem with ``ngf`` channels, ``n_downsampling``
stride-2 3x3 convolutions, ``n_blocks`` residual blocks, as many transposed-convolution upsamplings,
and a 7x7 head with tanh.
"""

import torch
from torch import nn

from fundus2ffa.nets.blocks.upsample import upsample_layer
from fundus2ffa.nets.init import init_weights
from fundus2ffa.nets.norm import conv_bias, norm_layer
from fundus2ffa.nets.padding import pad_to_multiple


class ResidualBlock(nn.Module):
    """Two reflection-padded 3x3 convolutions plus the identity.

    ``final_activation=False`` is pix2pix/CycleGAN's block (conv-norm-ReLU-conv-norm); True adds the
    ReLU after the second convolution too, as Li et al. (2020) section 2.2 describe their blocks
    ("two 3x3 convolutions, each followed by ReLU").
    """

    def __init__(self, channels: int, norm: str = "instance", use_dropout: bool = False, final_activation: bool = False):
        super().__init__()
        norm_fn, bias = norm_layer(norm), conv_bias(norm)
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_fn(channels), nn.ReLU()]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_fn(channels)]
        if final_activation:
            layers.append(nn.ReLU())
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Encoder, ``n_blocks`` residual blocks, decoder, tanh (``resnet_9blocks`` with the defaults).

    ``upsample``: transpose (the paper) | resize_conv (nets/blocks/upsample.py, against checkerboards),
    ``upsample_interpolation``: nearest | bilinear.
    ``pad_to_multiple``: pad inputs whose sides 2**n_downsampling does not divide (reflection) and crop
    the output back, so a whole aspect-kept real image (e.g. 256x319) can be evaluated; False makes such
    sizes an error. The papers' 256/512 px inputs are never padded, so either value is faithful.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        ngf: int = 64,
        n_blocks: int = 9,
        n_downsampling: int = 2,
        norm: str = "instance",
        use_dropout: bool = False,
        block_final_activation: bool = False,
        init_type: str = "normal",
        init_gain: float = 0.02,
        upsample: str = "transpose",
        upsample_interpolation: str = "nearest",
        pad_to_multiple: bool = False,
    ):
        super().__init__()
        norm_fn, bias = norm_layer(norm), conv_bias(norm)
        self.n_downsampling = n_downsampling
        self.pad_to_multiple = pad_to_multiple
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=bias), norm_fn(ngf), nn.ReLU()]
        width = ngf
        for _ in range(n_downsampling):
            layers += [nn.Conv2d(width, width * 2, 3, 2, 1, bias=bias), norm_fn(width * 2), nn.ReLU()]
            width *= 2
        layers += [ResidualBlock(width, norm, use_dropout, block_final_activation) for _ in range(n_blocks)]
        for _ in range(n_downsampling):
            layers += [
                upsample_layer(width, width // 2, upsample, 3, 1, bias, upsample_interpolation),
                norm_fn(width // 2),
                nn.ReLU(),
            ]
            width //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_weights(self, init_type, init_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = 2**self.n_downsampling
        if self.pad_to_multiple:
            x, crop = pad_to_multiple(x, side)
            y = self.model(x)
            return y if crop is None else y[..., crop[0], crop[1]]
        if x.shape[-1] % side or x.shape[-2] % side:
            raise ValueError(
                f"ResnetGenerator needs H and W divisible by {side}, got {tuple(x.shape[-2:])}; "
                "set generator.pad_to_multiple=true or an image size it divides"
            )
        return self.model(x)
