"""Run a sequence of layers keeping only convolution outputs for backward: normalisation, activation and
padding are recomputed in backward from them (selective activation checkpointing; issue 24).

In pix2pixHD's generator every stage is conv -> InstanceNorm -> ReLU, and autograd keeps two full-size
tensors per stage: the norm's input (the conv output) and the ReLU's output (the next convolution's
input); before the 7 x 7 output convolution a third, the reflection-padded map. Only the first needs
computing again at a convolution's price. This runs each run of pointwise layers together with the
convolution that follows it under ``torch.utils.checkpoint`` with a selective policy: the convolution's
output is kept (``MUST_SAVE``; it is the next run's input, kept anyway), everything else is recomputed in
backward (``PREFER_RECOMPUTE``): the same operations on the same inputs, so the same values and gradients,
for one more pass of the cheap elementwise layers. At 256 px this keeps about 60 MB less for
pix2pixHD's generator; the saving grows with the image (16 times at 1024 px).

Pointwise here: InstanceNorm without running statistics (BatchNorm's running statistics would be
updated twice), ReLU, LeakyReLU, reflection / replication / zero padding and Identity. A segment ends at
a plain ``nn.Conv2d`` / ``nn.ConvTranspose2d`` (included) or before any other layer (a residual block,
a convolution computed by its own autograd function such as the tap or Winograd ones), which runs as
itself.
"""

from functools import partial

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

_POINTWISE = (nn.ReLU, nn.LeakyReLU, nn.ReflectionPad2d, nn.ReplicationPad2d, nn.ZeroPad2d, nn.Identity)
_CONVOLUTIONS = (nn.Conv2d, nn.ConvTranspose2d)
_KEEP = {torch.ops.aten.convolution.default}


def _keep_convolutions(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _KEEP else CheckpointPolicy.PREFER_RECOMPUTE


def _pointwise(layer: nn.Module) -> bool:
    if isinstance(layer, nn.InstanceNorm2d):
        return not layer.track_running_stats
    return isinstance(layer, _POINTWISE)


def segments(layers) -> list[tuple[int, int, bool]]:
    """``(start, stop, recompute)`` spans covering ``layers`` in order (module notes)."""
    layers = list(layers)
    spans, i = [], 0
    while i < len(layers):
        j = i
        while j < len(layers) and _pointwise(layers[j]):
            j += 1
        if j < len(layers) and j > i and type(layers[j]) in _CONVOLUTIONS:
            j += 1
        if j - i >= 2:
            spans.append((i, j, True))
            i = j
        else:  # a lone layer: nothing to gain
            spans.append((i, i + 1, False))
            i += 1
    return spans


def _run(layers, x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        x = layer(x)
    return x


def run_recomputing_pointwise(layers, x: torch.Tensor, spans: list[tuple[int, int, bool]] | None = None) -> torch.Tensor:
    """``layers`` applied to ``x`` in order, keeping only convolution outputs of each pointwise segment
    for backward (module notes). ``spans``: :func:`segments` of ``layers`` (computed when None)."""
    layers = list(layers)
    for start, stop, recompute in spans if spans is not None else segments(layers):
        if recompute:
            x = checkpoint(_run, layers[start:stop], x, use_reentrant=False,
                           context_fn=partial(create_selective_checkpoint_contexts, _keep_convolutions))
        else:
            x = layers[start](x)
    return x
