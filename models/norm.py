"""RMSNorm, and the gated RMSNorm that closes a Mamba-2 mixer (on CPU, each one C pass per
position when it is built: `kernels/norm_cpu.c`)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from hnetbench.kernels import cpu_build, norm_cpu


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if cpu_build.handles(x) and norm_cpu.available():
            return norm_cpu.rms_norm_cpu(x, self.weight, self.eps)
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def gated_rms_norm_reference(x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor,
                             group_size: int, eps: float) -> torch.Tensor:
    """y = RMSNorm(x * silu(z)) * weight, per group of `group_size` channels, with autograd."""
    g = (x * F.silu(z)).unflatten(-1, (-1, group_size))
    g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + eps)
    return g.flatten(-2) * weight


class _GatedRMSNorm(torch.autograd.Function):
    """`gated_rms_norm_reference` with a written-out backward. At the byte level these are
    full-width passes over (batch, length, d_inner) tensors; autograd's version makes ~20 of
    them, this ~14. With g = x silu(z), h = g r (r = 1/rms per group), y = h w:
      dh = dy w;  dg = r (dh - h mean(dh h));  dx = dg silu(z);  dz = dg x silu'(z);
      dw = sum over positions of dy h."""

    @staticmethod
    def forward(ctx, x, z, weight, group_size, eps):  # noqa: ANN001, ANN205
        s = F.silu(z)
        g = (x * s).unflatten(-1, (-1, group_size))
        r = torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, z, s, r, weight)
        ctx.group_size = group_size
        return (g * r).flatten(-2).mul_(weight)

    @staticmethod
    def backward(ctx, dy):  # noqa: ANN001, ANN205
        x, z, s, r, weight = ctx.saved_tensors
        gs = ctx.group_size
        h = (x * s).unflatten(-1, (-1, gs)).mul_(r)
        dh = (dy * weight).unflatten(-1, (-1, gs))
        dw = None
        if ctx.needs_input_grad[2]:
            dw = (dy * h.flatten(-2)).reshape(-1, dy.shape[-1]).sum(0)
        mean_dh_h = (dh * h).mean(-1, keepdim=True)
        dg = torch.addcmul(dh, h, mean_dh_h, value=-1).mul_(r).flatten(-2)
        dx = dg * s
        dz = torch.ops.aten.silu_backward(dg.mul_(x), z)
        return dx, dz, dw, None, None


class GatedRMSNorm(nn.Module):
    """y = RMSNorm(x * silu(z)) * w, normalised per group of `group_size` channels (Mamba-2)."""

    def __init__(self, d: int, group_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        if d % group_size:
            raise ValueError(f"gated norm: width {d} not divisible by group size {group_size}")
        self.eps, self.group_size = eps, group_size
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if cpu_build.handles(x) and norm_cpu.available():  # (builds the C file on first use)
            return norm_cpu.gated_rms_norm_cpu(x, z, self.weight, self.group_size, self.eps)
        return _GatedRMSNorm.apply(x, z, self.weight, self.group_size, self.eps)
