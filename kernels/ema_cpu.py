"""The smoothing EMA over chunks as one C pass per row on CPU (`ema_cpu.c`).

zbar_m = p_m z_m + (1 - p_m) zbar_{m-1} (paper Eq. 5), forward and backward written out in C.
The torch path (`kernels.ema.ema_chunked`) runs a two-level blocked scan of ~2 sqrt(M) small
steps, ~1 ms a call each way at the presets' sizes, almost all of it per-step overhead; the C
pass is one sweep over the chunks. Registered as the torch op `hnetbench::ema_cpu` with its
autograd (kernels/cpu_ops.py); built and loaded by `kernels.cpu_build` (off with
HNETBENCH_C_KERNELS=off or HNETBENCH_EMA=torch, or without a compiler: the torch path runs).
Held to `kernels.ema.ema_reference` in float64, forward and backward, by `tests/test_kernels.py`.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from hnetbench.kernels.cpu_build import CLibrary, ptr, run_items
from hnetbench.kernels.cpu_ops import kernel_op
from hnetbench.kernels.ema import _check

SOURCE = Path(__file__).with_name("ema_cpu.c")


def _declare(lib: ctypes.CDLL, suffix: str, real: type) -> None:
    """Argument types of the library's functions of one precision (f32: float, f64:
    double)."""
    i64, p = ctypes.c_int64, ctypes.c_void_p
    getattr(lib, f"ema_fwd_{suffix}").argtypes = [i64] * 4 + [p] * 3
    getattr(lib, f"ema_bwd_{suffix}").argtypes = [i64] * 4 + [p] * 7


LIBRARY = CLibrary(SOURCE, "the chunk EMA", _declare, switch=("HNETBENCH_EMA", "torch"))


def available() -> bool:
    """True when the C EMA is built and loaded (compiles it on the first call)."""
    return LIBRARY.available()


def _fwd(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    x, p = x.contiguous(), p.contiguous()  # held in locals while the C code runs
    B, M, D = x.shape
    h = torch.empty_like(x)
    run_items(LIBRARY.fn("ema_fwd", x.dtype), B, M, D, ptr(x), ptr(p), ptr(h))
    return h


def _fwd_fake(x, p):  # noqa: ANN001, ANN202
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _bwd(x: torch.Tensor, p: torch.Tensor, h: torch.Tensor,
         g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, p, h, g = x.contiguous(), p.contiguous(), h.contiguous(), g.contiguous()
    B, M, D = x.shape
    e = x.new_zeros(B, D)  # each row's adjoint, carried from its last chunk back
    dx, dp = torch.empty_like(x), torch.empty_like(p)
    run_items(LIBRARY.fn("ema_bwd", x.dtype), B, M, D, ptr(x), ptr(p), ptr(h), ptr(g), ptr(e),
              ptr(dx), ptr(dp))
    return dx, dp


def _bwd_fake(x, p, h, g):  # noqa: ANN001, ANN202
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(p, memory_format=torch.contiguous_format))


def _setup(ctx, inputs, output) -> None:  # noqa: ANN001
    ctx.save_for_backward(*inputs, output)


def _backward(ctx, kernel, g):  # noqa: ANN001, ANN202
    return kernel(*ctx.saved_tensors, g)


_op = kernel_op("ema_cpu", _fwd, _fwd_fake, _bwd, _bwd_fake, _setup, _backward)


def ema_cpu(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """`kernels.ema.ema_reference` in one C pass: x (B, M, D), p (B, M) in [0, 1]; float32 or
    float64 CPU tensors (p is taken in x's precision). Call `available()` first."""
    LIBRARY.require("ema_cpu")
    _check(x, p)  # the C code trusts the shapes
    return _op(x, p.to(x.dtype))
