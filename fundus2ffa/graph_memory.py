"""Bytes autograd holds for backward: the activations of the graphs still alive.

Used with ``torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack)``. On CPU there is no
allocator statistic like ``torch.cuda.max_memory_allocated``, and the process RSS mixes weights,
optimiser states and allocator caching; the saved tensors are what grows with a graph that outlives its
window (Fundus2Video's autoregressive loop, reference_spec section 4.6), so they are counted directly:
every tensor saved for backward adds its bytes until it is freed.
"""

import weakref


class _Holder:
    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor):
        self.tensor = tensor


class SavedTensorMeter:
    """``live``: bytes saved for backward and not yet freed; ``peak``: the most at any time."""

    def __init__(self):
        self.live = 0
        self.peak = 0

    def pack(self, tensor):
        size = tensor.numel() * tensor.element_size()
        self.live += size
        self.peak = max(self.peak, self.live)
        holder = _Holder(tensor)
        weakref.finalize(holder, self._release, size)
        return holder

    def _release(self, size):
        self.live -= size

    @staticmethod
    def unpack(holder):
        return holder.tensor
