"""Attention's q, k, v split with partial RoPE as one C pass on CPU (`rope_cpu.c`).

The torch version (permute the fused projection, then `models.attention.rope` on q and on k:
slices, four products, two sums and a concatenation each, and as many again backward) was ~5%
of an H-Net or BPE Transformer training step at cpu-tiny. Here one pass reads the projection
and writes q, k, v in attention's layout, and one pass writes the projection's gradient.
Registered as the torch op `hnetbench::qkv_rope_cpu` with its autograd; built and loaded by
`kernels.cpu_build` (off with HNETBENCH_C_KERNELS=off, or without a compiler: the torch version
runs). The angles' cos and sin are computed by the caller exactly as `rope` does, and the C
code rounds each product as torch does, so both paths give the same bits
(`tests/test_rope.py`).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from hnetbench.kernels.cpu_build import CLibrary, ptr, run_items
from hnetbench.kernels.cpu_ops import kernel_op

SOURCE = Path(__file__).with_name("rope_cpu.c")


def _declare(lib: ctypes.CDLL, suffix: str, real: type) -> None:
    """Argument types of the library's functions of one precision (f32: float, f64:
    double)."""
    i64, p = ctypes.c_int64, ctypes.c_void_p
    getattr(lib, f"rope_fwd_{suffix}").argtypes = [i64] * 6 + [p] * 6
    getattr(lib, f"rope_bwd_{suffix}").argtypes = [i64] * 6 + [p] * 6


LIBRARY = CLibrary(SOURCE, "attention's RoPE", _declare, switch=("HNETBENCH_ROPE", "torch"))


def available() -> bool:
    """True when the C RoPE is built and loaded (compiles it on the first call)."""
    return LIBRARY.available()


def _fwd(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
         rotary_dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # held in locals while the C code runs: a pointer into a freed temporary would dangle
    qkv, cos, sin = qkv.contiguous(), cos.contiguous(), sin.contiguous()
    B, L, _, H, hd = qkv.shape
    q, k, v = (qkv.new_empty(B, H, L, hd) for _ in range(3))
    run_items(LIBRARY.fn("rope_fwd", qkv.dtype), B * L, L, H, hd, rotary_dim, ptr(qkv),
              ptr(cos), ptr(sin), ptr(q), ptr(k), ptr(v))
    return q, k, v


def _fwd_fake(qkv, cos, sin, rotary_dim):  # noqa: ANN001, ANN202
    B, L, _, H, hd = qkv.shape
    return tuple(qkv.new_empty(B, H, L, hd) for _ in range(3))


def _bwd(dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor, cos: torch.Tensor,
         sin: torch.Tensor, rotary_dim: int) -> torch.Tensor:
    dq, dk, dv = dq.contiguous(), dk.contiguous(), dv.contiguous()
    cos, sin = cos.contiguous(), sin.contiguous()
    B, H, L, hd = dq.shape
    dqkv = dq.new_empty(B, L, 3, H, hd)
    run_items(LIBRARY.fn("rope_bwd", dq.dtype), B * L, L, H, hd, rotary_dim, ptr(dq), ptr(dk),
              ptr(dv), ptr(cos), ptr(sin), ptr(dqkv))
    return dqkv


def _bwd_fake(dq, dk, dv, cos, sin, rotary_dim):  # noqa: ANN001, ANN202
    B, H, L, hd = dq.shape
    return dq.new_empty(B, L, 3, H, hd)


def _setup(ctx, inputs, output) -> None:  # noqa: ANN001
    _, cos, sin, rotary_dim = inputs
    ctx.save_for_backward(cos, sin)
    ctx.rotary_dim = rotary_dim


def _backward(ctx, kernel, dq, dk, dv):  # noqa: ANN001, ANN202
    # an output the loss does not use gets a zero gradient here (custom ops materialize them)
    cos, sin = ctx.saved_tensors
    return kernel(dq, dk, dv, cos, sin, ctx.rotary_dim), None, None, None


_op = kernel_op("qkv_rope_cpu", _fwd, _fwd_fake, _bwd, _bwd_fake, _setup, _backward)


def qkv_rope_cpu(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 rotary_dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v (B, H, L, hd), contiguous, from qkv (B, L, 3, H, hd), RoPE on q's and k's
    first `rotary_dim` dims with cos, sin (B, L, rotary_dim // 2) in qkv's dtype; float32 or
    float64 CPU tensors. Call `available()` first."""
    LIBRARY.require("qkv_rope_cpu")
    return _op(qkv, cos, sin, rotary_dim)
