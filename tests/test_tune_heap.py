"""calib-tune's glibc heap pin: blocks below the limit come from the heap and stay there when
freed; the environment's own settings win. Each case in a fresh process (the pin is for the
rest of the process), observed through glibc's ``mallinfo2``."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

BLOCK = 1 << 20  # above glibc's default mmap threshold (128 kB), below the pin's limit
BLOCKS = 64
PROBE = f"""
import ctypes, json, sys
from calib_tasks.tune.heap import pin_glibc_heap

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "pin":
    pin_glibc_heap()
before = libc.mallinfo2()
blocks = [libc.malloc({BLOCK}) for _ in range({BLOCKS})]
during = libc.mallinfo2()
for block in blocks:
    libc.free(block)
after = libc.mallinfo2()
mmapped, kept = during.hblkhd - before.hblkhd, after.arena - before.arena
print(json.dumps({{"mmapped": mmapped, "heap_kept": kept}}))
"""


def probe(mode: str, **env: str) -> dict[str, int]:
    """Allocate and free ``BLOCKS`` blocks of ``BLOCK`` bytes in a fresh process (``mode``
    "pin" or "as is"): the bytes they took by ``mmap`` and the heap kept after they were freed."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env={**environment, **env},
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout)


def test_pinned_blocks_come_from_the_heap_and_stay_there_when_freed() -> None:
    pinned = probe("pin")
    assert pinned["mmapped"] == 0
    assert pinned["heap_kept"] >= BLOCKS * BLOCK


def test_as_is_glibc_maps_the_blocks_or_gives_the_heap_back() -> None:
    as_is = probe("as is")
    assert as_is["mmapped"] >= BLOCKS * BLOCK or as_is["heap_kept"] < BLOCKS * BLOCK


def test_the_environment_settings_win_over_the_pin() -> None:
    pinned = probe("pin", MALLOC_MMAP_THRESHOLD_=str(64 << 10))
    assert pinned["mmapped"] >= BLOCKS * BLOCK
