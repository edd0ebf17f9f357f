"""Chunk and dechunk: downsample, smoothing EMA, upsample, STE and the ratio loss.

Conventions: a chunk starts at a boundary position t (b_t = 1). Every row's position 0 is a
boundary, so each position belongs to chunk cumsum(b) - 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from hnetbench.kernels import ema_smooth


def downsample(
    x: torch.Tensor, b: torch.Tensor, doc: torch.Tensor, mode: str = "select"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (B, L, D), b (B, L) bool, doc (B, L) -> chunks (B, M, D), mask (B, M), idx (B, M).

    `select` keeps x at boundary positions (the paper). `mean`/`max` (ablation) pool, for the
    chunk starting at t_j, the positions (t_{j-1}, t_j] of the same document: pooling the bytes
    *after* t_j would leak the future into positions t_j.. that read this chunk, so the pooled
    span ends at the boundary.
    """
    B, L, D = x.shape
    n = b.sum(1)
    M = int(n.max())
    # stable sort puts boundary positions first, in order
    idx = torch.sort((~b).to(torch.int8), dim=1, stable=True).indices[:, :M]
    mask = torch.arange(M, device=x.device)[None, :] < n[:, None]
    if mode == "select":
        out = x.gather(1, idx[..., None].expand(-1, -1, D))
    elif mode in ("mean", "max"):
        group = b.long().cumsum(1) - b.long()  # chunk whose boundary is the next one at/after i
        chunk_doc = doc.gather(1, idx)
        ok = (group < n[:, None]) & (doc == chunk_doc.gather(1, group.clamp(max=M - 1)))
        group = torch.where(ok, group, torch.full_like(group, M))  # slot M collects the rest
        index = group[..., None].expand(-1, -1, D)
        reduce = "mean" if mode == "mean" else "amax"
        init = x.new_zeros(B, M + 1, D)
        out = init.scatter_reduce(1, index, x, reduce=reduce, include_self=False)[:, :M]
    else:
        raise ValueError(f"model.downsample: expected select|mean|max, got {mode!r}")
    return out * mask[..., None].to(x.dtype), mask, idx


EMA_EPS = 1e-4  # the reference's DeChunkLayer clamps p to [1e-4, 1 - 1e-4]


def clamp_like_reference(z: torch.Tensor, P: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's EMA clamp, keeping exact restarts: a restart (P = 1: first chunk,
    document start) scales its chunk by 1 - 1e-4, as the reference's clamped p does on a zero
    state, but still drops the previous state; other P are clamped to [1e-4, 1 - 1e-4].
    z (..., D), P (...)."""
    restart = P >= 1
    P_c = torch.where(restart, torch.ones_like(P), P.clamp(EMA_EPS, 1 - EMA_EPS))
    gain = torch.where(restart, torch.full_like(P, 1 - EMA_EPS), torch.ones_like(P))
    return z * gain[..., None].to(z.dtype), P_c


def smooth(
    z: torch.Tensor,
    P: torch.Tensor,
    enabled: bool = True,
    backend: str = "auto",
    reference_clamp: bool = False,
) -> torch.Tensor:
    """Eq. 5 over the chunk sequence; P = boundary probability of each chunk (1 restarts).
    `reference_clamp`: as goombalab/hnet's dechunking (see clamp_like_reference)."""
    if not enabled:
        return z
    if reference_clamp:
        z, P = clamp_like_reference(z, P)
    return ema_smooth(z, P, backend)


def upsample(z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Each position takes the vector of its chunk. z (B, M, D), b (B, L) -> (B, L, D)."""
    idx = (b.long().cumsum(1) - 1).clamp(min=0)
    return z.gather(1, idx[..., None].expand(-1, -1, z.shape[-1]))


def confidence(p: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """c_t = p_t where a boundary fired, else 1 - p_t."""
    return torch.where(b, p, 1 - p)


def ste(c: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    """Value 1 forward with c's gradient backward; the `ste: false` ablation multiplies by c."""
    return c + (1 - c).detach() if enabled else c


def ratio_loss(
    b: torch.Tensor,
    p: torch.Tensor,
    target: float,
    valid: torch.Tensor | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Eq. 10: N/(N-1) * ((N-1) F G + (1-F)(1-G)); F = mean b, G = mean p over valid positions.

    `reduce` (data parallelism) sums a tensor over ranks in place: F and G are then the means
    over the global batch, so the loss does not depend on how the batch is sharded. The loss is
    linear in G, so each rank returns the global value with the gradient of its own rows'
    share of G (sum over ranks of p / global count): summed over ranks, those gradients are
    exactly the gradient of the global loss.
    """
    w = torch.ones_like(p) if valid is None else valid.to(p.dtype)
    sum_b, sum_p, count = (b.to(p.dtype) * w).sum(), (p * w).sum(), w.sum()
    if reduce is not None:
        total = reduce(torch.stack([sum_b, sum_p, count]).detach().clone())
        denom = total[2].clamp(min=1)
        F_ = total[0] / denom
        G = total[1] / denom + (sum_p - sum_p.detach()) / denom
    else:
        denom = count.clamp(min=1)
        F_, G = sum_b / denom, sum_p / denom
    N = target
    return N / (N - 1) * ((N - 1) * F_ * G + (1 - F_) * (1 - G))
