"""The Mamba-2 SSD scan as a C loop on CPU (`ssd_cpu.c`), compiled on first use.

The scan's plain recurrence, S_t = a_t S_{t-1} + B_t (dt_t x_t)^T, y_t = S_t^T C_t, run one
(row, head) at a time with the state in L1: at the byte-level widths H-Nets use (P, N <= 64)
it is several times faster than the chunked matmul form (`models.ssd.ssd_scan_torch`), which
spends its time on Q x Q matrices and passes over (b, L, H, P) temporaries. The reference it is
tested against is `models.mamba2.ssd_naive` (float64, forward and backward, with resets).

The C file is compiled with the system's C compiler (`$CC`, else cc/gcc/clang) into
$HNETBENCH_CACHE/kernels (default ~/.cache/hnetbench/kernels), keyed by the source, the
compiler and this CPU's flags (`-march=native`: a cluster node of another kind compiles its
own), written atomically so that runs of a sweep starting together never read a half-written
library. It is loaded with ctypes (no torch headers; ~5 s to build) and registered as the
torch op `hnetbench::ssd_scan_cpu` with its autograd, so `torch.compile` sees one opaque op.
Without a compiler, or with HNETBENCH_SCAN=torch, `available()` is False and the models use
the torch scan (the reason is logged once).
The forward's (row, head) items and the backward's (row, group) items are split over torch's
intra-op threads (ctypes releases the GIL); each item is computed alone, in a fixed order, so
the result does not depend on the number of threads.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("ssd_cpu.c")
FLAGS = ["-O3", "-march=native", "-shared", "-fPIC", "-std=gnu11"]
BLOCK = 64  # positions between the forward's saved states (the backward recomputes a block)

_lib: ctypes.CDLL | None = None
_why_not: str | None = None
_lock = threading.Lock()
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, pool)


def _compiler() -> str | None:
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


def _build(cc: str) -> Path:
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(
        SOURCE.read_bytes() + version.encode() + _cpu_flags().encode() + " ".join(FLAGS).encode()
    ).hexdigest()[:16]
    out = cache_dir() / f"ssd_cpu-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # runs of a sweep start together: one builds (~5 s), the others wait for it
    with open(out.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.exists():
            return out
        fd, tmp = tempfile.mkstemp(suffix=".so.tmp", dir=out.parent)
        os.close(fd)
        try:
            r = subprocess.run([cc, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True,
                               text=True, timeout=300)
            if r.returncode:
                raise RuntimeError(f"{cc} failed on {SOURCE.name}: {r.stderr.strip()[-500:]}")
            os.replace(tmp, out)  # atomic: nobody loads a half-written library
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return out


def _load() -> ctypes.CDLL | None:
    global _lib, _why_not
    with _lock:
        if _lib is not None or _why_not is not None:
            return _lib
        if os.environ.get("HNETBENCH_SCAN", "").lower() == "torch":
            _why_not = "HNETBENCH_SCAN=torch"
            return None
        cc = _compiler()
        if cc is None:
            _why_not = "no C compiler found (set CC, or install gcc)"
        else:
            try:
                lib = ctypes.CDLL(str(_build(cc)))
                i64, ptr = ctypes.c_int64, ctypes.c_void_p
                for suffix in ("f32", "f64"):
                    getattr(lib, f"ssd_fwd_{suffix}").argtypes = [i64] * 8 + [ptr] * 5 + [
                        i64, i64] + [ptr] * 5
                    getattr(lib, f"ssd_bwd_{suffix}").argtypes = [i64] * 8 + [ptr] * 5 + [
                        i64, i64] + [ptr] * 11
                _lib = lib
            except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                _why_not = f"{type(e).__name__}: {e}"
        if _why_not:
            log.warning("hnetbench: the C scan is off (%s); using the torch scan", _why_not)
        return _lib


def available() -> bool:
    """True when the C scan is built and loaded (compiles it on the first call)."""
    return _load() is not None


def why_not() -> str | None:
    """Why the C scan is off (None when it is on, or not tried yet)."""
    return _why_not


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _run(fn, items: int, *args) -> None:  # noqa: ANN001 - a ctypes function
    """fn(lo, hi, *args) over [0, items), split across torch's intra-op threads."""
    global _pool
    n = min(torch.get_num_threads(), items)
    if n <= 1:
        fn(0, items, *args)
        return
    # a pool made before a fork has no threads in the child (sweeps fork their runs)
    if _pool is None or _pool[0] != os.getpid() or _pool[1] < n:
        _pool = (os.getpid(), n, ThreadPoolExecutor(max_workers=n,
                                                    thread_name_prefix="hnetbench-ssd"))
    pool = _pool[2]
    cuts = [items * k // n for k in range(n + 1)]
    jobs = [pool.submit(fn, cuts[k], cuts[k + 1], *args) for k in range(n)]
    for j in jobs:
        j.result()


def _shapes(x: torch.Tensor, B: torch.Tensor) -> tuple[int, int, int, int, int, int, int]:
    b, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    return b, L, H, P, G, N, (L + BLOCK - 1) // BLOCK


def _bc_ok(t: torch.Tensor) -> bool:
    """B and C are read with strides (sb, sl, N, 1): true for contiguous ones and for views
    of one projection's output (the mixer's B|C)."""
    return t.stride(3) == 1 and t.stride(2) == t.shape[3]


def _layout(x, dt, la, B, C, doc, D):  # noqa: ANN001, ANN202
    """The layouts the C code reads: contiguous tensors, B and C with one set of strides
    (sb, sl, N, 1). Callers keep the results in locals while the C code runs (a pointer into
    a temporary would dangle once it is freed)."""
    if not (_bc_ok(B) and _bc_ok(C) and B.stride()[:2] == C.stride()[:2]):
        B, C = B.contiguous(), C.contiguous()
    return x.contiguous(), dt.contiguous(), la.contiguous(), B, C, doc.contiguous(), \
        D.contiguous()


@torch.library.custom_op("hnetbench::ssd_scan_cpu", mutates_args=())
def _fwd(x: torch.Tensor, dt: torch.Tensor, la: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
         doc: torch.Tensor, D: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, dt, la, B, C, doc, D = _layout(x, dt, la, B, C, doc, D)
    b, L, H, P, G, N, nb = _shapes(x, B)
    y = torch.empty_like(x)
    final = x.new_empty(b, H, P, N)
    ckpt = x.new_empty(b, H, nb, N, P)
    fn = getattr(_lib, "ssd_fwd_f64" if x.dtype == torch.float64 else "ssd_fwd_f32")
    _run(fn, b * H, L, H, P, G, N, BLOCK, _ptr(x), _ptr(dt), _ptr(la), _ptr(B), _ptr(C),
         B.stride(0), B.stride(1), _ptr(doc), _ptr(y), _ptr(final), _ptr(ckpt), _ptr(D))
    return y, final, ckpt


@_fwd.register_fake
def _(x, dt, la, B, C, doc, D):  # noqa: ANN001, ANN202
    b, L, H, P, G, N, nb = _shapes(x, B)
    return torch.empty_like(x), x.new_empty(b, H, P, N), x.new_empty(b, H, nb, N, P)


@torch.library.custom_op("hnetbench::ssd_scan_cpu_backward", mutates_args=())
def _bwd(x: torch.Tensor, dt: torch.Tensor, la: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
         doc: torch.Tensor, D: torch.Tensor, ckpt: torch.Tensor, dy: torch.Tensor,
         dfinal: torch.Tensor | None
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                    torch.Tensor]:
    x, dt, la, B, C, doc, D = _layout(x, dt, la, B, C, doc, D)
    ckpt = ckpt.contiguous()
    b, L, H, P, G, N, nb = _shapes(x, B)
    dx, ddt, dla = torch.empty_like(x), torch.empty_like(dt), torch.empty_like(la)
    dB, dC, dD = x.new_empty(b, L, G, N), x.new_empty(b, L, G, N), x.new_empty(b, H)
    # held in locals: a pointer into a temporary would dangle once the temporary is freed
    dy = dy.contiguous()
    dfinal = None if dfinal is None else dfinal.contiguous()
    fn = getattr(_lib, "ssd_bwd_f64" if x.dtype == torch.float64 else "ssd_bwd_f32")
    # items: (row, group) pairs, so that a group's heads add into its dB, dC in order
    _run(fn, b * G, L, H, P, G, N, BLOCK, _ptr(x), _ptr(dt), _ptr(la), _ptr(B), _ptr(C),
         B.stride(0), B.stride(1), _ptr(doc), _ptr(ckpt), _ptr(dy), _ptr(dfinal),
         _ptr(dx), _ptr(ddt), _ptr(dla), _ptr(dB), _ptr(dC), _ptr(D), _ptr(dD))
    return dx, ddt, dla, dB, dC, dD.sum(0)


@_bwd.register_fake
def _(x, dt, la, B, C, doc, D, ckpt, dy, dfinal):  # noqa: ANN001, ANN202
    return (torch.empty_like(x), torch.empty_like(dt), torch.empty_like(la),
            torch.empty_like(B, memory_format=torch.contiguous_format),
            torch.empty_like(C, memory_format=torch.contiguous_format), torch.empty_like(D))


def _setup(ctx, inputs, output) -> None:  # noqa: ANN001
    x, dt, la, B, C, doc, D = inputs
    ctx.save_for_backward(x, dt, la, B, C, doc, D, output[2])
    ctx.mark_non_differentiable(output[2])  # the saved states: an output only to be saved


def _backward(ctx, dy, dfinal, _dckpt):  # noqa: ANN001, ANN202
    x, dt, la, B, C, doc, D, ckpt = ctx.saved_tensors
    if dy is None:
        dy = torch.zeros_like(x)
    dx, ddt, dla, dB, dC, dD = _bwd(x, dt, la, B, C, doc, D, ckpt, dy, dfinal)
    return dx, ddt, dla, dB, dC, None, dD


_fwd.register_autograd(_backward, setup_context=_setup)


def ssd_scan_cpu(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                 C: torch.Tensor, doc: torch.Tensor | None = None, D: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """x (b,L,H,P), dt (b,L,H), A (H,), B/C (b,L,G,N), doc (b,L) nondecreasing document ids,
    D (H,) an optional skip (y += D_h x, in the same pass); float32 or float64 CPU tensors.
    Returns (y (b,L,H,P), final state (b,H,P,N)), equal to `ssd_naive` (+ D x) up to
    rounding. Call `available()` first."""
    if _lib is None:
        raise RuntimeError(f"ssd_scan_cpu: the C scan is not loaded ({_why_not or 'not built'})")
    b, L = x.shape[:2]
    if doc is None:
        doc = torch.zeros(b, L, dtype=torch.long, device=x.device)
    dtype = x.dtype
    dt, B, C = dt.to(dtype), B.to(dtype), C.to(dtype)
    D = x.new_zeros(x.shape[2]) if D is None else D.to(dtype)
    y, final, _ = _fwd(x, dt, dt * A.to(dtype), B, C, doc.to(torch.long), D)
    return y, final
