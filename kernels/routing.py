"""Routing probabilities (paper Eq. 4) from already-projected queries and keys.

p_t = 0.5 * (1 - cos(q_t, k_{t-1})), with p = 1 at the first position of every document.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(q: torch.Tensor, k: torch.Tensor, doc_start: torch.Tensor | None) -> None:
    ds = None if doc_start is None else tuple(doc_start.shape)
    if q.dim() != 3 or k.shape != q.shape or ds not in (None, tuple(q.shape[:2])):
        raise ValueError(
            f"cosine_probs: expected q, k (B, L, D) and doc_start (B, L), got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {ds}"
        )


def cosine_probs_reference(
    q: torch.Tensor, k: torch.Tensor, doc_start: torch.Tensor | None = None
) -> torch.Tensor:
    """q, k: (B, L, D); doc_start: (B, L) bool (position 0 is always a start) -> p: (B, L)."""
    _check(q, k, doc_start)
    cos = F.cosine_similarity(q[:, 1:], k[:, :-1], dim=-1, eps=1e-6)
    p = torch.clamp(0.5 * (1 - cos), 0.0, 1.0)
    p = F.pad(p, (1, 0), value=1.0)
    if doc_start is not None:
        p = torch.where(doc_start, torch.ones_like(p), p)
    return p
