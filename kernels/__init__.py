"""Kernels for H-Net-specific operations, each with a pure-torch reference beside it.

Dispatch: CUDA tensors use a Triton kernel when triton is installed, CPU tensors the torch path;
`backend` ("auto" | "torch" | "triton", i.e. ModelConfig.kernels) forces either. Triton on CPU
tensors works only under TRITON_INTERPRET=1 (set before triton is first imported; tests only).
The Triton modules are imported lazily so importing this package never pulls in triton.
`ssd_cpu`, `conv_cpu` and `norm_cpu` are the Mamba-2 mixer's scan, conv + SiLU and gated RMSNorm
as C loops for CPU tensors, built by `cpu_build` (used through `models.ssd.ssd_scan`,
`models.doc_conv.doc_conv` and `models.norm.GatedRMSNorm`); `ema_cpu` is the smoothing EMA's
(`ema_smooth` on float32/float64 CPU tensors, whatever `backend` says but triton).
"""

from __future__ import annotations

import importlib.util
import os

import torch
from hnetbench.kernels.ema import ema_chunked, ema_reference
from hnetbench.kernels.routing import cosine_probs_reference

BACKENDS = ("auto", "torch", "triton")


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "").lower() in ("1", "true", "on", "yes")


def _use_triton(name: str, t: torch.Tensor, backend: str) -> bool:
    if backend not in BACKENDS:
        raise ValueError(
            f"{name}: backend (model.kernels) {backend!r} is not one of {'|'.join(BACKENDS)}"
        )
    if backend == "torch":
        return False
    if backend == "auto":
        return t.is_cuda and triton_available()
    if not triton_available():
        raise ValueError(f"{name}: backend='triton' needs the triton package (pip install triton)")
    if not t.is_cuda and not _interpret():
        raise ValueError(
            f"{name}: backend='triton' needs CUDA tensors, got {t.device.type} "
            "(use backend='torch' or 'auto', or TRITON_INTERPRET=1 to run Triton on CPU)"
        )
    return True


def ema_smooth(x: torch.Tensor, p: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Smoothing EMA over chunks, x (B, M, D), p (B, M) -> (B, M, D); see kernels/ema.py."""
    if _use_triton("ema_smooth", x, backend):
        from hnetbench.kernels.ema_triton import ema_triton

        return ema_triton(x, p)
    from hnetbench.kernels import cpu_build, ema_cpu

    if cpu_build.handles(x) and ema_cpu.available():  # (builds the C file on first use)
        return ema_cpu.ema_cpu(x, p)
    return ema_chunked(x, p)


def cosine_probs(
    q: torch.Tensor,
    k: torch.Tensor,
    doc_start: torch.Tensor | None = None,
    backend: str = "auto",
    return_boundaries: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Boundary probabilities p (B, L) from adjacent cosine similarity; see kernels/routing.py.
    With return_boundaries=True returns (p, p > 0.5), the boundary mask fused in one pass."""
    if _use_triton("cosine_probs", q, backend):
        from hnetbench.kernels.routing_triton import cosine_probs_triton

        p, b = cosine_probs_triton(q, k, doc_start)
    else:
        p = cosine_probs_reference(q, k, doc_start)
        b = p > 0.5
    return (p, b) if return_boundaries else p


__all__ = [
    "BACKENDS",
    "cosine_probs",
    "cosine_probs_reference",
    "ema_chunked",
    "ema_reference",
    "ema_smooth",
    "triton_available",
]
