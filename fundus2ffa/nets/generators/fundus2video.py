"""Fundus2Video generator (Zhang et al., MICCAI 2024; reference_spec 4.3 and 4.8).

The released code's generator is the pix2pixHD global generator (:class:`GlobalGenerator`) with
6 input channels, concat(CF (3), previous 3-frame window (3)), and 3 output channels, the *next three
consecutive frames* (spec 1.1 and 4.3: the output channels are time steps, not RGB; pitfall F5). With
the defaults (ngf 64, 4 downsamplings, 9 residual blocks) it has about 180 M parameters; the layer
indices of :class:`GlobalGenerator` are kept, so the PatchNCE taps 0, 4, 8, 12, 16 of the code address
the same layers (:meth:`GlobalGenerator.encode`), and by default (``encode_taps: code``) hold what the
code's ``encode_only`` stores: tap 8 rectified by the generator's shared in-place ReLU (module docstring
of nets/generators/pix2pixhd.py; issue 20 item 1).

Knowledge-boosted attention (KBA). The paper names it (section 4.1) but the code does not contain it
(``pix2pixHD_model_att`` is missing, pitfall F7), so this is the spec's proposal (4.8, [D]): an attention
head on the bottleneck (after the last residual block) and optionally after decoder stages::

    A = sigmoid(Conv1x1(ReLU(Conv3x3(F, hidden))))     in [0, 1]^(1 x h x w)
    F <- F * (1 + A)                                   ("boost": A = 0 keeps the identity path)

A is predicted from the features, i.e. from the CF and the previous window, so it works at inference
when no knowledge mask (KM) exists; during training the model supervises it with the KM (a loss term,
``fundus2ffa.losses.kba_attention``). ``oracle`` replaces A by given maps (the ``kba_mode:
oracle_train`` option of the training procedure, documented there as train/test-inconsistent).
``kba=False`` gives the plain generator of the public code.

Stages (``kba_stages``): ``bottleneck`` (1/2^n resolution, 1024 x 32^2 at 512 px) and ``decoder<k>``,
the output of the k-th upsampling block (1-based; decoder1 = 64^2 and decoder2 = 128^2 at 512 px, the
spec's optional stages).
"""

import torch
from torch import nn

from fundus2ffa.nets.generators.pix2pixhd import GlobalGenerator
from fundus2ffa.nets.init import init_weights


class AttentionHead(nn.Module):
    """KBA head: Conv3x3(C -> hidden) - ReLU - Conv1x1(hidden -> 1) - sigmoid (reference_spec 4.8)."""

    def __init__(self, channels: int, hidden: int = 256):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, 1, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(features))


