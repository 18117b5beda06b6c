"""The host (CPU) memory allocator of a training process: keep freed memory for the next allocation
(``host_allocator.keep_freed``, issue 24; off by default).

Why: a training iteration frees and re-allocates the same large tensors every step (activations, and with
``model.step_in_backward`` each weight's gradient, 38 MB per 1024-channel 3 x 3 convolution of the
pix2pixHD generator). glibc's malloc serves a block of 32 MB or more (and, as its threshold adapts, any
block above the largest it has freed) by ``mmap`` and gives it back by ``munmap`` when freed, and returns
the top of its heap to the kernel when more than a threshold of it is free; memory obtained afresh is
zeroed page by page on first touch. A benchmark process of pix2pixHD at 256 px (start-up and eight
iterations) took 1.9-2.3 million minor page faults and 4.5-4.7 s of system time; with freed memory kept
(no ``mmap`` for large blocks, no trimming of the heap) 0.9 million and 2.2-2.4 s, and the iteration
6.74 and 6.34 s against 7.56 and 6.99 s (two interleaved pairs of processes, every lever on; the peak resident memory the
same, 3804-3860 MB, because the heap's high-water mark is the peak either way). The README's
performance section has the side-by-side numbers.

It changes only where freed memory goes, never what is computed. The settings are glibc's ``mallopt``
(M_MMAP_MAX = 0, M_TRIM_THRESHOLD = the largest int: 2 GB of free heap top before any is returned) and
hold for the rest of the process (later allocations; blocks already mapped are unmapped when freed, as
before). On a C library without ``mallopt`` (macOS, musl) nothing changes and a warning says so. GPU
memory is not touched (its caching allocator already keeps freed blocks); the host side of a GPU run
allocates little, so the switch is harmless there.

``host_allocator.library`` (null by default): the malloc library the process runs on, tcmalloc or jemalloc
instead of the C library's own. A malloc is chosen when a process starts, so it is preloaded by the
command (``LD_PRELOAD=$(python -m fundus2ffa.host_allocator tcmalloc) python -m fundus2ffa.run ...``, as
PyTorch's own CPU launcher ``torch.backends.xeon.run_cpu --enable-tcmalloc`` does); the setting makes the
run check that it got it, because the dynamic loader ignores a preload it cannot find with no more than a
line on stderr. Why tcmalloc (gperftools' tcmalloc_minimal): it serves large blocks from a page heap that
keeps freed spans, so a step's tensors are not faulted in afresh, and it packs them so that the heap holds
little free memory at the peak. pix2pixHD at 256 px, every lever and the lean backward, 3 interleaved
rounds: peak 3476 MB against 3862 on glibc with ``keep_freed``, and at that peak 2757 MB allocated in a
heap of 2816 MB; the numbers beside the reference's are in the README's performance section. jemalloc
is accepted too (its default returns freed pages within seconds: 6.3 million page faults in the same
process against 0.84 million with tcmalloc).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from pathlib import Path

from fundus2ffa.errors import ConfigError

log = logging.getLogger(__name__)

#: glibc malloc.h parameter numbers
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: mallopt takes a C int: the largest trim threshold it accepts (2 GB)
LARGEST_INT = 2**31 - 1
#: malloc libraries a process can be started with: the symbol only that library defines, its file names,
#: and how to install it
LIBRARIES = {
    "tcmalloc": ("MallocExtension_GetNumericProperty", ("libtcmalloc_minimal.so*", "libtcmalloc.so*"),
                 "Debian/Ubuntu: apt-get install libtcmalloc-minimal4; conda: conda install -c conda-forge gperftools"),
    "jemalloc": ("mallctl", ("libjemalloc.so*",), "Debian/Ubuntu: apt-get install libjemalloc2; conda: conda install -c conda-forge jemalloc"),
}
#: what ``loaded_library`` calls the C library's own malloc (glibc's on Linux)
SYSTEM = "system"


def loaded_library() -> str:
    """The malloc this process runs on: ``tcmalloc``, ``jemalloc`` or ``system`` (the C library's own)."""
    process = ctypes.CDLL(None)
    for name, (symbol, _, _) in LIBRARIES.items():
        if hasattr(process, symbol):
            return name
    return SYSTEM


def find_library(name: str) -> str | None:
    """Where the malloc library ``name`` is installed, for LD_PRELOAD: a file in this Python environment's
    lib folder (conda's gperftools / jemalloc) or the system's, else the name the dynamic loader's cache
    knows it by; None where it is not installed."""
    if name not in LIBRARIES:
        raise ConfigError(f"host_allocator.library must be null, {SYSTEM}, {' or '.join(LIBRARIES)}, got {name!r}")
    _, patterns, _ = LIBRARIES[name]
    folders = [Path(sys.prefix) / "lib", Path("/usr/local/lib"), Path("/usr/lib/x86_64-linux-gnu"),
               Path("/usr/lib/aarch64-linux-gnu"), Path("/usr/lib64"), Path("/usr/lib")]
    for folder in folders:
        for pattern in patterns:
            found = sorted(folder.glob(pattern), key=lambda path: len(path.name))
            if found:
                return str(found[0])
    for pattern in patterns:
        soname = ctypes.util.find_library(pattern.split(".so")[0].removeprefix("lib"))
        if soname:
            return soname
    return None


def check_library(name: str | None) -> str:
    """The malloc this process runs on; raises ConfigError naming the command line's fix where
    ``host_allocator.library`` asks for another one (None: no check)."""
    loaded = loaded_library()
    if name is None or name == loaded:
        return loaded
    if name == SYSTEM:
        raise ConfigError(f"host_allocator.library=system, but this process runs on {loaded} (LD_PRELOAD={os.environ.get('LD_PRELOAD', '')}); "
                          "start it without that LD_PRELOAD, or set host_allocator.library to null or " + loaded)
    path = find_library(name)
    if path is None:
        raise ConfigError(f"host_allocator.library={name}, but no {name} library is installed here ({LIBRARIES[name][2]}); "
                          "or set host_allocator.library=null to run on the C library's malloc")
    raise ConfigError(f"host_allocator.library={name}, but this process runs on {loaded} malloc: a malloc library is "
                      f"chosen when the process starts. Start the command with LD_PRELOAD={path} in front "
                      f"(LD_PRELOAD=$(python -m fundus2ffa.host_allocator {name}) python -m fundus2ffa.run ...)")


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
    """Apply the run config's ``host_allocator`` node (None or missing: nothing): check the malloc library
    (``library``), then keep freed memory (``keep_freed``, glibc's setting); returns whether freed memory
    is now kept by that setting."""
    if settings is None:
        return False
    library = check_library(settings.get("library"))
    log.info("host allocator: %s malloc%s", library, " (LD_PRELOAD)" if library != SYSTEM else "")
    if not settings.get("keep_freed", False):
        return False
    if library != SYSTEM:
        log.warning("host_allocator.keep_freed=true is glibc malloc's setting; this process runs on %s, which keeps "
                    "freed memory its own way: nothing changed", library)
        return False
    return keep_freed_memory()


def main(argv: list[str] | None = None) -> int:
    """``python -m fundus2ffa.host_allocator tcmalloc|jemalloc``: print where the library is installed, for
    ``LD_PRELOAD=$(...)``; exit 2 with how to install it where it is not."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fundus2ffa.host_allocator",
                                     description="Print the path of a malloc library to preload (LD_PRELOAD) for a run.")
    parser.add_argument("library", choices=sorted(LIBRARIES))
    args = parser.parse_args(argv)
    path = find_library(args.library)
    if path is None:
        print(f"no {args.library} library is installed here ({LIBRARIES[args.library][2]})", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
