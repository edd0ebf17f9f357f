"""Smoothing EMA over chunks (paper Eq. 5): zbar_t = P_t * z_t + (1 - P_t) * zbar_{t-1}.

`ema_reference` is the plain sequential loop: the ground truth every faster path is tested
against. A chunk whose P is exactly 1 (the first chunk of every document) restarts the EMA, so
no information crosses a document boundary.

`ema_chunked` is the fast pure-torch path (the CPU default). The EMA is the linear recurrence
h_t = a_t h_{t-1} + w_t u_t with a = 1 - P, w = P, u = z. The sequence is cut into n blocks of
C positions (C ~ sqrt(M)) and scanned in two levels:
  1. every block from a zero state, all blocks at once: C steps on (B, n, D) tensors
     ("loop"), or one batched matmul with the decay matrix L[t, s] = prod_{s<r<=t} a_r
     ("matmul");
  2. the state entering each block: n steps on (B, D) vectors, then one rank-1 update
     y += prod_{r<=t} a_r * carry.
So about 2 sqrt(M) small steps replace M. Products of a are cumulative products, never ratios,
so P == 1 (a = 0) is exact. The matmul variant builds L as exp of *sums* of log|a| (never
differences: log 0 = -inf gives exp(-inf) = 0, never -inf - -inf = NaN). Autograd through log(0)
would give 0 * inf = NaN, so the backward is written by hand: the adjoint recurrence
gh_t = g_t + a_{t+1} gh_{t+1} is the same scan run in reverse.
On this CPU the loop variant is the faster one (matmul does C times the arithmetic).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

METHODS = ("loop", "matmul")


def _check(x: torch.Tensor, p: torch.Tensor) -> None:
    if x.dim() != 3 or p.shape != x.shape[:2]:
        raise ValueError(
            f"ema: expected x (B, M, D) and p (B, M), got {tuple(x.shape)} and {tuple(p.shape)}"
        )


def ema_reference(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """x: (B, M, D) chunk vectors, p: (B, M) probabilities in [0, 1] -> (B, M, D)."""
    _check(x, p)
    # unbind, not x[:, t]: indexing would make every step's backward a full-size scatter
    ps = p.to(x.dtype).unsqueeze(-1).unbind(1)
    out = []
    prev = x.new_zeros(x.shape[0], x.shape[2])
    for xt, pt in zip(x.unbind(1), ps):
        prev = pt * xt + (1 - pt) * prev
        out.append(prev)
    return torch.stack(out, dim=1) if out else x.clone()


def default_block(M: int) -> int:
    """Power of two near sqrt(M): balances the two sequential levels."""
    return min(256, max(8, 2 ** round(math.log2(max(M, 1)) / 2)))


def _blocks_loop(a: torch.Tensor, u: torch.Tensor, w: torch.Tensor | None, reverse: bool):
    """a, w: (B, n, C), u: (B, n, C, D) -> zero-state scan of every block, (B, n, C, D)."""
    y = u.new_empty(u.shape)  # contiguous whatever u's layout: the caller views it
    prev = u.new_zeros(u.shape[0], u.shape[1], u.shape[3])
    C = u.shape[2]
    for t in range(C - 1, -1, -1) if reverse else range(C):
        ut = u[:, :, t] if w is None else w[:, :, t, None] * u[:, :, t]
        prev = torch.addcmul(ut, a[:, :, t, None], prev)
        y[:, :, t] = prev
    return y


def _segsum(v: torch.Tensor, strict: torch.Tensor) -> torch.Tensor:
    """[..., t, s] = sum_{s<r<=t} v_r (0 where s >= t), by a masked cumsum: no subtraction."""
    rep = v.unsqueeze(-1).expand(*v.shape, v.shape[-1])  # [t, s] -> v_t
    return torch.where(strict, rep, 0.0).cumsum(dim=-2)


def _blocks_matmul(a: torch.Tensor, u: torch.Tensor, w: torch.Tensor | None, reverse: bool):
    B, n, C, D = u.shape
    if reverse:  # build the forward decay matrix of the flipped block, then flip it back
        a = a.flip(-1)
    loga = torch.log(a.abs())  # a == 0 -> -inf, used in sums only
    strict = torch.ones(C, C, dtype=torch.bool, device=a.device).tril(-1)
    lower = torch.ones(C, C, dtype=torch.bool, device=a.device).tril()
    decay = torch.where(lower, _segsum(loga, strict).exp(), 0.0)  # L[t, s]
    neg = a < 0  # only for P > 1 (e.g. gradcheck's nudges): track the sign separately
    if neg.any():
        decay = decay * (1 - 2 * (_segsum(neg.to(a.dtype), strict) % 2))
    if reverse:
        decay = decay.flip(-1, -2)
    if w is not None:
        decay = decay * w.unsqueeze(-2)  # folds w into the small matrix, not a pass over u
    return torch.bmm(decay.view(B * n, C, C), u.reshape(B * n, C, D)).view(B, n, C, D)


def linear_scan(
    a: torch.Tensor,
    u: torch.Tensor,
    block: int | None = None,
    w: torch.Tensor | None = None,
    method: str = "loop",
    reverse: bool = False,
) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + w_t * u_t with h_{-1} = 0; a, w (default 1): (B, M), u: (B, M, D).
    reverse=True runs h_t = a_t * h_{t+1} + w_t * u_t with h_M = 0 (no flipped copies).
    No autograd (see `ema_chunked` for the differentiable EMA)."""
    if method not in METHODS:
        raise ValueError(f"linear_scan: method {method!r} is not one of {'|'.join(METHODS)}")
    B, M, D = u.shape
    if M == 0:
        return u.clone()
    C = block or default_block(M)
    n = -(-M // C)
    pad = n * C - M
    with torch.no_grad():
        if pad:  # padding sits after every real position (in scan order): no real output changes
            side = (pad, 0) if reverse else (0, pad)
            a, u = F.pad(a, side, value=1.0), F.pad(u, (0, 0, *side))
            w = None if w is None else F.pad(w, side)
        a, u = a.reshape(B, n, C), u.reshape(B, n, C, D)
        w = None if w is None else w.reshape(B, n, C)
        y = (_blocks_loop if method == "loop" else _blocks_matmul)(a, u, w, reverse)
        # prod of a from the block's entry to t: how much of the entering state survives
        prefix = a.flip(-1).cumprod(-1).flip(-1) if reverse else a.cumprod(-1)
        last = 0 if reverse else -1  # the block's last position in scan order
        ends, keep = y[:, :, last], prefix[:, :, last]
        # State entering each block: n sequential steps on (B, D) vectors only.
        carries = [torch.zeros(B, D, dtype=u.dtype, device=u.device)]
        for j in range(n - 1, 0, -1) if reverse else range(n - 1):
            carries.append(torch.addcmul(ends[:, j], keep[:, j, None], carries[-1]))
        if reverse:
            carries.reverse()
        # y += prefix (x) carry, as one in-place rank-1 batched update
        y.view(B * n, C, D).baddbmm_(
            prefix.reshape(B * n, C, 1), torch.stack(carries, 1).view(B * n, 1, D)
        )
        y = y.view(B, n * C, D)
        return (y[:, pad:] if reverse else y[:, :M]) if pad else y


class _EMAChunked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: torch.Tensor, block: int | None, method: str):
        cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
        xc, pc = x.to(cdt), p.to(cdt)
        h = linear_scan(1 - pc, xc, block, w=pc, method=method)
        ctx.save_for_backward(xc, pc, h)
        ctx.opts, ctx.dtypes = (block, method), (x.dtype, p.dtype)
        return h.to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor):
        xc, pc, h = ctx.saved_tensors
        block, method = ctx.opts
        g = g.to(xc.dtype)
        # Adjoint: gh_t = g_t + a_{t+1} gh_{t+1}, the same scan run in reverse.
        a_next = F.pad(1 - pc[:, 1:], (0, 1), value=0.0)
        gh = linear_scan(a_next, g, block, method=method, reverse=True)
        dx = pc.unsqueeze(-1) * gh
        # dP_t = gh_t . (z_t - h_{t-1}) (einsum on the contiguous pair; on the shifted views
        # einsum would copy both, so a plain product is cheaper there)
        dp = torch.einsum("bmd,bmd->bm", gh, xc)
        dp[:, 1:] -= (gh[:, 1:] * h[:, :-1]).sum(-1)
        return dx.to(ctx.dtypes[0]), dp.to(ctx.dtypes[1]), None, None


def ema_chunked(
    x: torch.Tensor, p: torch.Tensor, block: int | None = None, method: str = "loop"
) -> torch.Tensor:
    """Two-level blocked EMA, same semantics as `ema_reference`; differentiable in x and p.
    block: positions per block (default ~sqrt(M)); method: "loop" | "matmul" (within blocks)."""
    _check(x, p)
    if method not in METHODS:
        raise ValueError(f"ema_chunked: method {method!r} is not one of {'|'.join(METHODS)}")
    return _EMAChunked.apply(x, p, block, method)
