"""Smoothing EMA over chunks (paper Eq. 5): zbar_t = P_t * z_t + (1 - P_t) * zbar_{t-1}.

`ema_reference` is the plain sequential loop: the ground truth every faster path is tested
against. A chunk whose P is exactly 1 (the first chunk of every document) restarts the EMA, so
no information crosses a document boundary.
"""

from __future__ import annotations

import torch


def ema_reference(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """x: (B, M, D) chunk vectors, p: (B, M) probabilities in [0, 1] -> (B, M, D)."""
    if x.dim() != 3 or p.shape != x.shape[:2]:
        raise ValueError(f"ema: expected x (B, M, D) and p (B, M), got {tuple(x.shape)} and {tuple(p.shape)}")
    p = p.to(x.dtype).unsqueeze(-1)
    out = []
    prev = torch.zeros_like(x[:, 0])
    for t in range(x.shape[1]):
        prev = p[:, t] * x[:, t] + (1 - p[:, t]) * prev
        out.append(prev)
    return torch.stack(out, dim=1) if out else x.clone()
