"""Gated (SwiGLU) MLP used after attention (T) and in main-network Mamba layers (M). On CPU
(float32 and float64) its activation is one C pass (`kernels/swiglu_cpu.c`)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from hnetbench.kernels import cpu_build, swiglu_cpu


class SwiGLU(nn.Module):
    def __init__(self, d: int, d_hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, 2 * d_hidden, bias=False)  # gate and value in one matmul
        self.fc2 = nn.Linear(d_hidden, d, bias=False)
        self.fc2._residual_out = True  # scaled at init (see lm.py)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if cpu_build.handles(h) and swiglu_cpu.available():
            return self.fc2(swiglu_cpu.swiglu_cpu(h))
        gate, value = h.chunk(2, dim=-1)
        return self.fc2(F.silu(gate) * value)
