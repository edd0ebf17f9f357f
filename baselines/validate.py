"""Layout parsing and one-line validation of a ModelConfig (every family and ablation switch)."""

from __future__ import annotations

import re
from typing import Any

from hnetbench.config import ConfigError, ModelConfig

CHOICES = {
    "arch": ("hnet", "isotropic"),
    "chunking": ("dc", "space", "pool"),
    "router": ("cosine", "linear"),
    "downsample": ("select", "mean", "max"),
    "kernels": ("auto", "torch", "triton"),
}
_BLOCK = re.compile(r"([mMtT])(\d+)")

Blocks = list[tuple[str, int]]  # [("m", 4), ("T", 1)]: kind letter, count


def parse_blocks(text: Any, key: str = "model.layout") -> Blocks:
    """'T1m4' -> [('T', 1), ('m', 4)]; anything else is a one-line ConfigError."""
    if not isinstance(text, str) or not text:
        raise ConfigError(f"{key}: expected a block string like 'm4' or 'T1m4', got {text!r}")
    blocks = [(k, int(n)) for k, n in _BLOCK.findall(text)]
    if "".join(f"{k}{n}" for k, n in _BLOCK.findall(text)) != text or any(n < 1 for _, n in blocks):
        raise ConfigError(
            f"{key}: bad block string {text!r} (expected m/M/t/T each followed by a count >= 1, "
            "e.g. 'm4' or 'T1m4'; upper case adds an MLP)"
        )
    return blocks


def parse_layout(layout: Any) -> list[tuple[Blocks, Blocks] | Blocks]:
    """Nested layout -> one item per stage: (encoder, decoder) for outer stages, then the main
    network's blocks. "T4" / ["T4"] is isotropic; ["m4", ["T22"], "m4"] a 1-stage H-Net."""
    out: list = []
    node, key = layout, "model.layout"
    while True:
        if isinstance(node, (list, tuple)) and len(node) == 1:
            node = node[0]
        if isinstance(node, str):
            out.append(parse_blocks(node, key))
            return out
        if not (isinstance(node, (list, tuple)) and len(node) == 3):
            raise ConfigError(
                f"{key}: expected a block string or [encoder, [inner...], decoder], got {node!r}"
            )
        enc, inner, dec = node
        out.append((parse_blocks(enc, key), parse_blocks(dec, key)))
        node, key = inner, key + "[1]"


def n_stages(layout: Any) -> int:
    return len(parse_layout(layout))


def per_stage(values: list, n: int, key: str) -> list:
    """Broadcast a one-element per-stage list; other lengths must equal the number of stages."""
    if len(values) == 1:
        return list(values) * n
    if len(values) != n:
        raise ConfigError(f"model.{key}: expected 1 or {n} values (one per stage), got {values}")
    return list(values)


def validate_model_config(cfg: ModelConfig) -> None:
    """Raise ConfigError (one line, naming the key and the valid values) on a bad config."""
    for key, valid in CHOICES.items():
        value = getattr(cfg, key)
        if value not in valid:
            raise ConfigError(f"model.{key}: unknown value {value!r} (valid: {', '.join(valid)})")
    stages = parse_layout(cfg.layout)
    n = len(stages)
    if cfg.arch == "isotropic" and n != 1:
        raise ConfigError(
            f"model.arch: 'isotropic' needs a single-stage layout, got {cfg.layout!r}"
        )
    if cfg.arch == "hnet" and n < 2:
        raise ConfigError(
            "model.arch: 'hnet' needs a nested layout [encoder, [main], decoder], "
            f"got {cfg.layout!r}"
        )
    for key in ("d_model", "d_intermediate"):
        if len(getattr(cfg, key)) != n:
            got = getattr(cfg, key)
            raise ConfigError(f"model.{key}: expected {n} values (one per stage), got {got}")
    if any(d <= 0 for d in cfg.d_model) or any(f < 0 for f in cfg.d_intermediate):
        raise ConfigError(f"model.d_model/d_intermediate: expected positive widths, got "
                          f"{cfg.d_model} / {cfg.d_intermediate}")
    if any(b < a for a, b in zip(cfg.d_model, cfg.d_model[1:])):
        raise ConfigError(f"model.d_model: widths must not shrink inward, got {cfg.d_model}")
    heads = per_stage(cfg.attn_num_heads, n, "attn_num_heads")
    rotary = per_stage(cfg.attn_rotary_dim, n, "attn_rotary_dim")
    per_stage(cfg.attn_window, n, "attn_window")
    for s, st in enumerate(stages):
        blocks = st if s == n - 1 else st[0] + st[1]
        d = cfg.d_model[s]
        kinds = {k for k, c in blocks if c > 0}
        if kinds & {"M", "T"} and cfg.d_intermediate[s] <= 0:
            raise ConfigError(f"model.d_intermediate[{s}]: upper-case blocks (M/T) need an MLP "
                              f"width > 0, got {cfg.d_intermediate[s]}")
        if kinds & {"t", "T"}:
            if heads[s] <= 0 or d % heads[s]:
                raise ConfigError(
                    f"model.attn_num_heads[{s}]: {heads[s]} does not divide d_model {d}"
                )
            if rotary[s] % 2 or rotary[s] > d // heads[s]:
                raise ConfigError(
                    f"model.attn_rotary_dim[{s}]: expected an even number <= head dim "
                    f"{d // heads[s]}, got {rotary[s]}"
                )
        if kinds & {"m", "M"} and (cfg.mamba_expand * d) % cfg.mamba_headdim:
            raise ConfigError(f"model.mamba_headdim: {cfg.mamba_headdim} does not divide "
                              f"expand * d_model = {cfg.mamba_expand * d} (stage {s})")
    if n > 1:
        targets = per_stage(cfg.ratio_targets, n - 1, "ratio_targets")
        if cfg.chunking == "dc" and any(t <= 1 for t in targets):
            raise ConfigError(f"model.ratio_targets: expected values > 1, got {cfg.ratio_targets}")
    if cfg.pool_size < 1:
        raise ConfigError(f"model.pool_size: expected >= 1, got {cfg.pool_size}")
    if cfg.vocab_size <= 0:
        raise ConfigError(f"model.vocab_size: expected > 0, got {cfg.vocab_size}")
