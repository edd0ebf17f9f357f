"""Build, load and run the C kernels for CPU (`kernels/*_cpu.c`), shared by their wrappers.

Each C file is compiled on first use with the system's C compiler (`$CC`, else cc/gcc/clang),
`-O3 -march=native`, into $HNETBENCH_CACHE/kernels (default ~/.cache/hnetbench/kernels), keyed
by the source and the shared headers, the compiler and this CPU's flags (a cluster node of
another kind compiles its own), under a file lock and written atomically, so runs of a sweep
starting together build once and never load a half-written library. It is loaded with ctypes
(no torch headers).

Without a compiler, or with HNETBENCH_C_KERNELS=off (or a kernel's own switch, such as
HNETBENCH_SCAN=torch for the scan), a library is off: `available()` is False, the reason is
logged once, and the models use their torch code.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

log = logging.getLogger(__name__)
FLAGS = ["-O3", "-march=native", "-shared", "-fPIC", "-std=gnu11"]

_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, pool)
_pool_lock = threading.Lock()


def compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc)
    return next((shutil.which(c) for c in ("cc", "gcc", "clang") if shutil.which(c)), None)


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln for ln in f if ln.startswith(("flags", "Features"))), "")
    except OSError:
        return ""


def cache_dir() -> Path:
    from hnetbench.data.corpus import cache_dir as hnetbench_cache  # lazy: no start-up cost

    return hnetbench_cache() / "kernels"


PRECISIONS = {"f32": 32, "f64": 64}  # library suffix -> HNB_PRECISION (cpu_precisions.h)


def build(source: Path, cc: str, precision: str = "f32") -> Path:
    """The compiled library of `source` for one precision ("f32" or "f64": each kernel file
    holds both, and a float32 run never needs the double one) in the cache (built now if it
    is not there yet)."""
    flags = [*FLAGS, f"-DHNB_PRECISION={PRECISIONS[precision]}"]
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    headers = b"".join(h.read_bytes() for h in sorted(source.parent.glob("*.h")))
    key = hashlib.sha256(
        source.read_bytes() + headers + version.encode() + _cpu_flags().encode()
        + " ".join(flags).encode()
    ).hexdigest()[:16]
    out = cache_dir() / f"{source.stem}-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # runs of a sweep start together: one builds (seconds), the others wait for it
    with open(out.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.exists():
            return out
        fd, tmp = tempfile.mkstemp(suffix=".so.tmp", dir=out.parent)
        os.close(fd)
        try:
            r = subprocess.run([cc, *flags, "-o", tmp, str(source)], capture_output=True,
                               text=True, timeout=300)
            if r.returncode:
                raise RuntimeError(f"{cc} failed on {source.name}: {r.stderr.strip()[-500:]}")
            os.replace(tmp, out)  # atomic: nobody loads a half-written library
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return out


class CLibrary:
    """One C file's library, loaded on first use: its float32 functions (what `available()`
    means), the float64 ones built and loaded when a float64 tensor first calls `fn`.
    `declare(lib, suffix, real)` sets the argtypes of one precision's functions; `switch` =
    (environment variable, value) that turns this one kernel off."""

    def __init__(self, source: Path, what: str,
                 declare: Callable[[ctypes.CDLL, str, type], None],
                 switch: tuple[str, str] | None = None) -> None:
        self.source, self.what, self.declare, self.switch = source, what, declare, switch
        self.lib: ctypes.CDLL | None = None
        self.lib64: ctypes.CDLL | None = None
        self.why_not: str | None = None
        self._lock = threading.Lock()

    def _open(self, cc: str, precision: str) -> ctypes.CDLL:
        lib = ctypes.CDLL(str(build(self.source, cc, precision)))
        self.declare(lib, precision, ctypes.c_double if precision == "f64" else ctypes.c_float)
        return lib

    def load(self) -> ctypes.CDLL | None:
        if self.lib is not None or self.why_not is not None:  # decided: no lock per call
            return self.lib
        with self._lock:
            if self.lib is not None or self.why_not is not None:
                return self.lib
            if os.environ.get("HNETBENCH_C_KERNELS", "").lower() == "off":
                self.why_not = "HNETBENCH_C_KERNELS=off"
            elif self.switch and os.environ.get(self.switch[0], "").lower() == self.switch[1]:
                self.why_not = f"{self.switch[0]}={self.switch[1]}"
            elif (cc := compiler()) is None:
                self.why_not = "no C compiler found (set CC, or install gcc)"
            else:
                try:
                    self.lib = self._open(cc, "f32")
                except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                    self.why_not = f"{type(e).__name__}: {e}"
            if self.why_not:
                log.warning("hnetbench: %s in C is off (%s); using torch's", self.what,
                            self.why_not)
            return self.lib

    def available(self) -> bool:
        return self.load() is not None

    def require(self, caller: str) -> None:
        """A one-line RuntimeError naming `caller` unless the library is loaded (callers check
        `available()` first; this is for those who did not)."""
        if self.lib is None:
            raise RuntimeError(f"{caller}: {self.what} in C is not loaded "
                               f"({self.why_not or 'not built'})")

    def fn(self, name: str, dtype: torch.dtype):  # noqa: ANN201 - a ctypes function
        """The C function `name` for this precision (name_f32 or name_f64)."""
        if dtype != torch.float64:
            return getattr(self.lib, f"{name}_f32")
        if self.lib64 is None:
            with self._lock:
                if self.lib64 is None:
                    try:
                        self.lib64 = self._open(compiler() or "cc", "f64")
                    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                        raise RuntimeError(f"{self.what} in C: the float64 library failed to "
                                           f"build or load ({type(e).__name__}: {e})") from None
        return getattr(self.lib64, f"{name}_f64")


def handles(t: torch.Tensor) -> bool:
    """The C kernels take float32 and float64 CPU tensors (other dtypes and devices: torch)."""
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)


def ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def blocks(n: int, size: int) -> int:
    """How many items of `size` rows cover n rows (the last may be short)."""
    return (n + size - 1) // size


def run_items(fn, items: int, *args) -> None:  # noqa: ANN001 - a ctypes function
    """fn(lo, hi, *args) over [0, items), split across torch's intra-op threads (ctypes
    releases the GIL). Items are computed alone, so the split changes no result."""
    global _pool
    n = min(torch.get_num_threads(), items)
    if n <= 1:
        fn(0, items, *args)
        return
    with _pool_lock:
        # a pool made before a fork has no threads in the child (sweeps fork their runs)
        if _pool is None or _pool[0] != os.getpid() or _pool[1] < n:
            _pool = (os.getpid(), n, ThreadPoolExecutor(max_workers=n,
                                                        thread_name_prefix="hnetbench-c"))
        pool = _pool[2]
    cuts = [items * k // n for k in range(n + 1)]
    jobs = [pool.submit(fn, cuts[k], cuts[k + 1], *args) for k in range(n)]
    for j in jobs:
        j.result()
