"""Fundus2Angio's coarse and fine generators (Kamran et al., ISVC 2020; reference_spec 3.2, which
follows the official Keras code where the paper's figure differs).

G_coarse sees the CF at half resolution (256 px for the 512 crops of the paper) and returns the FFA at
that resolution plus its last 64-channel feature map; G_fine sees the full-resolution CF and adds that
feature map to its own after one downsampling, so the coarse network supplies global structure and the
fine one local detail.

    G_coarse (ncf = ngf = 64)                      G_fine (nff = 32)
    ReflPad3 Conv7 -> 64, BN, LReLU      256^2     ReflPad3 Conv7 -> 32, BN, LReLU     512^2
    Conv3 s2 -> 128, BN, LReLU           128^2     Conv3 s2 -> 64, BN, LReLU           256^2
    Conv3 s2 -> 256, BN, LReLU            64^2     + G_coarse feature_out              256^2
    9 x NRB(256)                          64^2     3 x NRB(64)                         256^2
    ConvT3 s2 -> 128, BN, LReLU          128^2     ConvT3 s2 -> 32, BN, LReLU          512^2
    ConvT3 s2 -> 64, BN, LReLU = feature 256^2     ReflPad3 Conv7 -> 1, tanh           512^2
    ReflPad3 Conv7 -> 1, tanh            256^2

LeakyReLU slopes are 0.2; NRB is :class:`~fundus2ffa.nets.blocks.separable.NovelResidualBlock`.
Before April 2021 the official code had nff = 64, which cannot add a 128-channel map to the 64-channel
feature (pitfall A4); the fine width here is ``ngf_fine = ngf / 2`` by default so the add always fits.

Porting switches (defaults follow the spec):
- ``bn``: keras (momentum 0.99 there = 0.01 here, eps 1e-3; the code) | torch (PyTorch defaults).
- ``init``: code = N(0, 0.02) for the coarse stem, down/upsampling and head, Keras' Glorot-uniform
  default for the NRB convolutions of G_coarse and for every layer of G_fine (pitfall A8);
  normal = N(0, 0.02) everywhere; glorot = Glorot everywhere; torch = PyTorch defaults.
- ``tf_same_padding``: false (spec default) pads stride-2 convolutions symmetrically (PyTorch
  ``padding=1``, ``ConvTranspose(padding=1, output_padding=1)``); true reproduces TensorFlow's
  asymmetric "same" padding (0 before, 1 after), a sub-pixel shift with the same shapes.
Convolutions that feed a BatchNorm carry no bias (the BN cancels it; the function is the Keras one).
"""

import torch
from torch import nn

from fundus2ffa.nets.blocks.separable import NovelResidualBlock
from fundus2ffa.nets.keras_compat import SameConvTranspose2d, batch_norm, initialize, same_conv2d
from fundus2ffa.nets.resample import lanczos_halve

GENERATOR_INITS = ("code", "normal", "glorot", "torch")


def _down(in_channels: int, out_channels: int, tf_same_padding: bool) -> nn.Module:
    if tf_same_padding:
        return same_conv2d(in_channels, out_channels, 3, 2, bias=False)
    return nn.Conv2d(in_channels, out_channels, 3, 2, 1, bias=False)


def _up(in_channels: int, out_channels: int, tf_same_padding: bool) -> nn.Module:
    if tf_same_padding:
        return SameConvTranspose2d(in_channels, out_channels, 3, 2, bias=False)
    return nn.ConvTranspose2d(in_channels, out_channels, 3, 2, 1, output_padding=1, bias=False)


def _stage(conv: nn.Module, channels: int, bn: str, slope: float) -> nn.Sequential:
    return nn.Sequential(conv, batch_norm(channels, bn), nn.LeakyReLU(slope))


def _check_init(init: str) -> None:
    if init not in GENERATOR_INITS:
        raise ValueError(f"generator init must be one of {'|'.join(GENERATOR_INITS)}, got {init!r}")


class CoarseGenerator(nn.Module):
    """G_coarse: CF (half resolution) -> (FFA, 64-channel ``feature_out``), both at the input size.

    Args:
        in_channels / out_channels: 3 (CF) / 1 (FFA).
        ngf: ncf, the width of the stem and of ``feature_out`` (64).
        n_blocks: NRBs at the bottleneck (9).
        bn, init, tf_same_padding, negative_slope: see the module docstring.
    """

    n_downsampling = 2

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        ngf: int = 64,
        n_blocks: int = 9,
        bn: str = "keras",
        init: str = "code",
        tf_same_padding: bool = False,
        negative_slope: float = 0.2,
    ):
        super().__init__()
        _check_init(init)
        slope = negative_slope
        self.feature_channels = ngf
        self.stem = _stage(nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=False)), ngf, bn, slope)
        self.down = nn.Sequential(
            _stage(_down(ngf, ngf * 2, tf_same_padding), ngf * 2, bn, slope),
            _stage(_down(ngf * 2, ngf * 4, tf_same_padding), ngf * 4, bn, slope),
        )
        self.blocks = nn.Sequential(*[NovelResidualBlock(ngf * 4, bn, slope) for _ in range(n_blocks)])
        self.up = nn.Sequential(
            _stage(_up(ngf * 4, ngf * 2, tf_same_padding), ngf * 2, bn, slope),
            _stage(_up(ngf * 2, ngf, tf_same_padding), ngf, bn, slope),
        )
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh())
        if init == "code":
            initialize(self, "normal")
            initialize(self.blocks, "glorot")
        else:
            initialize(self, init)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        side = 2**self.n_downsampling
        if x.shape[-1] % side or x.shape[-2] % side:
            raise ValueError(f"CoarseGenerator needs H and W divisible by {side}, got {tuple(x.shape[-2:])}")
        feature = self.up(self.blocks(self.down(self.stem(x))))
        return self.head(feature), feature


