"""The RMSNorms as one C pass per position on CPU (`norm_cpu.c`): the Mamba-2 mixer's gated
one and the plain one before every block's mixer and MLP.

Gated: y = RMSNorm(x silu(z)) w per group of channels. The torch version
(`models.norm._GatedRMSNorm`) makes ~6 full-width passes forward and ~10 backward over
(positions, d_inner) tensors; at the byte level they were ~8% of an H-Net training step. Plain:
`F.rms_norm`, as many passes (a few % of a step). Registered as the torch ops
`hnetbench::gated_rms_norm_cpu` and `hnetbench::rms_norm_cpu` with their autograd; built and
loaded by `kernels.cpu_build` (off with HNETBENCH_C_KERNELS=off, or without a compiler: the
torch versions run). Tested against `models.norm.gated_rms_norm_reference` and `F.rms_norm` in
float64 (`tests/test_norm.py`).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from hnetbench.kernels.cpu_build import CLibrary, blocks, ptr, run_items
from hnetbench.kernels.cpu_ops import kernel_op

SOURCE = Path(__file__).with_name("norm_cpu.c")
ROWS_PER_ITEM = 64  # positions per work item (and per partial sum of the weight's gradient)


def _declare(lib: ctypes.CDLL, suffix: str, real: type) -> None:
    """Argument types of the library's functions of one precision (f32: float, f64:
    double)."""
    i64, p = ctypes.c_int64, ctypes.c_void_p
    getattr(lib, f"gnorm_fwd_{suffix}").argtypes = [i64] * 6 + [real] + [p] * 5
    getattr(lib, f"gnorm_bwd_{suffix}").argtypes = [i64] * 6 + [p] * 8
    getattr(lib, f"rms_fwd_{suffix}").argtypes = [i64] * 5 + [real] + [p] * 4
    getattr(lib, f"rms_bwd_{suffix}").argtypes = [i64] * 5 + [p] * 6


LIBRARY = CLibrary(SOURCE, "the RMSNorms", _declare)


def available() -> bool:
    """True when the C norm is built and loaded (compiles it on the first call)."""
    return LIBRARY.available()



def _fwd(x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, group_size: int,
         eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    # held in locals while the C code runs: a pointer into a freed temporary would dangle
    x, z, weight = x.contiguous(), z.contiguous(), weight.contiguous()
    D = x.shape[-1]
    M = x.numel() // D
    y = torch.empty_like(x)
    rs = x.new_empty(*x.shape[:-1], D // group_size)
    run_items(LIBRARY.fn("gnorm_fwd", x.dtype), blocks(M, ROWS_PER_ITEM), M, D, group_size,
              ROWS_PER_ITEM, eps, ptr(x), ptr(z), ptr(weight), ptr(y), ptr(rs))
    return y, rs


def _fwd_fake(x, z, weight, group_size, eps):  # noqa: ANN001, ANN202
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            x.new_empty(*x.shape[:-1], x.shape[-1] // group_size))


def _bwd(x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, rs: torch.Tensor,
         group_size: int, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, z, weight, rs, dy = (t.contiguous() for t in (x, z, weight, rs, dy))
    D = x.shape[-1]
    M = x.numel() // D
    dx, dz = torch.empty_like(x), torch.empty_like(z)
    dw_items = x.new_empty(blocks(M, ROWS_PER_ITEM), D)
    run_items(LIBRARY.fn("gnorm_bwd", x.dtype), blocks(M, ROWS_PER_ITEM), M, D, group_size,
              ROWS_PER_ITEM, ptr(x), ptr(z), ptr(weight), ptr(rs), ptr(dy), ptr(dx), ptr(dz),
              ptr(dw_items))
    return dx, dz, dw_items.sum(0)


def _bwd_fake(x, z, weight, rs, group_size, dy):  # noqa: ANN001, ANN202
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(z, memory_format=torch.contiguous_format), torch.empty_like(weight))


def _setup(ctx, inputs, output) -> None:  # noqa: ANN001
    x, z, weight, group_size, _eps = inputs
    ctx.save_for_backward(x, z, weight, output[1])
    ctx.group_size = group_size
    ctx.mark_non_differentiable(output[1])  # 1/rms per group: an output only to be saved


def _backward(ctx, kernel, dy, _drs):  # noqa: ANN001, ANN202
    x, z, weight, rs = ctx.saved_tensors
    dx, dz, dw = kernel(x, z, weight, rs, ctx.group_size, dy)
    return dx, dz, dw, None, None


_gated_op = kernel_op("gated_rms_norm_cpu", _fwd, _fwd_fake, _bwd, _bwd_fake, _setup, _backward)


def gated_rms_norm_cpu(x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, group_size: int,
                       eps: float) -> torch.Tensor:
    """`models.norm.gated_rms_norm_reference` in one C pass: x, z (..., D), weight (D,), D a
    multiple of `group_size`; float32 or float64 CPU tensors. Call `available()` first."""
    LIBRARY.require("gated_rms_norm_cpu")
    return _gated_op(x, z.to(x.dtype), weight.to(x.dtype), group_size, eps)[0]


def _rms_fwd(x: torch.Tensor, weight: torch.Tensor,
             eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    x, weight = x.contiguous(), weight.contiguous()  # held in locals while the C code runs
    D = x.shape[-1]
    M = x.numel() // D
    y, rs = torch.empty_like(x), x.new_empty(*x.shape[:-1])
    run_items(LIBRARY.fn("rms_fwd", x.dtype), blocks(M, ROWS_PER_ITEM), M, D, ROWS_PER_ITEM, eps,
              ptr(x), ptr(weight), ptr(y), ptr(rs))
    return y, rs


def _rms_fwd_fake(x, weight, eps):  # noqa: ANN001, ANN202
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(x.shape[:-1])


def _rms_bwd(x: torch.Tensor, weight: torch.Tensor, rs: torch.Tensor,
             dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, weight, rs, dy = (t.contiguous() for t in (x, weight, rs, dy))
    D = x.shape[-1]
    M = x.numel() // D
    dx, dw_items = torch.empty_like(x), x.new_empty(blocks(M, ROWS_PER_ITEM), D)
    run_items(LIBRARY.fn("rms_bwd", x.dtype), blocks(M, ROWS_PER_ITEM), M, D, ROWS_PER_ITEM, ptr(x),
              ptr(weight), ptr(rs), ptr(dy), ptr(dx), ptr(dw_items))
    return dx, dw_items.sum(0)


def _rms_bwd_fake(x, weight, rs, dy):  # noqa: ANN001, ANN202
    return torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(weight)


def _rms_setup(ctx, inputs, output) -> None:  # noqa: ANN001
    ctx.save_for_backward(inputs[0], inputs[1], output[1])
    ctx.mark_non_differentiable(output[1])  # 1/rms per position: an output only to be saved


def _rms_backward(ctx, kernel, dy, _drs):  # noqa: ANN001, ANN202
    dx, dw = kernel(*ctx.saved_tensors, dy)
    return dx, dw, None


_rms_op = kernel_op("rms_norm_cpu", _rms_fwd, _rms_fwd_fake, _rms_bwd, _rms_bwd_fake, _rms_setup,
                    _rms_backward)


def rms_norm_cpu(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """`F.rms_norm(x, (D,), weight, eps)` in one C pass: x (..., D), weight (D,); float32 or
    float64 CPU tensors. Call `available()` first."""
    LIBRARY.require("rms_norm_cpu")
    return _rms_op(x, weight.to(x.dtype), eps)[0]
