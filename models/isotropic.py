"""An isotropic network: a stack of blocks at one width, closed by an RMSNorm.

Used alone (Transformer, Mamba models) and as every encoder, main network and decoder of an
H-Net. `final_norm=False` serves the norm-balance ablation.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from hnetbench.models.blocks import Block, LevelSpec, parse_layout
from hnetbench.models.norm import RMSNorm
from hnetbench.models.seqinfo import Extension, Seq, Step


class Isotropic(nn.Module):
    def __init__(self, layout: str, spec: LevelSpec, final_norm: bool = True) -> None:
        super().__init__()
        self.layout = layout
        self.layers = nn.ModuleList(Block(kind, spec) for kind in parse_layout(layout))
        self.norm = RMSNorm(spec.d) if final_norm else nn.Identity()

    def forward(self, x: torch.Tensor, seq: Seq, collect: list | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, seq, collect)
        return self.norm(x)

    def step(self, x: torch.Tensor, st: Step, caches: list) -> torch.Tensor:
        for layer, cache in zip(self.layers, caches, strict=True):
            x = layer.step(x, st, cache)
        return self.norm(x)

    def extend(self, x: torch.Tensor, ext: Extension, caches: list) -> torch.Tensor:
        for layer, cache in zip(self.layers, caches, strict=True):
            x = layer.extend(x, ext, cache)
        return self.norm(x)
