"""pix2pixHD generators (Wang et al., CVPR 2018): the global generator and the local enhancer.

reference_spec section 5 (baseline) and section 4.3 (Fundus2Video reuses the global generator with 6
input and 3 output channels, about 180 M parameters at full size).

Global generator, as one flat ``nn.Sequential`` so that layer indices are stable and match the table of
reference_spec 4.3 (defaults ngf 64, n_downsampling 4, n_blocks 9)::

    idx  layer                                               shape (6 -> 3 channels, 512 px)
    0    ReflectionPad2d(3)                                  6 x 518^2
    1-3  Conv7 -> ngf, InstanceNorm, ReLU                     64 x 512^2
    4-6  Conv3 s2 -> 2 ngf, IN, ReLU                         128 x 256^2
    7-9  Conv3 s2 -> 4 ngf, IN, ReLU                         256 x 128^2
    10-12 Conv3 s2 -> 8 ngf, IN, ReLU                        512 x 64^2
    13-15 Conv3 s2 -> 16 ngf, IN, ReLU                      1024 x 32^2
    16-24 9 x ResBlock(16 ngf)                              1024 x 32^2
    25-36 4 x (ConvT3 s2 p1 op1 -> half, IN, ReLU)            64 x 512^2
    37-39 ReflectionPad2d(3), Conv7 -> out, Tanh               3 x 512^2

In general: downsampling ``k`` (1-based) occupies indices ``1 + 3k .. 3 + 3k``; the first residual block
is index ``4 + 3 n_downsampling``; the head is the last three. ``GlobalGenerator.layer_index`` names
them. Fundus2Video's PatchNCE taps (``nce_layers`` 0, 4, 8, 12, 16, reference_spec 4.3) are the output
of index 0 (the padded raw input), 4 (first stride-2 conv, pre-norm), 8 (IN at 1/4, *rectified*: see
below), 12 (ReLU at 1/8) and 16 (first residual block): :meth:`GlobalGenerator.encode` returns them.

Tap aliasing (``encode_taps``, issue 20 item 1). pix2pixHD's ``GlobalGenerator`` (Fundus2Video
``models/networks.py``, ``class GlobalGenerator``: ``activation = nn.ReLU(True)``, one in-place module
shared by every stage) stores each tap's tensor during ``forward(x, layers, encode_only=True)`` and keeps
running the sequential up to the last tap. An in-place activation that runs *after* a tap was stored
rewrites the stored tensor: of the taps 0, 4, 8, 12, 16, only tap 8 (the InstanceNorm output, followed by
the ReLU at index 9) is such a tensor, so the reference's PatchNCE sees ReLU(IN(conv)) there. Tap 0 is
followed by a convolution, tap 4 by InstanceNorm (out of place), tap 12 is itself the ReLU output and tap
16 is the last (nothing runs after it; a residual block's first layer is a reflection pad anyway).
``encode_taps="code"`` (default) reproduces that: a stored tap that an activation layer of this
sequential consumes later in the same ``encode`` call is replaced by the activation's output (computed
out of place: the same values and the same gradient as the reference's in-place rewrite).
``encode_taps="layer_output"`` returns each layer's own output (tap 8 signed, the earlier behaviour).

Conv weights are N(0, 0.02), biases zero (pix2pixHD ``weights_init``; its BatchNorm branch never
triggers with affine-free InstanceNorm). Every convolution keeps its bias, as pix2pixHD's code does
(it never passes ``bias=False``), also with ``norm: batch``.
"""

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from fundus2ffa.nets.blocks.block_conv import BLOCK_CONVS
from fundus2ffa.nets.blocks.recompute_pointwise import full_resolution_convolutions, run_recomputing_pointwise
from fundus2ffa.nets.blocks.tap_conv import OUTPUT_CONVS
from fundus2ffa.nets.blocks.upsample import upsample_layer
from fundus2ffa.nets.blocks.winograd_conv import WinogradConv2d
from fundus2ffa.nets.init import init_weights
from fundus2ffa.nets.norm import norm_layer
from fundus2ffa.nets.padding import pad_to_multiple

