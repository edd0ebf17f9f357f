"""Mamba-2's document-isolated causal conv and its SiLU as one C pass on CPU (`conv_cpu.c`).

The torch version (`models.doc_conv.doc_conv`, then F.silu) makes a pass over (b, L, C) per
tap, one for the activation, and about twice as many in the backward; at the byte level these
passes were ~10% of an H-Net training step. Registered as the torch op
`hnetbench::doc_conv_cpu` with its autograd; built and loaded by `kernels.cpu_build` (off with
HNETBENCH_C_KERNELS=off, or without a compiler: the torch version runs). Tested against
`models.doc_conv.doc_conv_reference` (+ silu) in float64, forward and backward, with documents
of every length down to one position (`tests/test_doc_conv.py`).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from hnetbench.kernels.cpu_build import CLibrary, ptr, run_items
from hnetbench.kernels.cpu_ops import kernel_op

SOURCE = Path(__file__).with_name("conv_cpu.c")


def _declare(lib: ctypes.CDLL, suffix: str, real: type) -> None:
    """Argument types of the library's functions of one precision (f32: float, f64:
    double)."""
    i64, p = ctypes.c_int64, ctypes.c_void_p
    getattr(lib, f"conv_fwd_{suffix}").argtypes = [i64] * 6 + [p] * 5
    getattr(lib, f"conv_bwd_{suffix}").argtypes = [i64] * 6 + [p] * 8


LIBRARY = CLibrary(SOURCE, "the Mamba-2 conv", _declare)


def available() -> bool:
    """True when the C conv is built and loaded (compiles it on the first call)."""
    return LIBRARY.available()


def _fwd(x: torch.Tensor, wt: torch.Tensor, bias: torch.Tensor, doc: torch.Tensor,
         act: bool) -> torch.Tensor:
    # held in locals while the C code runs: a pointer into a freed temporary would dangle
    x, wt, bias, doc = x.contiguous(), wt.contiguous(), bias.contiguous(), doc.contiguous()
    b, L, C = x.shape
    out = torch.empty_like(x)
    run_items(LIBRARY.fn("conv_fwd", x.dtype), b, L, C, wt.shape[0], int(act), ptr(x), ptr(wt),
              ptr(bias), ptr(doc), ptr(out))
    return out


def _fwd_fake(x, wt, bias, doc, act):  # noqa: ANN001, ANN202
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _bwd(x: torch.Tensor, wt: torch.Tensor, bias: torch.Tensor, doc: torch.Tensor, act: bool,
         dout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, wt, bias, doc = x.contiguous(), wt.contiguous(), bias.contiguous(), doc.contiguous()
    dout = dout.contiguous()
    b, L, C = x.shape
    K = wt.shape[0]
    dx = torch.empty_like(x)
    dwt_rows, dbias_rows = x.new_empty(b, K, C), x.new_empty(b, C)
    run_items(LIBRARY.fn("conv_bwd", x.dtype), b, L, C, K, int(act), ptr(x), ptr(wt), ptr(bias),
              ptr(doc), ptr(dout), ptr(dx), ptr(dwt_rows), ptr(dbias_rows))
    return dx, dwt_rows.sum(0), dbias_rows.sum(0)


def _bwd_fake(x, wt, bias, doc, act, dout):  # noqa: ANN001, ANN202
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(wt, memory_format=torch.contiguous_format), torch.empty_like(bias))


def _setup(ctx, inputs, output) -> None:  # noqa: ANN001
    x, wt, bias, doc, act = inputs
    ctx.save_for_backward(x, wt, bias, doc)
    ctx.act = act


def _backward(ctx, kernel, dout):  # noqa: ANN001, ANN202
    x, wt, bias, doc = ctx.saved_tensors
    dx, dwt, dbias = kernel(x, wt, bias, doc, ctx.act, dout)
    return dx, dwt, dbias, None, None


_op = kernel_op("doc_conv_cpu", _fwd, _fwd_fake, _bwd, _bwd_fake, _setup, _backward)


def doc_conv_cpu(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, doc: torch.Tensor,
                 silu: bool = False) -> torch.Tensor:
    """`models.doc_conv.doc_conv` (then silu, if asked) in one pass: x (b, L, C), w (C, K) with
    w[:, K-1] on the current input, bias (C,), doc (b, L) nondecreasing document ids; float32
    or float64 CPU tensors. Call `available()` first."""
    LIBRARY.require("doc_conv_cpu")
    dtype = x.dtype
    return _op(x, w.to(dtype).t(), bias.to(dtype), doc.to(torch.long), silu)
