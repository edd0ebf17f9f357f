"""Smoothing EMA over chunks (paper Eq. 5): zbar_t = P_t * z_t + (1 - P_t) * zbar_{t-1}.

`ema_reference` is the plain sequential loop: the ground truth every faster path is tested
against. A chunk whose P is exactly 1 (the first chunk of every document) restarts the EMA, so
no information crosses a document boundary.

`ema_chunked` is the fast pure-torch path (the CPU default). The EMA is the linear recurrence
h_t = a_t h_{t-1} + u_t with a = 1 - P, u = P * z. Within blocks of `block` positions it is one
matmul with the decay matrix L[t, s] = prod_{s<r<=t} a_r; a short sequential loop then carries
the state across blocks. L is built as exp of *sums* of log(a) (never differences), so a = 0
gives log = -inf and exp(-inf) = 0 exactly, with no -inf - -inf = NaN. Autograd would still
produce 0 * inf = NaN through log(0), so the backward is written by hand: it is the same
recurrence run in reverse, evaluated by the same blocked scan.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(x: torch.Tensor, p: torch.Tensor) -> None:
    if x.dim() != 3 or p.shape != x.shape[:2]:
        raise ValueError(
            f"ema: expected x (B, M, D) and p (B, M), got {tuple(x.shape)} and {tuple(p.shape)}"
        )


def ema_reference(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """x: (B, M, D) chunk vectors, p: (B, M) probabilities in [0, 1] -> (B, M, D)."""
    _check(x, p)
    p = p.to(x.dtype).unsqueeze(-1)
    out = []
    prev = x.new_zeros(x.shape[0], x.shape[2])
    for t in range(x.shape[1]):
        prev = p[:, t] * x[:, t] + (1 - p[:, t]) * prev
        out.append(prev)
    return torch.stack(out, dim=1) if out else x.clone()


def _segsum(v: torch.Tensor, strict: torch.Tensor) -> torch.Tensor:
    """[..., t, s] = sum_{s<r<=t} v_r (0 where s >= t), by a masked cumsum: no subtraction."""
    rep = v.unsqueeze(-1).expand(*v.shape, v.shape[-1])  # [t, s] -> v_t
    return torch.where(strict, rep, 0.0).cumsum(dim=-2)


def linear_scan(
    a: torch.Tensor, u: torch.Tensor, block: int = 32, w: torch.Tensor | None = None
) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + w_t * u_t with h_{-1} = 0; a, w: (B, M), u: (B, M, D). No autograd.
    w (default 1) is folded into the small decay matrix instead of a pass over u."""
    B, M, D = u.shape
    if M == 0:
        return u.clone()
    n = -(-M // block)
    pad = n * block - M
    with torch.no_grad():
        if pad:  # padding sits after every real position, so it cannot change a real output
            a = F.pad(a, (0, pad), value=1.0)
            u = F.pad(u, (0, 0, 0, pad))
            w = None if w is None else F.pad(w, (0, pad))
        a = a.reshape(B, n, block)
        loga = torch.log(a.abs())  # a == 0 -> -inf, used in sums only
        strict = torch.ones(block, block, dtype=torch.bool, device=a.device).tril(-1)
        lower = torch.ones(block, block, dtype=torch.bool, device=a.device).tril()
        decay = torch.where(lower, _segsum(loga, strict).exp(), 0.0)  # L[t, s]
        prefix = loga.cumsum(-1).exp()  # prod_{r<=t} |a_r|: how much carried state survives
        neg = a < 0  # only for P > 1 (e.g. gradcheck's nudges): track the sign separately
        if neg.any():
            negf = neg.to(a.dtype)
            decay = decay * (1 - 2 * (_segsum(negf, strict) % 2))
            prefix = prefix * (1 - 2 * (negf.cumsum(-1) % 2))
        if w is not None:
            decay = decay * w.reshape(B, n, 1, block)
        # Within-block scan from a zero state: one batched (block x block) @ (block x D) matmul.
        y = torch.bmm(decay.view(B * n, block, block), u.reshape(B * n, block, D))
        y = y.view(B, n, block, D)
        # State entering each block: n sequential steps on (B, D) vectors only.
        ends, keep = y[:, :, -1], prefix[:, :, -1]
        carries = [torch.zeros(B, D, dtype=u.dtype, device=u.device)]
        for j in range(n - 1):
            carries.append(ends[:, j] + keep[:, j, None] * carries[-1])
        # y += prefix (x) carry, as one in-place rank-1 batched update
        y.view(B * n, block, D).baddbmm_(
            prefix.reshape(B * n, block, 1), torch.stack(carries, 1).view(B * n, 1, D)
        )
        y = y.view(B, n * block, D)
        return y[:, :M] if pad else y


class _EMAChunked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: torch.Tensor, block: int) -> torch.Tensor:
        cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
        xc, pc = x.to(cdt), p.to(cdt)
        h = linear_scan(1 - pc, xc, block, w=pc)
        ctx.save_for_backward(xc, pc, h)
        ctx.block, ctx.dtypes = block, (x.dtype, p.dtype)
        return h.to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor):
        xc, pc, h = ctx.saved_tensors
        g = g.to(xc.dtype)
        # Adjoint: gh_t = g_t + a_{t+1} gh_{t+1}, a forward scan over the reversed sequence.
        a_next = F.pad(1 - pc[:, 1:], (0, 1), value=0.0)
        gh = linear_scan(a_next.flip(1), g.flip(1), ctx.block).flip(1)
        h_prev = F.pad(h[:, :-1], (0, 0, 1, 0))
        dx = pc.unsqueeze(-1) * gh
        dp = (gh * (xc - h_prev)).sum(-1)
        return dx.to(ctx.dtypes[0]), dp.to(ctx.dtypes[1]), None


def ema_chunked(x: torch.Tensor, p: torch.Tensor, block: int = 32) -> torch.Tensor:
    """Blocked-scan EMA, same semantics as `ema_reference`; differentiable in x and p."""
    _check(x, p)
    return _EMAChunked.apply(x, p, block)