ACTIVATIONS = {"relu": lambda: nn.ReLU(), "lrelu": lambda: nn.LeakyReLU(0.2)}
#: what ``GlobalGenerator.encode`` returns at a tap that a later activation consumes (module docstring)
ENCODE_TAPS = ("code", "layer_output")


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {'|'.join(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


class ResnetBlock(nn.Module):
    """pix2pixHD residual block: ReflPad1-Conv3-norm-act-ReflPad1-Conv3-norm, plus the identity."""

    def __init__(self, channels: int, norm: str = "instance", activation: str = "relu", use_dropout: bool = False,
                 conv: str = "native"):
        super().__init__()
        if conv not in BLOCK_CONVS:
            raise ValueError(f"generator.block_conv must be one of {'|'.join(BLOCK_CONVS)}, got {conv!r}")
        norm_fn, conv_fn = norm_layer(norm), BLOCK_CONVS[conv]
        layers = [nn.ReflectionPad2d(1), conv_fn(channels, channels, 3), norm_fn(channels), _activation(activation)]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), conv_fn(channels, channels, 3), norm_fn(channels)]
        self.body = nn.Sequential(*layers)

    #: recompute the body in backward instead of keeping its activations (GlobalGenerator checkpoint_blocks)
    checkpoint = False
    #: keep only the block's input and its convolutions' outputs for backward (GlobalGenerator recompute_pointwise)
    recompute_pointwise = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpoint and self.training and torch.is_grad_enabled():
            # the same maths (dropout's random state is replayed); memory for time
            return x + torch.utils.checkpoint.checkpoint(self.body, x, use_reentrant=False)
        if self.recompute_pointwise and self.training and torch.is_grad_enabled() and self._recomputable():
            # each Winograd convolution keeps what comes before its padding / norm / activation, which is
            # kept anyway (the block's input, the first convolution's output) and runs those layers again
            # in backward: 3 maps kept instead of 5.5 (2 x 1.27 padded, 3 x 1), the same values and gradients
            pad1, conv1, norm1, act1, pad2, conv2, norm2 = self.body
            hidden = conv1.forward_from(x, pad1)
            return x + norm2(conv2.forward_from(hidden, lambda h: pad2(act1(norm1(h)))))
        return x + self.body(x)

    def _recomputable(self) -> bool:
        """Winograd convolutions (``forward_from``), no dropout and no parameters in the recomputed layers."""
        layers = list(self.body)
        return len(layers) == 7 and all(isinstance(layers[i], WinogradConv2d) for i in (1, 5)) \
            and not any(p.requires_grad for i in (0, 2, 3, 4) for p in layers[i].parameters())


