"""Process settings that make CPU inference fast: glibc's allocator keeps freed memory.

A DenseNet forward pass allocates and frees tens of activation buffers of several MiB each.
glibc serves every allocation above its mmap threshold (128 KiB, adapting upwards only to
the largest block freed so far) with a fresh ``mmap`` and returns it with ``munmap`` when
freed, so each buffer is faulted in page by page, zero-filled by the kernel, on every
batch: a large share of a CPU forward pass goes to the kernel (``python
benchmarks/bench_score.py`` prints the forward pass with and without this). Raising the mmap
and trim thresholds keeps those buffers in the heap for the next batch instead; resident
memory settles at the high-water mark of one batch and stays there. This is what the usual
advice to run CPU inference under jemalloc or tcmalloc achieves, without a preload.

:func:`retain_freed_memory` is called by the ``medcam`` command and the reviewer app for
their own process. Library users call it themselves if they want it; set
``MEDCAM_MALLOC=system`` to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["retain_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30  # 1 GiB: larger than any activation of the bundled model at any batch size used here
_FALLBACK = 32 << 20  # the largest mmap threshold that glibc before 2.35 accepts


def retain_freed_memory() -> bool:
    """Keep freed memory in this process's heap for reuse (glibc only); True when applied.

    Does nothing, and returns False, when ``MEDCAM_MALLOC=system`` is set or the C library is
    not glibc (musl, macOS, Windows). Settings are per process and inherited by forked
    workers.
    """
    if os.environ.get("MEDCAM_MALLOC", "").lower() == "system":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - present only in glibc
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    if not mallopt(_M_MMAP_THRESHOLD, _THRESHOLD) and not mallopt(_M_MMAP_THRESHOLD, _FALLBACK):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, _THRESHOLD))
