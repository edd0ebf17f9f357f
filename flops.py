"""Analytic forward FLOPs per byte (paper App. B) and compute/data matching across families.

Per position of a stage with width D (App. B; shapes as built by hnetbench.models):
- attention: QKV 2*D*3D, out proj 2*D*D, scores 2*K*D and score@V 2*K*D with K = keys attended
  (min(L, window), full L for causal attention as the paper counts it), softmax 3*H*K;
- Mamba-2 (E = expand*D, N = d_state, H = E/headdim, one group): in proj 2*D*(2E + 2N + H),
  out proj 2*E*D, SSD scan 6*E*N, depthwise conv 2*(E + 2N)*d_conv, gating 5*E;
- SwiGLU MLP of width F: 2*3*D*F, gating 5*F;
- stage 0: embedding 2*V*D (the paper counts the lookup as a matmul) and LM head 2*D*V;
- each H-Net stage: routing W_q, W_k 2*2*D*D (dc, cosine router), residual projection 2*D*D.
(App. B writes Mamba's out proj as 2*L*D*D; the layer multiplies E x D, so 2*E*D is used here.)
Encoders/decoders of stage s run on L / prod(N_0..N_{s-1}) positions; compression N_s is the
target ratio before training or a measured one after. Training FLOPs = 3 x forward.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

from hnetbench.baselines.validate import parse_layout, per_stage
from hnetbench.config import ConfigError, ModelConfig

CATEGORIES = ("matmul", "attention", "ssd", "embedding", "other")  # attention is part of matmul


@dataclass
class FlopsReport:
    params: int | None
    seq_len: int  # bytes per sequence
    bytes_per_token: float
    compression: list[float]  # N_s per stage boundary (empty for isotropic models)
    stages: list[dict] = field(default_factory=list)  # per stage: forward FLOPs per byte by term
    forward_per_byte: float = 0.0
    train_per_byte: float = 0.0
    matmul_per_byte: float = 0.0  # projections, MLPs, head, attention products
    attention_per_byte: float = 0.0  # the attention products alone (QK^T, AV)
    ssd_per_byte: float = 0.0
    embedding_per_byte: float = 0.0
    other_per_byte: float = 0.0  # conv, gating, softmax

    def to_dict(self) -> dict:
        return asdict(self)


def _zero() -> dict[str, float]:
    return dict.fromkeys(CATEGORIES, 0.0)


def block_flops(kind: str, cfg: ModelConfig, s: int, seq_positions: float) -> dict[str, float]:
    """Forward FLOPs per position of one block ('m', 'M', 't', 'T') at stage s."""
    d, f = cfg.d_model[s], cfg.d_intermediate[s]
    out = _zero()
    if kind in "mM":
        e, n = cfg.mamba_expand * d, cfg.mamba_d_state
        h = e // cfg.mamba_headdim
        out["matmul"] += 2 * d * (2 * e + 2 * n + h) + 2 * e * d
        out["ssd"] += 6 * e * n
        out["other"] += 2 * (e + 2 * n) * cfg.mamba_d_conv + 5 * e
    else:
        n = len(cfg.d_model)
        heads = per_stage(cfg.attn_num_heads, n, "attn_num_heads")[s]
        window = per_stage(cfg.attn_window, n, "attn_window")[s]
        keys = min(seq_positions, window) if window > 0 else seq_positions
        scores = 4 * keys * d
        out["matmul"] += 2 * d * 3 * d + 2 * d * d + scores
        out["attention"] += scores
        out["other"] += 3 * heads * keys
    if kind in "MT":
        out["matmul"] += 2 * 3 * d * f
        out["other"] += 5 * f
    return out


def forward_flops(cfg: ModelConfig, lengths: list[float]) -> list[dict[str, float]]:
    """Forward FLOPs of one sequence, per stage and term; lengths[s] = positions at stage s."""
    stages = parse_layout(cfg.layout)
    if len(lengths) != len(stages):
        raise ConfigError(f"forward_flops: expected {len(stages)} stage lengths, got {lengths}")
    result = []
    for s, st in enumerate(stages):
        blocks = st if s == len(stages) - 1 else st[0] + st[1]
        tot = _zero()
        for kind, count in blocks:
            for k, v in block_flops(kind, cfg, s, lengths[s]).items():
                tot[k] += count * v
        d = cfg.d_model[s]
        if s == 0:
            tot["embedding"] += 2 * cfg.vocab_size * d
            tot["matmul"] += 2 * d * cfg.vocab_size
        if s < len(stages) - 1:
            if cfg.chunking == "dc":
                tot["matmul"] += 4 * d * d if cfg.router == "cosine" else 2 * d
            if cfg.residual_proj:
                tot["matmul"] += 2 * d * d
        result.append({k: v * lengths[s] for k, v in tot.items()})
    return result


def default_compression(cfg: ModelConfig) -> list[float]:
    """Per-stage N_s before training: the pool size, or the ratio targets."""
    n = len(parse_layout(cfg.layout)) - 1
    if n == 0:
        return []
    if cfg.chunking == "pool":
        return [float(cfg.pool_size)] * n
    return [float(x) for x in per_stage(cfg.ratio_targets, n, "ratio_targets")]


def normalize_compression(cfg: ModelConfig, compression: float | list[float] | None) -> list[float]:
    """None -> defaults; one number for a multi-stage model is the innermost bytes per chunk,
    split evenly (geometrically) across stages; a list gives N_s per stage."""
    n = len(parse_layout(cfg.layout)) - 1
    if compression is None:
        return default_compression(cfg)
    if n == 0:
        return []
    if isinstance(compression, (int, float)):
        return [float(compression) ** (1.0 / n)] * n
    values = [float(c) for c in compression]
    if len(values) == 1:
        return [values[0] ** (1.0 / n)] * n
    if len(values) != n or any(c <= 0 for c in values):
        raise ConfigError(
            f"compression: expected {n} positive values (one per stage), got {values}"
        )
    return values


def flops_per_byte(
    model_cfg: ModelConfig,
    bytes_per_token: float = 1.0,
    compression: float | list[float] | None = None,
    seq_len: int = 8192,
    with_params: bool = True,
) -> FlopsReport:
    """Forward/training FLOPs per byte of `model_cfg` on sequences of `seq_len` bytes."""
    if bytes_per_token <= 0 or seq_len <= 0:
        raise ConfigError(f"flops: bytes_per_token and seq_len must be > 0, got "
                          f"{bytes_per_token}, {seq_len}")
    comp = normalize_compression(model_cfg, compression)
    lengths = [seq_len / bytes_per_token]
    for c in comp:
        lengths.append(lengths[-1] / c)
    per_stage_flops = forward_flops(model_cfg, lengths)
    rep = FlopsReport(None, seq_len, bytes_per_token, comp)
    for s, terms in enumerate(per_stage_flops):
        row = {k: v / seq_len for k, v in terms.items()}
        row["forward"] = row["matmul"] + row["ssd"] + row["embedding"] + row["other"]
        rep.stages.append({"stage": s, "d_model": model_cfg.d_model[s],
                           "positions_per_byte": lengths[s] / seq_len, **row})
        rep.matmul_per_byte += row["matmul"]
        rep.attention_per_byte += row["attention"]
        rep.ssd_per_byte += row["ssd"]
        rep.embedding_per_byte += row["embedding"]
        rep.other_per_byte += row["other"]
        rep.forward_per_byte += row["forward"]
    rep.train_per_byte = 3 * rep.forward_per_byte
    if with_params:
        from hnetbench.models import count_parameters  # late import: models need torch

        rep.params = int(count_parameters(model_cfg))
    return rep


# ----------------------------------------------------------------------------- matching


def _main_blocks(layout):
    """(container, index) of the innermost block string, so it can be rewritten in place;
    None when the whole layout is one string."""
    if isinstance(layout, str):
        return None
    node = layout
    while True:
        if len(node) == 1:  # ["T22"] or [[...]]
            if isinstance(node[0], str):
                return node, 0
            node = node[0]
        elif isinstance(node[1], str):  # [enc, "T22", dec]
            return node, 1
        else:  # [enc, [inner], dec]
            node = node[1]


def with_main(cfg: ModelConfig, depth: int, d_main: int | None = None) -> ModelConfig:
    """A copy of cfg whose main network's largest block run has `depth` layers (and, when
    given, width d_main with the MLP width and rotary dims scaled along)."""
    new = copy.deepcopy(cfg)
    where = _main_blocks(new.layout)
    text = new.layout if where is None else where[0][where[1]]
    blocks = parse_layout(text)[0]
    i = max(range(len(blocks)), key=lambda j: blocks[j][1])
    blocks[i] = (blocks[i][0], depth)
    text = "".join(f"{k}{n}" for k, n in blocks)
    if where is None:
        new.layout = text
    else:
        where[0][where[1]] = text
    if d_main is not None:
        n = len(new.d_model)
        old = new.d_model[-1]
        new.d_model[-1] = d_main
        if new.d_intermediate[-1] > 0:
            new.d_intermediate[-1] = max(8, round(new.d_intermediate[-1] * d_main / old / 8) * 8)
        heads = per_stage(new.attn_num_heads, n, "attn_num_heads")
        rot = per_stage(new.attn_rotary_dim, n, "attn_rotary_dim")
        rot[-1] = (d_main // heads[-1] // 2) // 2 * 2
        new.attn_num_heads, new.attn_rotary_dim = heads, rot
    return new


def main_depth(cfg: ModelConfig) -> int:
    where = _main_blocks(cfg.layout)
    text = cfg.layout if where is None else where[0][where[1]]
    return max(n for _, n in parse_layout(text)[0])


def match_depth(
    reference_cfg: ModelConfig,
    family_cfg: ModelConfig,
    ref_bytes_per_token: float,
    compression: float | list[float] | None = None,
    seq_len: int = 8192,
    family_bytes_per_token: float = 1.0,
    width: bool = False,
    tol: float = 0.03,
) -> tuple[ModelConfig, float]:
    """Main-network depth (and, with width=True, width) of family_cfg whose FLOPs per byte
    match the reference's; returns (config, relative error). Raises if nothing is within tol."""
    ref = flops_per_byte(reference_cfg, ref_bytes_per_token, None, seq_len, False)
    target = ref.forward_per_byte

    def err(c: ModelConfig) -> float:
        got = flops_per_byte(c, family_bytes_per_token, compression, seq_len, False)
        return got.forward_per_byte / target - 1.0

    d0 = family_cfg.d_model[-1]
    n = len(family_cfg.d_model)
    heads = per_stage(family_cfg.attn_num_heads, n, "attn_num_heads")[-1]
    step = 4 * heads  # keeps head dim a multiple of 4 (even rotary dims)
    widths = [None]
    if width:
        lo = max(family_cfg.d_model[-2] if n > 1 else step, d0 // 2)
        widths += [w for w in range(step * math.ceil(lo / step), 2 * d0 + 1, step) if w != d0]
    best = None
    for w in widths:
        for depth in range(1, 4 * main_depth(family_cfg) + 16):
            c = with_main(family_cfg, depth, w)
            e = err(c)
            key = (abs(e) > tol, 0 if w is None else abs(math.log(w / d0)), abs(e))
            if best is None or key < best[0]:
                best = (key, c, e)
        if best[0][0] is False and w is None:
            break  # depth alone matches at the original width
    _, cfg, e = best
    if abs(e) > tol:
        raise ConfigError(f"match_depth: closest main network is {100 * e:+.1f}% off the reference "
                          f"FLOPs per byte (tolerance {100 * tol:.0f}%); try width=True")
    return cfg, e


def matched_budget(
    models: dict[str, tuple[ModelConfig, float]],
    bytes_per_batch: int,
    total_bytes: int,
    seq_len: int,
    compression: dict[str, float | list[float] | None] | None = None,
) -> dict[str, dict]:
    """Give every model the same bytes per batch and total training bytes.

    models: name -> (model config, bytes per token). Returns name -> plan with data.seq_len,
    data.batch_size, train.steps, the training bytes and the analytic training FLOPs."""
    if bytes_per_batch < seq_len or bytes_per_batch % seq_len:
        raise ConfigError(f"matched_budget: bytes_per_batch {bytes_per_batch} must be a multiple "
                          f"of seq_len {seq_len}")
    steps = max(1, math.ceil(total_bytes / bytes_per_batch))
    plans = {}
    for name, (cfg, bpt) in models.items():
        comp = (compression or {}).get(name)
        rep = flops_per_byte(cfg, bpt, comp, seq_len, with_params=False)
        train_bytes = steps * bytes_per_batch
        plans[name] = {
            "seq_len": seq_len,
            "tokens_per_seq": round(seq_len / bpt),
            "batch_size": bytes_per_batch // seq_len,
            "steps": steps,
            "train_bytes": train_bytes,
            "flops_per_byte": rep.forward_per_byte,
            "train_flops": rep.train_per_byte * train_bytes,
        }
    return plans