class GlobalGenerator(nn.Module):
    """pix2pixHD global generator ``G1`` (reference_spec 4.3 and 5).

    Args:
        in_channels / out_channels: 3 -> 1 for CF -> FFA; 6 -> 3 for Fundus2Video.
        ngf: width of the first layer; doubles at each downsampling (64 -> 1024 with 4).
        n_downsampling: stride-2 convolutions (4 in pix2pixHD); H and W must be divisible by 2**n.
        n_blocks: residual blocks at the bottleneck (9).
        norm: instance (pix2pixHD, affine=False) | batch | none.
        activation: relu (pix2pixHD) | lrelu.
        max_channels: optional cap on the width (None: no cap, as pix2pixHD).
        output_head: end with ReflPad3-Conv7-Tanh (True); False drops those three layers so ``forward``
            returns the ``ngf``-channel feature map (the global part of the local enhancer, whose head
            pix2pixHD removes as well: unused parameters would also break DDP).
        pad_to_multiple: False (default) refuses H, W not divisible by 2**n_downsampling; True
            reflection-pads them up to the next multiple and crops the output back, so any size works
            (e.g. Li et al.'s 288x360 patches). Deviation: pix2pixHD's loader instead resizes every image
            to a multiple of 16 (``make_power_2``), which would misalign the output with the target.
            ``encode`` never pads (its taps are defined on the raw input).
        init_type / init_gain: N(0, 0.02) convolutions by default.
        upsample / upsample_interpolation: transpose (pix2pixHD) | resize_conv with nearest | bilinear
            (nets/blocks/upsample.py; a deviation against checkerboard artefacts).
        checkpoint_blocks: recompute each residual block in backward instead of keeping its activations
            (activation checkpointing; the same outputs and gradients, about one more forward of the blocks
            in time). Off by default: at 256 px the blocks run at 16 x 16 and keep little; it pays on
            large images, where the bottleneck is large (issue 24).
        block_conv: native (nn.Conv2d, default) | gemm | winograd: how the residual blocks' 3 x 3
            convolutions are computed (nets/blocks/block_conv.py: the same maths to 1e-6 and the same
            parameters, so checkpoints load either way; faster on a CPU at a 16 x 16 bottleneck).
        output_conv: native (nn.Conv2d, default) | taps: the 7 x 7 output convolution as one matrix product
            to its 49 tap maps and their shifted sum (nets/blocks/tap_conv.py: the same maths to 1e-6 and the
            same parameters; 189 -> 49 ms forward + backward at 256 px, 64 -> 1 channels, on a CPU).
        recompute_pointwise: keep only the convolution outputs for backward and recompute each
            InstanceNorm, activation and padding from them in backward (selective activation checkpointing,
            nets/blocks/recompute_pointwise.py): the same values and gradients, two thirds of the memory kept
            at the full-resolution stages, for one more pass of those elementwise layers. Off by default
            (issue 24).
        recompute_full_resolution: with ``recompute_pointwise``, the convolutions whose output is at the
            input's resolution, but for the output convolution (so the 7 x 7 stem and the last upsampling),
            are recomputed in backward too instead of keeping their outputs: the same values and gradients
            again, 32 MB less kept at 256 px (4x per doubling of the side) for 3.6 GFLOP more (about 1 % of
            a pix2pixHD iteration). The output convolution keeps its input either way (its weight gradient
            reads it), so recomputing it would only run its forward again. Off by default (issue 24).
        encode_taps: code (default) | layer_output: what :meth:`encode` returns at a tap that a later
            activation consumes. code: the activation's output, as pix2pixHD's shared in-place
            ``nn.ReLU(True)`` leaves it in the stored tensor (tap 8 rectified; module docstring);
            layer_output: the layer's own output (tap 8 = the signed InstanceNorm output).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        ngf: int = 64,
        n_downsampling: int = 4,
        n_blocks: int = 9,
        norm: str = "instance",
        activation: str = "relu",
        use_dropout: bool = False,
        max_channels: int | None = None,
        output_head: bool = True,
        pad_to_multiple: bool = False,
        init_type: str = "normal",
        init_gain: float = 0.02,
        upsample: str = "transpose",
        upsample_interpolation: str = "nearest",
        encode_taps: str = "code",
        checkpoint_blocks: bool = False,
        block_conv: str = "native",
        output_conv: str = "native",
        recompute_pointwise: bool = False,
        recompute_full_resolution: bool = False,
    ):
        super().__init__()
        self.recompute_pointwise = bool(recompute_pointwise)
        if recompute_full_resolution and not recompute_pointwise:
            raise ValueError("generator.recompute_full_resolution=true needs generator.recompute_pointwise=true "
                             "(it recomputes convolutions inside the pointwise segments)")
        if output_conv not in OUTPUT_CONVS:
            raise ValueError(f"generator.output_conv must be one of {'|'.join(OUTPUT_CONVS)}, got {output_conv!r}")
        if encode_taps not in ENCODE_TAPS:
            raise ValueError(f"generator.encode_taps must be one of {'|'.join(ENCODE_TAPS)}, got {encode_taps!r}")
        self.encode_taps = encode_taps
        norm_fn = norm_layer(norm)
        self.output_head, self.pad_to_multiple = output_head, pad_to_multiple
        cap = (lambda c: min(c, max_channels)) if max_channels else (lambda c: c)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.n_downsampling, self.n_blocks = n_downsampling, n_blocks
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7), norm_fn(ngf), _activation(activation)
        ]
        widths = [ngf]
        for _ in range(n_downsampling):
            w_in, w_out = widths[-1], cap(widths[-1] * 2)
            layers += [nn.Conv2d(w_in, w_out, 3, 2, 1), norm_fn(w_out), _activation(activation)]
            widths.append(w_out)
        layers += [ResnetBlock(widths[-1], norm, activation, use_dropout, block_conv) for _ in range(n_blocks)]
        for k in range(n_downsampling):
            w_in, w_out = widths[-1 - k], widths[-2 - k]
            up = upsample_layer(w_in, w_out, upsample, 3, 1, interpolation=upsample_interpolation)
            layers += [up, norm_fn(w_out), _activation(activation)]
        if output_head:
            layers += [nn.ReflectionPad2d(3), OUTPUT_CONVS[output_conv](ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        for block in self.model:
            if isinstance(block, ResnetBlock):
                block.checkpoint = bool(checkpoint_blocks)
                block.recompute_pointwise = self.recompute_pointwise
        #: convolutions recomputed in backward with recompute_full_resolution (nets/blocks/recompute_pointwise.py):
        #: not the output convolution, which keeps its input either way and would only run its forward again
        output = self.model[self.head_start + 1] if output_head else None
        self.recomputed_convolutions = [conv for conv in full_resolution_convolutions(self.model) if conv is not output] \
            if recompute_full_resolution else []
        #: width of the feature map before the head (what the local enhancer adds its features to)
        self.feature_channels = ngf
        init_weights(self, init_type, init_gain)

    # ----------------------------------------------------------------- layer indices
    def layer_index(self, what: str, k: int = 0) -> int:
        """Index into ``self.model`` of a named layer.

        what: ``stem_conv`` | ``down_conv`` (k-th downsampling conv, 0-based) | ``block`` (k-th residual
        block) | ``up_conv`` (k-th transposed conv) | ``head_pad`` (start of the 3-layer head;
        ``len(self.model)`` without a head).
        With the defaults: down_conv 0 -> 4, block 0 -> 16, head_pad -> 37.
        """
        nd, nb = self.n_downsampling, self.n_blocks
        table = {
            "stem_conv": lambda: 1,
            "down_conv": lambda: 4 + 3 * k,
            "block": lambda: 4 + 3 * nd + k,
            "up_conv": lambda: 4 + 3 * nd + nb + 3 * k,
            "head_pad": lambda: 4 + 3 * nd + nb + 3 * nd,
        }
        if what not in table:
            raise ValueError(f"unknown layer {what!r}; one of {', '.join(table)}")
        return table[what]()

    @property
    def head_start(self) -> int:
        return self.layer_index("head_pad")

    def check_size(self, x: torch.Tensor) -> None:
        side = 2**self.n_downsampling
        if x.shape[-1] % side or x.shape[-2] % side:
            raise ValueError(
                f"GlobalGenerator with n_downsampling={self.n_downsampling} needs H and W divisible by {side}, "
                f"got {tuple(x.shape[-2:])}; set data.image_size (or the crop size) to a multiple of {side}, "
                f"or generator.pad_to_multiple=true"
            )

    # ----------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_to_multiple:
            x, crop = pad_to_multiple(x, 2**self.n_downsampling)
            if crop is not None:
                return self.run_layers(x)[..., crop[0], crop[1]]
        self.check_size(x)
        return self.run_layers(x)

    def run_layers(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """``self.model[start:stop](x)``; in training with ``recompute_pointwise``, keeping only the
        convolution outputs for backward (nets/blocks/recompute_pointwise.py)."""
        layers = self.model if start == 0 and stop is None else self.model[start:stop]
        if self.recompute_pointwise and self.training and torch.is_grad_enabled():
            return run_recomputing_pointwise(layers, x, recompute=self.recomputed_convolutions)
        return layers(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map before the output head (``ngf`` channels at full resolution)."""
        self.check_size(x)
        return self.model[: self.head_start](x)

    def encode(self, x: torch.Tensor, layers, taps: str | None = None) -> list[torch.Tensor]:
        """The taps after the layers ``self.model[i]`` for ``i in layers`` (in the order given).

        Runs the sequential only up to ``max(layers)``, as the reference's ``encode_only`` stops at the
        last tap. Fundus2Video / CUT PatchNCE use ``layers=(0, 4, 8, 12, 16)`` with the default depth (see
        the module docstring for what each is). ``taps``: ``code`` | ``layer_output``, default
        ``self.encode_taps``: with ``code`` a tap consumed by a later activation of this call is that
        activation's output (pix2pixHD's in-place shared ReLU; module docstring).
        """
        taps = self.encode_taps if taps is None else taps
        if taps not in ENCODE_TAPS:
            raise ValueError(f"encode taps must be one of {'|'.join(ENCODE_TAPS)}, got {taps!r}")
        layers = [int(i) for i in layers]
        if not layers:
            return []
        last = max(layers)
        if min(layers) < 0 or last >= len(self.model):
            raise ValueError(f"encode layers must lie in 0..{len(self.model) - 1}, got {layers}")
        self.check_size(x)
        wanted = set(layers)
        found: dict[int, torch.Tensor] = {}
        for i, layer in enumerate(self.model[: last + 1]):
            y = layer(x)
            if taps == "code" and isinstance(layer, (nn.ReLU, nn.LeakyReLU)):
                # the reference's activation is in place: every stored tap that *is* this input tensor
                # (identity layers such as norm=none pass the same object on) now holds the output
                for index, tensor in found.items():
                    if tensor is x:
                        found[index] = y
            x = y
            if i in wanted:
                found[i] = x
        return [found[i] for i in layers]


