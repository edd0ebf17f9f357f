"""The Mamba-2 SSD scan as a C loop on CPU (`ssd_cpu.c`), compiled on first use.

The scan's plain recurrence, S_t = a_t S_{t-1} + B_t (dt_t x_t)^T, y_t = S_t^T C_t, run one
(row, head) at a time with the state in L1: at the byte-level widths H-Nets use (P, N <= 64)
it is several times faster than the chunked matmul form (`models.ssd.ssd_scan_torch`), which
spends its time on Q x Q matrices and passes over (b, L, H, P) temporaries. The reference it is
tested against is `models.mamba2.ssd_naive` (float64, forward and backward, with resets).

It is built and loaded by `kernels.cpu_build` (compiled on first use, ~5 s, cached) and
registered as the torch op `hnetbench::ssd_scan_cpu` with its autograd, so `torch.compile`
sees one opaque op. Without a compiler, or with HNETBENCH_SCAN=torch (or
HNETBENCH_C_KERNELS=off), `available()` is False and the models use the torch scan.
The forward's (row, head) items and the backward's (row, group) items are split over torch's
intra-op threads (ctypes releases the GIL); each item is computed alone, in a fixed order, so
the result does not depend on the number of threads.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from hnetbench.kernels.cpu_build import CLibrary
from hnetbench.kernels.cpu_build import ptr as _ptr
from hnetbench.kernels.cpu_build import run_items as _run
from hnetbench.kernels.cpu_ops import kernel_op

SOURCE = Path(__file__).with_name("ssd_cpu.c")
BLOCK = 64  # positions between the forward's saved states (the backward recomputes a block)


def _declare(lib: ctypes.CDLL, suffix: str, real: type) -> None:
    """Argument types of the library's functions of one precision (f32: float, f64:
    double)."""
    i64, p = ctypes.c_int64, ctypes.c_void_p
    getattr(lib, f"ssd_fwd_{suffix}").argtypes = [i64] * 8 + [p] * 5 + [i64, i64] + [p] * 5
    getattr(lib, f"ssd_bwd_{suffix}").argtypes = [i64] * 8 + [p] * 5 + [i64, i64] + [p] * 11


LIBRARY = CLibrary(SOURCE, "the SSD scan", _declare, switch=("HNETBENCH_SCAN", "torch"))


def available() -> bool:
    """True when the C scan is built and loaded (compiles it on the first call)."""
    return LIBRARY.available()


def why_not() -> str | None:
    """Why the C scan is off (None when it is on, or not tried yet)."""
    return LIBRARY.why_not


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


def _fwd(x: torch.Tensor, dt: torch.Tensor, la: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
         doc: torch.Tensor, D: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, dt, la, B, C, doc, D = _layout(x, dt, la, B, C, doc, D)
    b, L, H, P, G, N, nb = _shapes(x, B)
    y = torch.empty_like(x)
    final = x.new_empty(b, H, P, N)
    ckpt = x.new_empty(b, H, nb, N, P)
    a = la.exp()  # the decays in one vectorised pass (see ssd_cpu.c)
    fn = LIBRARY.fn("ssd_fwd", x.dtype)
    _run(fn, b * H, L, H, P, G, N, BLOCK, _ptr(x), _ptr(dt), _ptr(a), _ptr(B), _ptr(C),
         B.stride(0), B.stride(1), _ptr(doc), _ptr(y), _ptr(final), _ptr(ckpt), _ptr(D))
    return y, final, ckpt


def _fwd_fake(x, dt, la, B, C, doc, D):  # noqa: ANN001, ANN202
    b, L, H, P, G, N, nb = _shapes(x, B)
    return torch.empty_like(x), x.new_empty(b, H, P, N), x.new_empty(b, H, nb, N, P)


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
    a = la.exp()
    fn = LIBRARY.fn("ssd_bwd", x.dtype)
    # items: (row, group) pairs, so that a group's heads add into its dB, dC in order
    _run(fn, b * G, L, H, P, G, N, BLOCK, _ptr(x), _ptr(dt), _ptr(a), _ptr(B), _ptr(C),
         B.stride(0), B.stride(1), _ptr(doc), _ptr(ckpt), _ptr(dy), _ptr(dfinal),
         _ptr(dx), _ptr(ddt), _ptr(dla), _ptr(dB), _ptr(dC), _ptr(D), _ptr(dD))
    return dx, ddt, dla, dB, dC, dD.sum(0)


def _bwd_fake(x, dt, la, B, C, doc, D, ckpt, dy, dfinal):  # noqa: ANN001, ANN202
    return (torch.empty_like(x), torch.empty_like(dt), torch.empty_like(la),
            torch.empty_like(B, memory_format=torch.contiguous_format),
            torch.empty_like(C, memory_format=torch.contiguous_format), torch.empty_like(D))


def _setup(ctx, inputs, output) -> None:  # noqa: ANN001
    x, dt, la, B, C, doc, D = inputs
    ctx.save_for_backward(x, dt, la, B, C, doc, D, output[2])
    ctx.mark_non_differentiable(output[2])  # the saved states: an output only to be saved


def _backward(ctx, kernel, dy, dfinal, _dckpt):  # noqa: ANN001, ANN202
    x, dt, la, B, C, doc, D, ckpt = ctx.saved_tensors
    if dy is None:
        dy = torch.zeros_like(x)
    dx, ddt, dla, dB, dC, dD = kernel(x, dt, la, B, C, doc, D, ckpt, dy, dfinal)
    return dx, ddt, dla, dB, dC, None, dD


_op = kernel_op("ssd_scan_cpu", _fwd, _fwd_fake, _bwd, _bwd_fake, _setup, _backward)


def ssd_scan_cpu(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                 C: torch.Tensor, doc: torch.Tensor | None = None, D: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """x (b,L,H,P), dt (b,L,H), A (H,), B/C (b,L,G,N), doc (b,L) nondecreasing document ids,
    D (H,) an optional skip (y += D_h x, in the same pass); float32 or float64 CPU tensors.
    Returns (y (b,L,H,P), final state (b,H,P,N)), equal to `ssd_naive` (+ D x) up to
    rounding. Call `available()` first."""
    LIBRARY.require("ssd_scan_cpu")
    b, L = x.shape[:2]
    if doc is None:
        doc = torch.zeros(b, L, dtype=torch.long, device=x.device)
    dtype = x.dtype
    dt, B, C = dt.to(dtype), B.to(dtype), C.to(dtype)
    D = x.new_zeros(x.shape[2]) if D is None else D.to(dtype)
    y, final, _ = _op(x, dt, dt * A.to(dtype), B, C, doc.to(torch.long), D)
    return y, final
