"""Triton EMA scan (forward and backward); reference: `ema.ema_reference`.

One program owns a (batch row, BLOCK_D feature slice) and walks the chunk axis in tiles of
BLOCK_M: inside a tile the recurrence h_t = a_t h_{t-1} + u_t (a = 1 - P, u = P z) is a
parallel `tl.associative_scan` over (a, u) pairs, and the state is carried from tile to tile.
P == 1 makes a = 0, which zeroes the carried state: document resets need no extra input, and
rows padded at the end cannot reach earlier positions because the scan is causal.

Backward is the adjoint recurrence gh_t = g_t + a_{t+1} gh_{t+1}, run as the same scan over
tiles loaded in reverse order; dz = P gh and dP = sum_d gh (z - h_{t-1}). Each program writes
its partial dP for its feature slice, summed afterwards (deterministic, no atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from hnetbench.kernels.ema import _check


@triton.jit
def _combine(a1, b1, a2, b2):
    # (a1, b1) is the earlier step: applying h -> a1 h + b1, then h -> a2 h + b2.
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _last_row(v, rows, BLOCK_M: tl.constexpr):
    return tl.sum(tl.where(rows[:, None] == BLOCK_M - 1, v, 0.0), axis=0)


@triton.jit
def _ema_fwd_kernel(
    x_ptr, p_ptr, h_ptr, M, D,
    sxb, sxm, sxd, spb, spm, shb, shm, shd,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
):
    b = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    rows = tl.arange(0, BLOCK_M)
    carry = tl.zeros([BLOCK_D], dtype=ACC)
    for start in range(0, M, BLOCK_M):
        t = start + rows
        mt = t < M
        m2 = mt[:, None] & (cols[None, :] < D)
        p = tl.load(p_ptr + b * spb + t * spm, mask=mt, other=0.0).to(ACC)
        x = tl.load(x_ptr + b * sxb + t[:, None] * sxm + cols[None, :] * sxd, mask=m2, other=0.0)
        a = tl.broadcast_to((1.0 - p)[:, None], (BLOCK_M, BLOCK_D))
        u = p[:, None] * x.to(ACC)
        acum, ucum = tl.associative_scan((a, u), 0, _combine)
        h = ucum + acum * carry[None, :]
        tl.store(h_ptr + b * shb + t[:, None] * shm + cols[None, :] * shd, h, mask=m2)
        carry = _last_row(h, rows, BLOCK_M)


@triton.jit
def _ema_bwd_kernel(
    g_ptr, x_ptr, p_ptr, h_ptr, dx_ptr, dpp_ptr, M, D,
    sgb, sgm, sgd, sxb, sxm, sxd, spb, spm, shb, shm, shd, sdb, sdm, sdd, sqb, sqj, sqm,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
):
    b = tl.program_id(0)
    j = tl.program_id(1)
    cols = j * BLOCK_D + tl.arange(0, BLOCK_D)
    mc = cols < D
    rows = tl.arange(0, BLOCK_M)
    carry = tl.zeros([BLOCK_D], dtype=ACC)
    n_tiles = tl.cdiv(M, BLOCK_M)
    for i in range(0, n_tiles):
        t = M - 1 - (i * BLOCK_M + rows)  # reversed order: row 0 is the latest position
        mt = t >= 0
        m2 = mt[:, None] & mc[None, :]
        # a_{t+1}, with a_M = 0 (nothing flows back from beyond the end)
        p_next = tl.load(p_ptr + b * spb + (t + 1) * spm, mask=mt & (t + 1 < M), other=1.0)
        g = tl.load(g_ptr + b * sgb + t[:, None] * sgm + cols[None, :] * sgd, mask=m2, other=0.0)
        a = tl.broadcast_to((1.0 - p_next.to(ACC))[:, None], (BLOCK_M, BLOCK_D))
        acum, gcum = tl.associative_scan((a, g.to(ACC)), 0, _combine)
        gh = gcum + acum * carry[None, :]
        carry = _last_row(gh, rows, BLOCK_M)
        p = tl.load(p_ptr + b * spb + t * spm, mask=mt, other=0.0).to(ACC)
        x = tl.load(x_ptr + b * sxb + t[:, None] * sxm + cols[None, :] * sxd, mask=m2, other=0.0)
        hp = tl.load(
            h_ptr + b * shb + (t - 1)[:, None] * shm + cols[None, :] * shd,
            mask=m2 & (t >= 1)[:, None], other=0.0,
        )
        dx_off = b * sdb + t[:, None] * sdm + cols[None, :] * sdd
        tl.store(dx_ptr + dx_off, p[:, None] * gh, mask=m2)
        dp = tl.sum(gh * (x.to(ACC) - hp.to(ACC)), axis=1)
        tl.store(dpp_ptr + b * sqb + j * sqj + t * sqm, dp, mask=mt)


def _blocks(D: int, block_m: int | None, block_d: int | None) -> tuple[int, int]:
    # Narrow feature slices give more programs (B * D / BLOCK_D) for the GPU to spread.
    bd = block_d or min(32, triton.next_power_of_2(max(D, 1)))
    return block_m or 64, bd


class EMATriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: torch.Tensor, block_m: int | None, block_d: int | None):
        B, M, D = x.shape
        f64 = x.dtype == torch.float64
        acc = tl.float64 if f64 else tl.float32
        # h is kept in the accumulation dtype: the backward needs h_{t-1} at full precision.
        h = torch.empty(B, M, D, device=x.device, dtype=torch.float64 if f64 else torch.float32)
        bm, bd = _blocks(D, block_m, block_d)
        if M > 0:
            _ema_fwd_kernel[(B, triton.cdiv(D, bd))](
                x, p, h, M, D, *x.stride(), *p.stride(), *h.stride(),
                BLOCK_M=bm, BLOCK_D=bd, ACC=acc,
            )
        ctx.save_for_backward(x, p, h)
        ctx.acc, ctx.blocks = acc, (bm, bd)
        return h.to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor):
        x, p, h = ctx.saved_tensors
        B, M, D = x.shape
        bm, bd = ctx.blocks
        nd = triton.cdiv(D, bd)
        dx = torch.empty(B, M, D, device=x.device, dtype=h.dtype)
        dpp = torch.empty(B, nd, M, device=x.device, dtype=h.dtype)
        if M > 0:
            _ema_bwd_kernel[(B, nd)](
                g, x, p, h, dx, dpp, M, D, *g.stride(), *x.stride(), *p.stride(), *h.stride(),
                *dx.stride(), *dpp.stride(), BLOCK_M=bm, BLOCK_D=bd, ACC=ctx.acc,
            )
        return dx.to(x.dtype), dpp.sum(1).to(p.dtype), None, None


def ema_triton(
    x: torch.Tensor, p: torch.Tensor, block_m: int | None = None, block_d: int | None = None
) -> torch.Tensor:
    """Same semantics as `ema.ema_reference`; x (B, M, D), p (B, M) on a CUDA device
    (or CPU under TRITON_INTERPRET=1). block_m / block_d (powers of 2) override the tiling."""
    _check(x, p)
    return EMATriton.apply(x, p, block_m, block_d)