class LocalEnhancer(nn.Module):
    """pix2pixHD coarse-to-fine generator ``G = {G1, G2}`` (reference_spec section 5: 3 blocks, ngf 32).

    The global generator runs at half resolution on the AvgPool(3, s2, p1, count_include_pad=False)
    downsampled input with width ``ngf * 2**n_local_enhancers`` and without its output head
    (``output_head=False``); each local
    enhancer encodes the input at its own scale (ReflPad3-Conv7-norm-act, Conv3 s2-norm-act), adds the
    coarser generator's feature map, runs ``n_blocks_local`` residual blocks and upsamples (ConvT3 s2).
    The finest enhancer ends with ReflPad3-Conv7-Tanh. Input and output are at full (2x the global)
    resolution. pix2pixHD trains the global generator alone first (``niter_fix_global``); here the
    whole net trains jointly unless the caller freezes ``self.global_generator``.

    Args:
        ngf: width of the finest local enhancer (32); the global generator gets ``ngf * 2**n``.
        n_downsampling_global / n_blocks_global: the global generator's depth (4 and 9).
        n_local_enhancers: 1 in pix2pixHD's examples.
        n_blocks_local: residual blocks per enhancer (3).
        pad_to_multiple: as :class:`GlobalGenerator`; otherwise H and W must be divisible by
            ``2**(n_downsampling_global + n_local_enhancers)``.
        upsample / upsample_interpolation: as :class:`GlobalGenerator` (both nets).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        ngf: int = 32,
        n_downsampling_global: int = 4,
        n_blocks_global: int = 9,
        n_local_enhancers: int = 1,
        n_blocks_local: int = 3,
        norm: str = "instance",
        activation: str = "relu",
        pad_to_multiple: bool = False,
        init_type: str = "normal",
        init_gain: float = 0.02,
        upsample: str = "transpose",
        upsample_interpolation: str = "nearest",
        encode_taps: str = "code",
    ):
        super().__init__()
        if encode_taps not in ENCODE_TAPS:
            raise ValueError(f"generator.encode_taps must be one of {'|'.join(ENCODE_TAPS)}, got {encode_taps!r}")
        self.encode_taps = encode_taps
        norm_fn = norm_layer(norm)
        self.n_local_enhancers, self.pad_to_multiple = n_local_enhancers, pad_to_multiple
        self.divisor = 2 ** (n_downsampling_global + n_local_enhancers)
        self.global_generator = GlobalGenerator(
            in_channels, out_channels, ngf * 2**n_local_enhancers, n_downsampling_global, n_blocks_global,
            norm, activation, output_head=False, init_type=init_type, init_gain=init_gain,
            upsample=upsample, upsample_interpolation=upsample_interpolation,
        )
        downs, ups = [], []
        for n in range(1, n_local_enhancers + 1):
            width = ngf * 2 ** (n_local_enhancers - n)
            downs.append(nn.Sequential(
                nn.ReflectionPad2d(3), nn.Conv2d(in_channels, width, 7), norm_fn(width), _activation(activation),
                nn.Conv2d(width, width * 2, 3, 2, 1), norm_fn(width * 2), _activation(activation),
            ))
            up = [ResnetBlock(width * 2, norm, activation) for _ in range(n_blocks_local)]
            up += [
                upsample_layer(width * 2, width, upsample, 3, 1, interpolation=upsample_interpolation),
                norm_fn(width), _activation(activation),
            ]
            if n == n_local_enhancers:
                up += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
            ups.append(nn.Sequential(*up))
        self.downsample = nn.ModuleList(downs)
        self.upsample = nn.ModuleList(ups)
        init_weights(self.downsample, init_type, init_gain)
        init_weights(self.upsample, init_type, init_gain)

    @staticmethod
    def pool(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        crop = None
        if self.pad_to_multiple:
            x, crop = pad_to_multiple(x, self.divisor)
        if x.shape[-1] % self.divisor or x.shape[-2] % self.divisor:
            raise ValueError(
                f"LocalEnhancer needs H and W divisible by {self.divisor}, got {tuple(x.shape[-2:])}; "
                f"set data.image_size (or the crop size) to a multiple of {self.divisor}, or generator.pad_to_multiple=true"
            )
        pyramid = [x]
        for _ in range(self.n_local_enhancers):
            pyramid.append(self.pool(pyramid[-1]))
        out = self.global_generator(pyramid[-1])
        for n in range(self.n_local_enhancers):
            scale_input = pyramid[self.n_local_enhancers - 1 - n]
            out = self.upsample[n](self.downsample[n](scale_input) + out)
        return out if crop is None else out[..., crop[0], crop[1]]
