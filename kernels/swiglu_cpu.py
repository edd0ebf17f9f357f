"""The SwiGLU MLP's activation, silu(gate) * value, as one C pass on CPU (`swiglu_cpu.c`).

torch's version (chunk the first projection's output, silu, multiply; backward two products,
silu's backward and a concatenation) made ~7 passes over (positions, hidden) tensors, ~10% of
a BPE Transformer training step at cpu-tiny. Registered as the torch op
`hnetbench::swiglu_cpu` with its autograd; built and loaded by `kernels.cpu_build` (off with
HNETBENCH_C_KERNELS=off or HNETBENCH_SWIGLU=torch, or without a compiler: torch's runs). Held to
the torch expression in float64 by `tests/test_swiglu_cpu.py`.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from hnetbench.kernels.cpu_build import CLibrary, blocks, ptr, run_items
from hnetbench.kernels.cpu_ops import kernel_op

SOURCE = Path(__file__).with_name("swiglu_cpu.c")
ROWS_PER_ITEM = 64  # positions per work item


def _declare(lib: ctypes.CDLL, suffix: str, real: type) -> None:
    """Argument types of the library's functions of one precision (f32: float, f64:
    double)."""
    i64, p = ctypes.c_int64, ctypes.c_void_p
    getattr(lib, f"swiglu_fwd_{suffix}").argtypes = [i64] * 5 + [p] * 2
    getattr(lib, f"swiglu_bwd_{suffix}").argtypes = [i64] * 5 + [p] * 3


LIBRARY = CLibrary(SOURCE, "the SwiGLU activation", _declare,
                   switch=("HNETBENCH_SWIGLU", "torch"))


def available() -> bool:
    """True when the C SwiGLU is built and loaded (compiles it on the first call)."""
    return LIBRARY.available()



def _fwd(h: torch.Tensor) -> torch.Tensor:
    h = h.contiguous()  # held in a local while the C code runs
    D = h.shape[-1] // 2
    M = h.numel() // (2 * D)
    y = h.new_empty(*h.shape[:-1], D)
    run_items(LIBRARY.fn("swiglu_fwd", h.dtype), blocks(M, ROWS_PER_ITEM), M, D, ROWS_PER_ITEM,
              ptr(h), ptr(y))
    return y


def _fwd_fake(h):  # noqa: ANN001, ANN202
    return h.new_empty(*h.shape[:-1], h.shape[-1] // 2)


def _bwd(h: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    h, dy = h.contiguous(), dy.contiguous()
    D = h.shape[-1] // 2
    M = h.numel() // (2 * D)
    dh = torch.empty_like(h)
    run_items(LIBRARY.fn("swiglu_bwd", h.dtype), blocks(M, ROWS_PER_ITEM), M, D, ROWS_PER_ITEM,
              ptr(h), ptr(dy), ptr(dh))
    return dh


def _bwd_fake(h, dy):  # noqa: ANN001, ANN202
    return torch.empty_like(h, memory_format=torch.contiguous_format)


def _setup(ctx, inputs, output) -> None:  # noqa: ANN001
    ctx.save_for_backward(inputs[0])


def _backward(ctx, kernel, dy):  # noqa: ANN001, ANN202
    return kernel(ctx.saved_tensors[0], dy)


_op = kernel_op("swiglu_cpu", _fwd, _fwd_fake, _bwd, _bwd_fake, _setup, _backward)


def swiglu_cpu(h: torch.Tensor) -> torch.Tensor:
    """silu(gate) * value for h = cat(gate, value) along the last dim; float32 or float64 CPU
    tensors. Call `available()` first."""
    LIBRARY.require("swiglu_cpu")
    return _op(h)