class FineGenerator(nn.Module):
    """G_fine: (CF full resolution, G_coarse ``feature_out`` at half resolution) -> FFA.

    Args:
        ngf: nff, the stem width (32); the map the coarse feature is added to has ``2 * ngf`` channels,
            which must equal the coarse ``ngf``.
        n_blocks: NRBs after the add (3).
    """

    n_downsampling = 1

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        ngf: int = 32,
        n_blocks: int = 3,
        bn: str = "keras",
        init: str = "code",
        tf_same_padding: bool = False,
        negative_slope: float = 0.2,
    ):
        super().__init__()
        _check_init(init)
        slope = negative_slope
        self.feature_channels = ngf * 2
        self.stem = _stage(nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=False)), ngf, bn, slope)
        self.down = _stage(_down(ngf, ngf * 2, tf_same_padding), ngf * 2, bn, slope)
        self.blocks = nn.Sequential(*[NovelResidualBlock(ngf * 2, bn, slope) for _ in range(n_blocks)])
        self.up = _stage(_up(ngf * 2, ngf, tf_same_padding), ngf, bn, slope)
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh())
        # "code": every G_fine layer has Keras' default initialiser (reference_spec 3.2).
        initialize(self, "glorot" if init == "code" else init)

    def forward(self, x: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            raise ValueError(f"FineGenerator needs even H and W, got {tuple(x.shape[-2:])}")
        h = self.down(self.stem(x))
        if feature.shape[1:] != h.shape[1:]:
            raise ValueError(
                f"FineGenerator adds the coarse feature ({tuple(feature.shape[1:])}) to its own map "
                f"({tuple(h.shape[1:])}): the coarse ngf must be 2 x the fine ngf and the coarse input half the fine input"
            )
        return self.head(self.up(self.blocks(h + feature)))


class CoarseFineGenerator(nn.Module):
    """G_coarse and G_fine together, built from plain numbers (the unit a generator config describes).

    ``forward(cf)`` is Fundus2Angio's inference (reference_spec 3.6): Lanczos-halve the CF, run G_coarse,
    feed its feature to G_fine on the full CF; returns ``(fake_fine, fake_coarse, feature)``. Training
    procedures call :attr:`coarse` and :attr:`fine` separately.

    Args:
        ngf: the coarse width ncf (64).
        ngf_fine: the fine width nff; None means ``ngf // 2`` (32), the only width whose downsampled map
            matches the coarse feature (pitfall A4).
        n_blocks_coarse / n_blocks_fine: 9 / 3 NRBs.
        bn, init, tf_same_padding: see the module docstring.
        lanczos_antialias: how ``forward`` halves the CF: false = the code's tf.image.resize (6 taps) |
            true = the stretched 12-tap kernel (PIL); nets/resample.py.
        lanczos_clamp: false = the code's unclipped float halving | true = clipped to [-1, 1]
            (``model.lanczos_clamp``, models/coarse_fine_gan.py).
    """

    #: the full-resolution input must be divisible by this (halving, then two downsamplings)
    multiple = 2 * 2**CoarseGenerator.n_downsampling

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        ngf: int = 64,
        ngf_fine: int | None = None,
        n_blocks_coarse: int = 9,
        n_blocks_fine: int = 3,
        bn: str = "keras",
        init: str = "code",
        tf_same_padding: bool = False,
        lanczos_antialias: bool = False,
        lanczos_clamp: bool = False,
    ):
        super().__init__()
        self.lanczos_antialias = bool(lanczos_antialias)
        self.lanczos_clamp = bool(lanczos_clamp)
        if ngf % 2 and ngf_fine is None:
            raise ValueError(f"ngf must be even so that ngf_fine = ngf / 2, got ngf={ngf}")
        ngf_fine = ngf // 2 if ngf_fine is None else int(ngf_fine)
        if 2 * ngf_fine != ngf:
            raise ValueError(
                f"ngf_fine={ngf_fine} gives a {2 * ngf_fine}-channel fine map that cannot take the {ngf}-channel coarse "
                f"feature; set ngf_fine={ngf // 2} or null"
            )
        common = {"in_channels": in_channels, "out_channels": out_channels, "bn": bn, "init": init, "tf_same_padding": tf_same_padding}
        self.coarse = CoarseGenerator(ngf=ngf, n_blocks=n_blocks_coarse, **common)
        self.fine = FineGenerator(ngf=ngf_fine, n_blocks=n_blocks_fine, **common)

    def forward(self, cf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        clamp = (-1.0, 1.0) if self.lanczos_clamp else None
        fake_coarse, feature = self.coarse(lanczos_halve(cf, clamp=clamp, antialias=self.lanczos_antialias))
        return self.fine(cf, feature), fake_coarse, feature
