"""Reused scratch buffers for the hand-written convolutions (nets/blocks/gemm_conv.py, winograd_conv.py).

Why: those convolutions need large temporaries on every call (9.4 MB of im2col columns, 8 MB of
transformed weights per block of channels at pix2pixHD's 1024-channel bottleneck). A fresh allocation per
call left the CPU allocator holding about 200 MB more at the peak (measured, issue 24), and a fresh 64 MB
buffer measured 40 ms to allocate and fill on this machine against 3.5 ms to refill a reused one (page
faults); one buffer per slot, device and dtype, grown and never shrunk, holds each only once.
"""

from __future__ import annotations

import torch

_WORKSPACE: dict = {}


def workspace(slot: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """A reused buffer of ``shape`` for ``slot`` on ``like``'s device and dtype (contents undefined).

    Two calls with the same slot share memory: a caller uses a slot only while it is the slot's sole user
    (the autograd functions here use theirs within one forward or one backward)."""
    numel = 1
    for size in shape:
        numel *= size
    key = (slot, like.device, like.dtype)
    buffer = _WORKSPACE.get(key)
    if buffer is None or buffer.numel() < numel:
        buffer = _WORKSPACE[key] = torch.empty(numel, device=like.device, dtype=like.dtype)
    return buffer[:numel].view(shape)
