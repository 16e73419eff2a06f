"""glibc's heap held steady for training: freed memory kept for the next step rather than given
back to the system and faulted in again.

By default glibc tunes its trim and mmap thresholds from what the process freed before, so two
processes doing the same training can differ: on calib-tune's tiny test model the trainer's
process gave back and re-faulted about 32 MB of heap top per step (3,000 page faults per step
and thread) and trained up to 35% slower than the same steps in a process with a different
history (benchmarks/bench_tune.py). ``mallopt(3)`` fixes both thresholds for the rest of the
process; environment settings (``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``) are
left to win.
"""

from __future__ import annotations

import ctypes
import os
import platform

#: Free heap top kept rather than given back to the system (glibc's ``M_TRIM_THRESHOLD``).
KEPT_HEAP_TOP = 256 << 20
#: Blocks up to this size come from the heap, not from their own ``mmap`` (``M_MMAP_THRESHOLD``;
#: 32 MB is the largest glibc accepts on 64-bit systems).
HEAP_BLOCK_LIMIT = 32 << 20
#: The pin: per environment variable glibc reads at start (which, when set, wins over the pin),
#: the ``mallopt`` parameter number (glibc's malloc.h) and the value.
PIN = {
    "MALLOC_TRIM_THRESHOLD_": (-1, KEPT_HEAP_TOP),
    "MALLOC_MMAP_THRESHOLD_": (-3, HEAP_BLOCK_LIMIT),
}


def pin_glibc_heap() -> None:
    """Fix glibc's trim threshold at ``KEPT_HEAP_TOP`` and its mmap threshold at
    ``HEAP_BLOCK_LIMIT`` for the rest of this process, each unless its environment variable is
    set. Does nothing off glibc."""
    if platform.libc_ver()[0] != "glibc":
        return
    mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    for variable, (parameter, value) in PIN.items():
        if variable not in os.environ:
            mallopt(parameter, value)
