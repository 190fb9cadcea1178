"""glibc's malloc told to keep image-sized buffers on the heap (service processes only).

A request allocates and frees several image-sized numpy arrays (a 112 px crop in float64
is 300 KB). glibc serves blocks over 128 KB with ``mmap`` and unmaps them on ``free``, so
each such array starts on fresh pages: a 112 px Laplacian took 0.51 ms of page faults and
0.11 ms of arithmetic. Raising the mmap threshold (and the trim threshold, so freed heap
is not handed back at once) keeps those buffers on reused heap pages; identify at 1M faces
was ~1 ms faster per request (docs/benchmarks.md). The cost: each malloc arena may keep
up to the trim threshold of freed memory.

Leaves malloc alone off glibc, or when the operator set glibc's own ``MALLOC_*_``
variables (theirs win).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger(__name__)

# mallopt parameters, from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_OPERATOR_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_buffers_on_heap(mmap_threshold_mb: int) -> bool:
    """Blocks under ``mmap_threshold_mb`` come from the heap, and up to 8x that of freed
    heap is kept per arena; returns whether malloc was changed (0: leave it)."""
    if mmap_threshold_mb <= 0:
        return False
    if any(name in os.environ for name in _OPERATOR_VARIABLES):
        logger.info("malloc left as the MALLOC_*_ environment variables set it")
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False  # not glibc (musl, macOS): nothing to tune
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    threshold = mmap_threshold_mb << 20
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, 8 * threshold)
    )
