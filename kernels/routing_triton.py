"""Triton routing probabilities (forward and backward); reference: `routing.cosine_probs_reference`.

p_t = clamp(0.5 * (1 - cos(q_t, k_{t-1})), 0, 1), p = 1 at position 0 and at document starts,
and the boundary flag b_t = p_t > 0.5, all in one pass. cos uses torch's convention
q.k / (max(|q|, eps) * max(|k|, eps)). One program owns BLOCK_L positions of one row and walks
the feature axis in BLOCK_D slices, so any D fits. The forward keeps |q|, |k_{t-1}| and cos per
position (three floats) so the backward needs one pass over q and k.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from hnetbench.kernels.routing import _check

EPS = 1e-6


@triton.jit
def _load(base, t, d, st, sd, mask):
    return tl.load(base + t[:, None] * st + d[None, :] * sd, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _route_fwd_kernel(
    q_ptr, k_ptr, ds_ptr, p_ptr, b_ptr, rq_ptr, rk_ptr, cos_ptr, L, D,
    sqb, sql, sqd, skb, skl, skd, sdb, sdl,
    HAS_DS: tl.constexpr, EPS_: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
):
    b = tl.program_id(0)
    t = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    mt = t < L
    mk = mt & (t >= 1)
    dot = tl.zeros([BLOCK_L], dtype=tl.float32)
    qq = tl.zeros([BLOCK_L], dtype=tl.float32)
    kk = tl.zeros([BLOCK_L], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        md = d[None, :] < D
        q = _load(q_ptr + b * sqb, t, d, sql, sqd, mt[:, None] & md)
        k = _load(k_ptr + b * skb, t - 1, d, skl, skd, mk[:, None] & md)
        dot += tl.sum(q * k, axis=1)
        qq += tl.sum(q * q, axis=1)
        kk += tl.sum(k * k, axis=1)
    rq, rk = tl.sqrt(qq), tl.sqrt(kk)
    cos = dot / (tl.maximum(rq, EPS_) * tl.maximum(rk, EPS_))
    p = tl.minimum(tl.maximum(0.5 * (1.0 - cos), 0.0), 1.0)
    start = t == 0
    if HAS_DS:
        start = start | (tl.load(ds_ptr + b * sdb + t * sdl, mask=mt, other=0) != 0)
    p = tl.where(start, 1.0, p)
    o = b * L + t  # outputs are contiguous (B, L)
    tl.store(p_ptr + o, p, mask=mt)
    tl.store(b_ptr + o, p > 0.5, mask=mt)
    tl.store(rq_ptr + o, rq, mask=mt)
    tl.store(rk_ptr + o, rk, mask=mt)
    tl.store(cos_ptr + o, cos, mask=mt)


@triton.jit
def _route_bwd_kernel(
    g_ptr, q_ptr, k_ptr, ds_ptr, rq_ptr, rk_ptr, cos_ptr, dq_ptr, dk_ptr, L, D,
    sqb, sql, sqd, skb, skl, skd, sdb, sdl,
    HAS_DS: tl.constexpr, EPS_: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
):
    b = tl.program_id(0)
    t = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    mt = t < L
    mk = mt & (t >= 1)
    o = b * L + t
    g = tl.load(g_ptr + o, mask=mt, other=0.0).to(tl.float32)
    rq = tl.load(rq_ptr + o, mask=mt, other=1.0)
    rk = tl.load(rk_ptr + o, mask=mt, other=1.0)
    cos = tl.load(cos_ptr + o, mask=mt, other=0.0)
    raw = 0.5 * (1.0 - cos)
    start = t == 0
    if HAS_DS:
        start = start | (tl.load(ds_ptr + b * sdb + t * sdl, mask=mt, other=0) != 0)
    # dL/dcos; zero where the clamp was active or p was forced to 1 (as torch's autograd does)
    w = tl.where(start | (raw < 0.0) | (raw > 1.0), 0.0, -0.5 * g)
    nq, nk = tl.maximum(rq, EPS_), tl.maximum(rk, EPS_)
    inv = w / (nq * nk)
    # Below eps the norm is the constant eps, so its derivative term drops out.
    cq = tl.where(rq > EPS_, w * cos / (nq * nq), 0.0)
    ck = tl.where(rk > EPS_, w * cos / (nk * nk), 0.0)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        md = d[None, :] < D
        q = _load(q_ptr + b * sqb, t, d, sql, sqd, mt[:, None] & md)
        k = _load(k_ptr + b * skb, t - 1, d, skl, skd, mk[:, None] & md)
        dq = inv[:, None] * k - cq[:, None] * q
        dk = inv[:, None] * q - ck[:, None] * k
        # dq/dk are contiguous (B, L, D); k_{t-1} gets its gradient from position t only.
        tl.store(dq_ptr + (o[:, None] * D + d[None, :]), dq, mask=mt[:, None] & md)
        tl.store(dk_ptr + ((o - 1)[:, None] * D + d[None, :]), dk, mask=mk[:, None] & md)


def _blocks(D: int) -> tuple[int, int]:
    return 16, min(128, triton.next_power_of_2(max(D, 1)))


class CosineProbsTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, doc_start: torch.Tensor | None):
        B, L, D = q.shape
        f32 = dict(device=q.device, dtype=torch.float32)
        p, rq, rk, cos = (torch.empty(B, L, **f32) for _ in range(4))
        bnd = torch.empty(B, L, device=q.device, dtype=torch.bool)
        ds = doc_start if doc_start is not None else p  # placeholder pointer, never read
        bl, bd = _blocks(D)
        if L > 0:
            _route_fwd_kernel[(B, triton.cdiv(L, bl))](
                q, k, ds, p, bnd, rq, rk, cos, L, D, *q.stride(), *k.stride(), *ds.stride()[:2],
                HAS_DS=doc_start is not None, EPS_=EPS, BLOCK_L=bl, BLOCK_D=bd,
            )
        ctx.save_for_backward(q, k, doc_start if doc_start is not None else None, rq, rk, cos)
        ctx.mark_non_differentiable(bnd)
        return p.to(q.dtype), bnd

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor, _gb: torch.Tensor | None):
        q, k, doc_start, rq, rk, cos = ctx.saved_tensors
        B, L, D = q.shape
        g = g.contiguous()
        dq = torch.empty(B, L, D, device=q.device, dtype=torch.float32)
        dk = torch.zeros(B, L, D, device=q.device, dtype=torch.float32)  # dk[:, -1] stays 0
        ds = doc_start if doc_start is not None else rq
        bl, bd = _blocks(D)
        if L > 0:
            _route_bwd_kernel[(B, triton.cdiv(L, bl))](
                g, q, k, ds, rq, rk, cos, dq, dk, L, D, *q.stride(), *k.stride(), *ds.stride()[:2],
                HAS_DS=doc_start is not None, EPS_=EPS, BLOCK_L=bl, BLOCK_D=bd,
            )
        return dq.to(q.dtype), dk.to(k.dtype), None


def cosine_probs_triton(
    q: torch.Tensor, k: torch.Tensor, doc_start: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k: (B, L, D); doc_start: (B, L) bool or None -> (p (B, L), boundaries p > 0.5)."""
    _check(q, k, doc_start)
    return CosineProbsTriton.apply(q, k, doc_start)
