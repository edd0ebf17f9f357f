"""Causal attention over per-query key ranges as one C pass on CPU (`attn_cpu.c`).

torch's CPU SDPA takes attention's mask as a full (B, L, L) matrix and scores every pair, masked
or not; here query i attends keys [lo[i], i] (causal, from its document's start or its sliding
window's), so about half of the square is computed for one document per row, less for several.
The output comes in (B, L, H, hd), the output projection's layout, which saves a copy.
Registered as the torch op `hnetbench::attention_cpu` with its autograd (the backward
recomputes the weights from the saved log-sum-exp); built and loaded by `kernels.cpu_build`
(off with HNETBENCH_C_KERNELS=off or HNETBENCH_ATTENTION=torch, or without a compiler: SDPA
runs). Held to SDPA with the equivalent mask in float64, forward and backward, by
`tests/test_attention_cpu.py`.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from hnetbench.kernels.cpu_build import CLibrary, ptr, run_items
from hnetbench.kernels.cpu_ops import kernel_op

SOURCE = Path(__file__).with_name("attn_cpu.c")


def _declare(lib: ctypes.CDLL, suffix: str, real: type) -> None:
    """Argument types of the library's functions of one precision (f32: float, f64:
    double)."""
    i64, p = ctypes.c_int64, ctypes.c_void_p
    getattr(lib, f"attn_fwd_{suffix}").argtypes = [i64] * 5 + [real] + [p] * 6
    getattr(lib, f"attn_bwd_{suffix}").argtypes = [i64] * 5 + [real] + [p] * 10


LIBRARY = CLibrary(SOURCE, "attention", _declare, switch=("HNETBENCH_ATTENTION", "torch"))


def available() -> bool:
    """True when the C attention is built and loaded (compiles it on the first call)."""
    return LIBRARY.available()


def _fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
         lo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # held in locals while the C code runs: a pointer into a freed temporary would dangle
    q, k, v, lo = q.contiguous(), k.contiguous(), v.contiguous(), lo.contiguous()
    B, H, L, hd = q.shape
    y, lse = q.new_empty(B, L, H, hd), q.new_empty(B, H, L)
    run_items(LIBRARY.fn("attn_fwd", q.dtype), B * H, H, L, hd, hd ** -0.5, ptr(q), ptr(k),
              ptr(v), ptr(lo), ptr(y), ptr(lse))
    return y, lse


def _fwd_fake(q, k, v, lo):  # noqa: ANN001, ANN202
    B, H, L, hd = q.shape
    return q.new_empty(B, L, H, hd), q.new_empty(B, H, L)


def _bwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lo: torch.Tensor, y: torch.Tensor,
         lse: torch.Tensor, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dy = dy.contiguous()
    B, H, L, hd = q.shape
    dq, dk, dv = (q.new_empty(B, H, L, hd) for _ in range(3))
    run_items(LIBRARY.fn("attn_bwd", q.dtype), B * H, H, L, hd, hd ** -0.5, ptr(q), ptr(k),
              ptr(v), ptr(lo), ptr(y), ptr(dy), ptr(lse), ptr(dq), ptr(dk), ptr(dv))
    return dq, dk, dv


def _bwd_fake(q, k, v, lo, y, lse, dy):  # noqa: ANN001, ANN202
    return tuple(torch.empty_like(q) for _ in range(3))


def _setup(ctx, inputs, output) -> None:  # noqa: ANN001
    q, k, v, lo = inputs
    y, lse = output
    ctx.save_for_backward(q.contiguous(), k.contiguous(), v.contiguous(), lo.contiguous(), y,
                          lse)
    ctx.mark_non_differentiable(lse)  # the log-sum-exp: an output only to be saved


def _backward(ctx, kernel, dy, _dlse):  # noqa: ANN001, ANN202
    return (*kernel(*ctx.saved_tensors, dy), None)


_op = kernel_op("attention_cpu", _fwd, _fwd_fake, _bwd, _bwd_fake, _setup, _backward)


def key_start(doc: torch.Tensor, window: int = -1) -> torch.Tensor:
    """lo (B, L) int64: the first key each query attends, from document ids `doc` (B, L),
    nondecreasing along L (a document's positions are contiguous), and the sliding window
    (positions attended including the query's own; -1 = global)."""
    lo = torch.searchsorted(doc.contiguous(), doc.contiguous())
    if window > 0:
        idx = torch.arange(doc.shape[1], device=doc.device)
        lo = torch.maximum(lo, idx - window + 1)
    return lo


def attention_cpu(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  lo: torch.Tensor) -> torch.Tensor:
    """y (B, L, H, hd) = softmax(q k^T / sqrt(hd)) v with query i attending keys [lo[i], i];
    q, k, v (B, H, L, hd) float32 or float64 CPU tensors, lo (B, L) int64 from `key_start`.
    Call `available()` first."""
    LIBRARY.require("attention_cpu")
    return _op(q, k, v, lo)[0]