class Fundus2VideoGenerator(GlobalGenerator):
    """pix2pixHD global generator, 6 -> 3 channels, with optional knowledge-boosted attention.

    Args:
        in_channels / out_channels: 6 (CF + previous window) and 3 (the next window), as the code.
        ngf, n_downsampling, n_blocks, norm, activation, use_dropout, max_channels, init_type,
            init_gain: as :class:`GlobalGenerator` (64, 4, 9, instance, relu: the code, ~180 M
            parameters; tiny widths for CPU tests).
        kba: add the attention heads (the paper); False is the released code's plain generator.
        kba_stages: where: ``bottleneck`` and/or ``decoder1`` .. ``decoder<n_downsampling - 1>``.
        kba_hidden: width of the head's 3x3 convolution (256).
        encode_taps: code (default: the PatchNCE taps the released code's ``encode_only`` stores, tap 8
            rectified by its shared in-place ReLU) | layer_output (tap 8 the signed InstanceNorm output);
            :class:`GlobalGenerator`.

    ``forward(x)`` returns the window N x out x H x W in [-1, 1];
    ``forward(x, return_attention=True)`` returns ``(window, {stage: N x 1 x h x w attention})``; the
    maps are returned rather than stored on the module, so no graph outlives its window.
    """

    def __init__(
        self,
        in_channels: int = 6,
        out_channels: int = 3,
        ngf: int = 64,
        n_downsampling: int = 4,
        n_blocks: int = 9,
        norm: str = "instance",
        activation: str = "relu",
        use_dropout: bool = False,
        max_channels: int | None = None,
        kba: bool = True,
        kba_stages=("bottleneck",),
        kba_hidden: int = 256,
        init_type: str = "normal",
        init_gain: float = 0.02,
        encode_taps: str = "code",
        checkpoint_blocks: bool = False,
        block_conv: str = "native",
        output_conv: str = "native",
        recompute_pointwise: bool = False,
        recompute_full_resolution: bool = False,
    ):
        super().__init__(
            in_channels, out_channels, ngf, n_downsampling, n_blocks, norm, activation, use_dropout,
            max_channels, output_head=True, init_type=init_type, init_gain=init_gain, encode_taps=encode_taps,
            checkpoint_blocks=checkpoint_blocks, block_conv=block_conv, output_conv=output_conv,
            recompute_pointwise=recompute_pointwise, recompute_full_resolution=recompute_full_resolution,
        )
        self.kba = bool(kba)
        stages = list(kba_stages or []) if self.kba else []
        positions = {}
        for stage in stages:
            positions[stage] = self.stage_index(stage)
        if self.kba and not stages:
            raise ValueError("generator.kba is true but generator.kba_stages is empty; name at least 'bottleneck' or set kba=false")
        #: model index after which each stage's attention is applied
        self.kba_positions = positions
        self.attention = nn.ModuleDict(
            {stage: AttentionHead(self.channels_at(index), int(kba_hidden)) for stage, index in positions.items()}
        )
        init_weights(self.attention, init_type, init_gain)

    # ----------------------------------------------------------------- structure
    def stage_index(self, stage: str) -> int:
        """Index into ``self.model`` after which ``stage``'s attention acts."""
        if stage == "bottleneck":
            return self.layer_index("block", self.n_blocks - 1) if self.n_blocks else self.layer_index("down_conv", self.n_downsampling - 1) + 2
        if stage.startswith("decoder") and stage[len("decoder"):].isdigit():
            k = int(stage[len("decoder"):])
            if 1 <= k <= self.n_downsampling:
                return self.layer_index("up_conv", k - 1) + 2  # after the block's activation
        raise ValueError(
            f"generator.kba_stages: unknown stage {stage!r}; use bottleneck or decoder1..decoder{self.n_downsampling}"
        )

    def channels_at(self, index: int) -> int:
        """Channels of the activation after ``self.model[index]`` (index 0: the padded input)."""
        if not 0 <= index < len(self.model):
            raise ValueError(f"layer index {index} outside 0..{len(self.model) - 1}")
        channels = self.in_channels
        for layer in self.model[: index + 1]:
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                channels = layer.out_channels
        return channels

    def downsampling_at(self, index: int) -> int:
        """Factor by which the activation after ``self.model[index]`` is smaller than the input."""
        factor = 1
        for layer in self.model[: index + 1]:
            if isinstance(layer, nn.Conv2d) and layer.stride[0] == 2:
                factor *= 2
            elif isinstance(layer, nn.ConvTranspose2d):
                factor //= 2
        return factor

    # ----------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, return_attention: bool = False, oracle: dict | None = None):
        """The next window (and the attention maps).

        oracle: {stage: N x 1 x h x w} maps that replace the predicted A in the boost (the predicted
            maps are still computed and returned, so they can be supervised).
        """
        self.check_size(x)
        maps, start = {}, 0
        for index, stage in sorted((index, stage) for stage, index in self.kba_positions.items()):
            x = self.run_layers(x, start, index + 1)
            start = index + 1
            attention = self.attention[stage](x)
            maps[stage] = attention
            boost = oracle[stage] if oracle is not None and stage in oracle else attention
            x = x * (1.0 + boost)
        x = self.run_layers(x, start)
        return (x, maps) if return_attention else x
