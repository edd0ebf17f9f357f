"""Boundary decisions: where a new chunk starts.

- `cosine` router (paper Eq. 4): q = W_q x, k = W_k x (square, bias-free, identity init),
  p_t = 0.5 * (1 - cos(q_t, k_{t-1})).
- `linear` router (ablation): p_t = sigmoid(w . x_t + b), a learned per-position scorer.
Boundaries b_t = p_t > 0.5 (strict, as the reference code). Position 0 and every document start
get p = 1 and b = 1.
Non-learned chunking: `space` (SpaceByte's rule) and `pool` (every pool_size positions of a
document). For those p = b as float, so STE, smoothing and the ratio loss become no-ops (the
model reports ratio loss 0 for such a stage).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from hnetbench.kernels import cosine_probs


def spacelike(ids: torch.Tensor) -> torch.Tensor:
    """SpaceByte: a byte is spacelike unless it is a letter, a digit or a UTF-8 continuation
    byte (0x80-0xBF). UTF-8 leading bytes (0xC0-0xFF) are therefore spacelike, as in SpaceByte,
    so each multi-byte character starts a patch. Special ids (>= 256, e.g. BOS) are spacelike."""
    letter = ((ids >= 0x41) & (ids <= 0x5A)) | ((ids >= 0x61) & (ids <= 0x7A))
    digit = (ids >= 0x30) & (ids <= 0x39)
    continuation = (ids >= 0x80) & (ids <= 0xBF)
    return ~(letter | digit | continuation)


def space_boundaries(ids: torch.Tensor) -> torch.Tensor:
    """A boundary at a spacelike byte that follows a non-spacelike one. ids: (B, L) -> bool."""
    sp = spacelike(ids)
    prev = F.pad(sp, (1, 0), value=True)[:, :-1]
    return sp & ~prev


class Router(nn.Module):
    def __init__(self, d: int, kind: str = "cosine") -> None:
        super().__init__()
        self.kind = kind
        if kind == "cosine":
            self.q_proj = nn.Linear(d, d, bias=False)
            self.k_proj = nn.Linear(d, d, bias=False)
            nn.init.eye_(self.q_proj.weight)
            nn.init.eye_(self.k_proj.weight)
            self.q_proj._keep_init = self.k_proj._keep_init = True
        elif kind == "linear":
            self.score = nn.Linear(d, 1)
        else:
            raise ValueError(f"model.router: expected cosine|linear, got {kind!r}")

    def forward(
        self, h: torch.Tensor, doc_start: torch.Tensor, backend: str = "auto"
    ) -> torch.Tensor:
        """h: (B, L, D), doc_start: (B, L) bool -> p: (B, L) in [0, 1], 1 at document starts."""
        if self.kind == "cosine":
            return cosine_probs(self.q_proj(h), self.k_proj(h), doc_start, backend)
        p = self._linear_p(h)
        p = torch.where(doc_start, torch.ones_like(p), p)
        return torch.cat([torch.ones_like(p[:, :1]), p[:, 1:]], dim=1)

    def _linear_p(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.score(h).squeeze(-1).float()).to(h.dtype)

    def step(
        self, h: torch.Tensor, prev_k: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """h: (n, D) new position, prev_k: (n, D) key of the previous position -> (p, new key)."""
        return self.extend(h[:, None], prev_k)[:, 0], self.keys(h)

    def extend(self, h: torch.Tensor, prev_k: torch.Tensor | None) -> torch.Tensor:
        """h: (n, L, D) new positions after a cached one whose key is prev_k (n, D) -> p (n, L)
        (no document starts among them)."""
        if self.kind == "cosine":
            prev = torch.cat([prev_k[:, None], self.k_proj(h[:, :-1])], dim=1)
            cos = F.cosine_similarity(self.q_proj(h), prev, dim=-1, eps=1e-6)
            return torch.clamp(0.5 * (1 - cos), 0.0, 1.0)
        return self._linear_p(h)

    def keys(self, h: torch.Tensor) -> torch.Tensor | None:
        return self.k_proj(h) if self.kind == "cosine" else None


def boundaries(p: torch.Tensor, doc_start: torch.Tensor) -> torch.Tensor:
    b = (p > 0.5) | doc_start
    b[:, 0] = True
    return b
