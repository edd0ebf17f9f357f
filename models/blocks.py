"""Layout strings and pre-norm residual blocks.

Layout letters: m = Mamba-2, M = Mamba-2 + MLP, t = attention, T = attention + MLP, each with a
repeat count: "M4", "T1M4", "T22". A block is x + mixer(norm(x)) [+ mlp(norm(x))].
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn as nn
from hnetbench.config import ConfigError
from hnetbench.models.attention import Attention
from hnetbench.models.mamba2 import Mamba2
from hnetbench.models.mlp import SwiGLU
from hnetbench.models.norm import RMSNorm
from hnetbench.models.seqinfo import Extension, Seq, Step

_TOKEN = re.compile(r"([mMtT])(\d+)")


def parse_layout(layout: str) -> list[str]:
    """ "T1M4" -> ["T", "M", "M", "M", "M"]; a one-line ConfigError for anything else."""
    if not isinstance(layout, str) or not layout:
        raise ConfigError(f"model.layout: expected a layout string like 'T1M4', got {layout!r}")
    pos, kinds = 0, []
    for m in _TOKEN.finditer(layout):
        if m.start() != pos or int(m.group(2)) == 0:
            break
        kinds += [m.group(1)] * int(m.group(2))
        pos = m.end()
    if pos != len(layout) or not kinds:
        raise ConfigError(
            f"model.layout: bad layout {layout!r} (expected letters m/M/t/T each followed by a "
            "count >= 1, e.g. 'T1M4')"
        )
    return kinds


@dataclass
class LevelSpec:
    """Everything a layer at one hierarchy level needs (taken from ModelConfig)."""

    d: int
    d_intermediate: int
    n_heads: int
    rotary_dim: int
    window: int
    d_state: int
    d_conv: int
    expand: int
    headdim: int
    ngroups: int
    chunk_size: int


class Block(nn.Module):
    def __init__(self, kind: str, spec: LevelSpec) -> None:
        super().__init__()
        self.norm1 = RMSNorm(spec.d)
        if kind in "tT":
            self.mixer = Attention(spec.d, spec.n_heads, spec.rotary_dim, spec.window)
        else:
            self.mixer = Mamba2(
                spec.d,
                spec.d_state,
                spec.d_conv,
                spec.expand,
                spec.headdim,
                spec.ngroups,
                spec.chunk_size,
            )
        self.mlp = None
        if kind in "MT":
            if spec.d_intermediate <= 0:
                raise ConfigError(
                    f"model.d_intermediate: layer '{kind}' needs an MLP width > 0 "
                    f"(d_model {spec.d})"
                )
            self.norm2 = RMSNorm(spec.d)
            self.mlp = SwiGLU(spec.d, spec.d_intermediate)

    def forward(self, x: torch.Tensor, seq: Seq, collect: list | None = None) -> torch.Tensor:
        x = x + self.mixer(self.norm1(x), seq, collect)
        if self.mlp is not None:
            x = x + self.mlp(self.norm2(x))
        return x

    def step(self, x: torch.Tensor, st: Step, cache: dict) -> torch.Tensor:
        x = x + self.mixer.step(self.norm1(x), st, cache)
        if self.mlp is not None:
            x = x + self.mlp(self.norm2(x))
        return x

    def extend(self, x: torch.Tensor, ext: Extension, cache: dict) -> torch.Tensor:
        x = x + self.mixer.extend(self.norm1(x), ext, cache)
        if self.mlp is not None:
            x = x + self.mlp(self.norm2(x))
        return x
