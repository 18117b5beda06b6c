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

``recompute``: convolutions to recompute as well, whose outputs are then not kept either (a generator's
``recompute_full_resolution``: those at the input's resolution, :func:`full_resolution_convolutions`).
Such a convolution joins the segment around it like a pointwise layer, whatever computes it (the tap
convolution too), so a segment may hold several: the one that ends it, if it is not one of them, is kept.
In pix2pixHD's generator at 256 px these are the 7 x 7 stem and the last transposed convolution (not the
output convolution: nets/generators/pix2pixhd.py): 16 MB each kept for about 1.2 and 2.4 GFLOP of forward
again in backward (issue 24: the peak falls in the perceptual loss's backward, while the whole generator
graph waits).
"""

from functools import partial

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

_POINTWISE = (nn.ReLU, nn.LeakyReLU, nn.ReflectionPad2d, nn.ReplicationPad2d, nn.ZeroPad2d, nn.Identity)
_CONVOLUTIONS = (nn.Conv2d, nn.ConvTranspose2d)
_KEEP = {torch.ops.aten.convolution.default}


def _keep_convolutions(recomputed: frozenset, ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """Keep a convolution's output unless its weight (``args[1]``) is one of ``recomputed``'s (data pointers)."""
    if op in _KEEP and args[1].data_ptr() not in recomputed:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def _pointwise(layer: nn.Module) -> bool:
    if isinstance(layer, nn.InstanceNorm2d):
        return not layer.track_running_stats
    return isinstance(layer, _POINTWISE)


def full_resolution_convolutions(layers) -> list[nn.Module]:
    """The convolutions among ``layers`` (a generator's sequence, from its input on) whose output is at the
    input's resolution: the resolution followed through each stride-2 convolution (halves it) and
    stride-2 transposed convolution (doubles it). Convolutions inside other layers (residual blocks) are
    not counted; a layer that may change the resolution otherwise (one holding a resampling or a strided
    convolution, such as a resize-then-convolve upsampling) ends the walk: what follows it is not known
    to be at full resolution."""
    found, level = [], 0
    for layer in layers:
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
            stride = layer.stride[0]
            if layer.stride[0] != layer.stride[1] or stride & (stride - 1):
                break
            shift = stride.bit_length() - 1
            level += -shift if isinstance(layer, nn.ConvTranspose2d) else shift
            if level == 0:
                found.append(layer)
        elif any(isinstance(m, nn.Upsample) or (isinstance(m, nn.Conv2d | nn.ConvTranspose2d) and max(m.stride) > 1)
                 for m in layer.modules()):
            break
    return found


def segments(layers, recompute=()) -> list[tuple[int, int, bool]]:
    """``(start, stop, recompute)`` spans covering ``layers`` in order (module notes)."""
    layers = list(layers)
    recompute = {id(layer) for layer in recompute}
    spans, i = [], 0
    while i < len(layers):
        j = i
        while j < len(layers) and (_pointwise(layers[j]) or id(layers[j]) in recompute):
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


def run_recomputing_pointwise(layers, x: torch.Tensor, spans: list[tuple[int, int, bool]] | None = None,
                              recompute=()) -> torch.Tensor:
    """``layers`` applied to ``x`` in order, keeping only convolution outputs of each pointwise segment
    for backward, and not those of the convolutions in ``recompute`` (module notes). ``spans``:
    :func:`segments` of ``layers`` and ``recompute`` (computed when None)."""
    layers = list(layers)
    recomputed = frozenset(layer.weight.data_ptr() for layer in recompute)
    policy = partial(create_selective_checkpoint_contexts, partial(_keep_convolutions, recomputed))
    for start, stop, recompute_span in spans if spans is not None else segments(layers, recompute):
        if recompute_span:
            x = checkpoint(_run, layers[start:stop], x, use_reentrant=False, context_fn=policy)
        else:
            x = layers[start](x)
    return x
