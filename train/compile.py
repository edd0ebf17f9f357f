"""`train.compile`: torch.compile of the residual blocks, with bucketed lengths.

Compiling the whole model is not the way: an H-Net's inner stages see a new chunk count every
step, and dynamo recompiles (then gives up at its recompile limit) for each. Here each
`models.blocks.Block` is compiled on its own, and its input length is padded up to a bucket
(at most 4 per octave, so <= 25% padding) before the compiled call and sliced back after. The
padding goes at the end: every mixer is causal (attention, conv, scan), so padded positions
never reach a valid one. A run therefore compiles once per (block kind, width, bucket), and
inductor's cache under $HNETBENCH_CACHE/inductor is kept between runs, so later runs of a sweep
with the same shape family load the kernels instead of generating them.

Modes: `off`; `blocks` (always); `auto` = `blocks` on CPU for runs planned at >= AUTO_MIN_BYTES
(8 MiB) of training (a cold compile costs minutes and pays back only on long runs), else `off`:
tests, `reproduce` and short sweeps stay eager. Evaluation, generation and prefill (no grad,
or collecting caches) run eagerly. `true`/`false` from older configs mean `blocks`/`off`.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from hnetbench.config import ConfigError

MODES = ("auto", "off", "blocks")
# 2048 steps of 8 x 512 bytes. A cold compile of the blocks costs ~1-2 CPU-minutes per shape
# family quiet (measured 11 wall-minutes under 7x oversubscription) and saves ~25-40% of the
# step; at cpu-tiny that pays back after ~4-8 MiB of training, less with a warm cache.
AUTO_MIN_BYTES = 2**23
RECOMPILE_LIMIT = 64  # (kind, width, bucket, lengths or not) entries per code object
BACKEND = "inductor"  # tests trace with "eager" (no C++ compile)


def normalize_mode(value: Any) -> str:
    """`train.compile` as one of MODES (bools from older configs accepted)."""
    if value is True:
        return "blocks"
    if value is False or value is None:
        return "off"
    if isinstance(value, str) and value in MODES:
        return value
    raise ConfigError(f"train.compile: expected one of {'|'.join(MODES)}, got {value!r}")


def resolve_mode(value: Any, device: torch.device, planned_bytes: int) -> str:
    """What `auto` means for this run: `blocks` or `off`."""
    mode = normalize_mode(value)
    if mode != "auto":
        return mode
    if device.type == "cpu" and planned_bytes >= AUTO_MIN_BYTES and _have_compiler():
        return "blocks"
    return "off"


def _have_compiler() -> bool:
    import shutil

    return any(shutil.which(c) for c in ("cc", "gcc", "clang", "g++"))


def bucket(n: int) -> int:
    """Length n rounded up to one of 4 steps per octave (32 at least): 40, 48, 56, 64, 80, ..."""
    if n <= 32:
        return 32
    step = 2 ** (math.floor(math.log2(n - 1)) - 2)
    return -(-n // step) * step


def cache_dir() -> Path:
    from hnetbench.data.corpus import cache_dir as hnetbench_cache  # lazy: no start-up cost

    return hnetbench_cache() / "inductor"


def _set_up_cache() -> None:
    """Keep inductor's on-disk cache (kernels, FX graphs, AOT autograd) in our cache dir, unless
    the user chose one."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir()))
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)


class CompileStats:
    """Compile cost seen by this process: shapes compiled and seconds spent in first calls."""

    def __init__(self) -> None:
        self.mode = "off"
        self.shapes: set[tuple] = set()
        self.first_call_s = 0.0

    def as_metrics(self) -> dict:
        return {"compile_mode": self.mode, "compile_shapes": len(self.shapes),
                "compile_s": round(_dynamo_compile_s() or self.first_call_s, 3)}


def _dynamo_compile_s() -> float | None:
    """Seconds dynamo + inductor spent compiling in this process (forward and backward)."""
    try:
        from torch._dynamo.utils import calculate_time_spent

        spent = calculate_time_spent()
    except Exception:  # noqa: BLE001 - private API: fall back to first-call timing
        return None
    keys = [k for k in ("entire_frame_compile", "entire_backward_compile") if k in spent]
    return float(sum(spent[k] for k in keys)) if keys else None


def _block_call(block: nn.Module, x: torch.Tensor, doc: torch.Tensor, pos: torch.Tensor,
                lengths: torch.Tensor | None) -> torch.Tensor:
    from hnetbench.models.blocks import Block
    from hnetbench.models.seqinfo import Seq

    return Block.forward(block, x, Seq(doc, pos, lengths))


_compiled_block_call = None


def _compiled() -> Any:
    global _compiled_block_call
    if _compiled_block_call is None:
        _set_up_cache()
        _compiled_block_call = torch.compile(_block_call, dynamic=False, backend=BACKEND)
    return _compiled_block_call


def _wrap(block: nn.Module, stats: CompileStats) -> None:
    eager = block.forward

    def forward(x: torch.Tensor, seq: Any, collect: list | None = None) -> torch.Tensor:
        if collect is not None or seq.capacity or not torch.is_grad_enabled():
            return eager(x, seq, collect)
        L = x.shape[1]
        pad = bucket(L) - L
        doc, pos = seq.doc, seq.pos
        if pad:  # the tail continues the last document: causal mixers never look back at it
            x = torch.nn.functional.pad(x, (0, 0, 0, pad))
            doc = torch.cat([doc, doc[:, -1:].expand(-1, pad)], dim=1)
            pos = torch.cat([pos, pos[:, -1:] + torch.arange(1, pad + 1, device=pos.device)], 1)
        key = (type(block.mixer).__name__, block.mlp is None, x.shape, x.dtype,
               seq.lengths is None)
        t0 = time.perf_counter() if key not in stats.shapes else None
        y = _compiled()(block, x, doc, pos, seq.lengths)
        if t0 is not None:
            stats.shapes.add(key)
            stats.first_call_s += time.perf_counter() - t0
        return y[:, :L] if pad else y

    block.forward = forward


def compile_blocks(model: nn.Module, mode: str) -> CompileStats:
    """Compile every Block of `model` in place (mode `blocks`); `off` leaves it eager."""
    from hnetbench.models.blocks import Block

    stats = CompileStats()
    stats.mode = mode
    if mode == "blocks":
        for m in model.modules():
            if isinstance(m, Block):
                _wrap(m, stats)
    return stats
