"""The host (CPU) memory allocator of a training process: keep freed memory for the next allocation
(``host_allocator.keep_freed``, issue 24; off by default).

Why: a training iteration frees and re-allocates the same large tensors every step (activations, and with
``model.step_in_backward`` each weight's gradient, 38 MB per 1024-channel 3 x 3 convolution of the
pix2pixHD generator). glibc's malloc serves a block of 32 MB or more (and, as its threshold adapts, any
block above the largest it has freed) by ``mmap`` and gives it back by ``munmap`` when freed, and returns
the top of its heap to the kernel when more than a threshold of it is free; memory obtained afresh is
zeroed page by page on first touch. A benchmark process of pix2pixHD at 256 px (start-up and eight
iterations) took 1.9-2.3 million minor page faults and 4.5-4.7 s of system time; with freed memory kept
(no ``mmap`` for large blocks, no trimming of the heap) 0.9 million and 2.2-2.4 s,
and the iteration 6.74 and 6.34 s
against 7.56 and 6.99 s (two interleaved pairs of processes, every lever on; the peak resident memory the
same, 3804-3860 MB, because the heap's high-water mark is the peak either way). The README's
performance section has the side-by-side numbers.

It changes only where freed memory goes, never what is computed. The settings are glibc's ``mallopt``
(M_MMAP_MAX = 0, M_TRIM_THRESHOLD = the largest int: 2 GB of free heap top before any is returned) and
hold for the rest of the process (later allocations; blocks already mapped are unmapped when freed, as
before). On a C library without ``mallopt`` (macOS, musl) nothing changes and a warning says so. GPU
memory is not touched (its caching allocator already keeps freed blocks); the host side of a GPU run
allocates little, so the switch is harmless there.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

#: glibc malloc.h parameter numbers
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: mallopt takes a C int: the largest trim threshold it accepts (2 GB)
LARGEST_INT = 2**31 - 1


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for the process's next allocations (module notes); returns
    whether it took effect (False, with a warning, where the C library has no ``mallopt``)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        log.warning("host_allocator.keep_freed=true: this C library has no mallopt (glibc's); the allocator is unchanged")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, LARGEST_INT))
    if not done:
        log.warning("host_allocator.keep_freed=true: mallopt refused the setting; the allocator is unchanged")
    return done


def configure_host_allocator(settings) -> bool:
    """Apply the run config's ``host_allocator`` node (None or missing: nothing); returns whether freed
    memory is now kept."""
    if settings is None or not settings.get("keep_freed", False):
        return False
    return keep_freed_memory()
