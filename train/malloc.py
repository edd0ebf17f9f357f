"""Keep freed memory in the process on CPU, instead of handing it back to the kernel.

A CPU training step allocates and frees the same tensor sizes every step. glibc serves blocks
above its mmap threshold (128 KiB at first, raised as such blocks are freed) with fresh
mappings and returns them at free, and trims the top of its heap above 128 KiB: the next step
faults the same memory back in, page by page, each page zeroed by the kernel. Measured on a
2-stage H-Net at cpu-tiny: 4-10 thousand page faults and 7-16 ms of system time per ~270 ms
step; with the thresholds raised, ~1,800 faults and 3-5 ms, the same peak memory
(`benchmarks/malloc_cpu.py`). Nothing changes in the numbers: only where the memory comes from.

`HNETBENCH_MALLOC=default` leaves the allocator as it is. Other C libraries (macOS, musl)
without glibc's `mallopt` are left alone.
"""

from __future__ import annotations

import ctypes
import os

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (and the processes it forks).
    Returns True when they were set (now or by an earlier call)."""
    global _done
    if _done:
        return True
    if os.environ.get("HNETBENCH_MALLOC", "") == "default":
        return False
    try:  # the process's own symbols: no library search (find_library runs ldconfig)
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl's is a no-op)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # blocks up to 1 GiB from the heap (glibc before 2.26 caps this at 32 MiB)
    ok = mallopt(M_MMAP_THRESHOLD, 1 << 30) or mallopt(M_MMAP_THRESHOLD, 32 << 20)
    ok = (ok and mallopt(M_TRIM_THRESHOLD, 1 << 30)  # keep up to 1 GiB of free heap top
          and mallopt(M_TOP_PAD, 64 << 20))  # grow the heap 64 MiB at a time
    _done = bool(ok)
    return _done
