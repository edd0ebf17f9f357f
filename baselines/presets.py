"""Named model presets `<family>@<scale>`: every model of the paper's Tables 1 and 5 as a config.

A preset is a function returning a partial RunConfig dict (`model`, `data`, sometimes `train`);
`config.resolve` layers it under the user's YAML and overrides. Baselines are configs, not forks:
every family is expressed with the same ModelConfig vocabulary (layout strings, chunking, switches).

Family notes (choices the paper leaves implicit, decided here):
- transformer-bpe: isotropic T layout on BPE tokens; GPT-2 tokenizer (vocab 50257) at paper
  scales, a BPE trained on the domain at CPU scales. Input embedding and head are tied (GPT-2
  style): Table 1's 760M / 1.3B only add up with one V x D matrix (untied would be 834M / 1.4B).
- llamabyte(-global): byte Transformer, sliding window 1024 (global: full causal attention).
- mambabyte: isotropic Mamba-2 without MLPs ("m28": 185M params, Table 1 says 190M).
- spacebyte: Transformer outer networks, spacelike boundaries, and none of H-Net's additions:
  no smoothing and no STE confidence (dechunking is a plain upsample), identity residual instead
  of the residual projection, no norm balance, no per-stage LR modulation (train.lr_mult none).
- spacebyte++: SpaceByte with Mamba-2 outer networks (still without H-Net's additions).
- hnet-space / hnet-pool: H-Net (norms, residual projection, LR modulation, smoothing) with
  spacelike / fixed 6-byte pooled boundaries; hnet-1stage (6-DC), hnet-2stage ((3,3)-DC).
- hnet-1stage-<ablation>: one switch of Section 3.3 / App. C flipped (cpu and paper-L scales).
- DNA (Table 5, scale `dna`): d_model 512, N_0 = 3, LR 5e-3.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

from hnetbench.baselines.validate import n_stages
from hnetbench.config import ConfigError


class PresetError(ConfigError):
    """Unknown preset name (one line, lists the valid names)."""


PresetFn = Callable[[], dict]
_REGISTRY: dict[str, PresetFn] = {}


def register_preset(name: str) -> Callable[[PresetFn], PresetFn]:
    """Decorator: `@register_preset("family@scale")` over a function returning a preset dict."""
    if "@" not in name:
        raise ValueError(f"preset name {name!r}: expected '<family>@<scale>'")

    def deco(fn: PresetFn) -> PresetFn:
        if name in _REGISTRY:
            raise ValueError(f"preset {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_presets(scale: str | None = None) -> list[str]:
    names = sorted(_REGISTRY)
    return [n for n in names if scale is None or n.split("@", 1)[1] == scale]


def list_scales() -> list[str]:
    return sorted({n.split("@", 1)[1] for n in _REGISTRY})


def preset_dict(name: str) -> dict:
    """The partial RunConfig dict of preset `name` (a fresh copy each call)."""
    fn = _REGISTRY.get(name)
    if fn is None:
        raise PresetError(f"unknown preset '{name}' (valid: {', '.join(list_presets())})")
    return copy.deepcopy(fn())


# ----------------------------------------------------------------------------- scales


@dataclass(frozen=True)
class Scale:
    name: str
    heads: int
    window: int  # sliding window of byte-level attention (outer stages, LlamaByte)
    d_state: int
    headdim: int
    chunk: int
    tokenizer: str  # tokenizer of the BPE baseline at this scale
    bpe_vocab: int
    seq_len: int | None  # bytes per sequence the scale was designed for (None: keep default)


PAPER_MAMBA = dict(d_state=128, headdim=64, chunk=256)
SCALES = {
    "paper-L": Scale("paper-L", 16, 1024, **PAPER_MAMBA, tokenizer="gpt2", bpe_vocab=50257,
                     seq_len=8192),
    "paper-XL": Scale("paper-XL", 16, 1024, **PAPER_MAMBA, tokenizer="gpt2", bpe_vocab=50257,
                      seq_len=8192),
    "dna": Scale("dna", 8, 1024, **PAPER_MAMBA, tokenizer="bytes", bpe_vocab=0, seq_len=None),
    "cpu-tiny": Scale("cpu-tiny", 4, 256, d_state=16, headdim=16, chunk=32, tokenizer="bpe",
                      bpe_vocab=512, seq_len=None),
    "cpu-small": Scale("cpu-small", 4, 256, d_state=32, headdim=32, chunk=64, tokenizer="bpe",
                       bpe_vocab=2048, seq_len=None),
}
BYTE_VOCAB = 257  # 256 bytes + BOS (data.get_tokenizer's byte tokenizer)
CPU_SCALES = ("cpu-tiny", "cpu-small")
PAPER_SCALES = ("paper-L", "paper-XL")


def model_dict(
    scale: str,
    layout,
    d_model: list[int],
    d_intermediate: list[int],
    *,
    window_outer: bool = True,
    vocab_size: int = BYTE_VOCAB,
    **extra,
) -> dict:
    """A ModelConfig dict with the scale's shared dims: heads, rotary = head_dim / 2 (the
    reference's 32/48/64 at 1024/1536/2048), outer stages windowed, the innermost global."""
    sc = SCALES[scale]
    n = n_stages(layout)
    if len(d_model) != n or len(d_intermediate) != n:
        raise ValueError(f"{layout}: expected {n} d_model/d_intermediate values")
    window = [sc.window if (window_outer and s < n - 1) else -1 for s in range(n)]
    out = dict(
        arch="hnet" if n > 1 else "isotropic",
        layout=layout,
        d_model=list(d_model),
        d_intermediate=list(d_intermediate),
        vocab_size=vocab_size,
        attn_num_heads=[sc.heads] * n,
        attn_rotary_dim=[d // sc.heads // 2 for d in d_model],
        attn_window=window,
        mamba_d_state=sc.d_state,
        mamba_d_conv=4,
        mamba_expand=2,
        mamba_headdim=sc.headdim,
        mamba_chunk_size=sc.chunk,
    )
    out.update(extra)
    return out


def _data(scale: str, tokenizer: str = "bytes", domain: str | None = None) -> dict:
    sc = SCALES[scale]
    d: dict = {"tokenizer": tokenizer}
    if tokenizer == "bpe":
        d["bpe_vocab_size"] = sc.bpe_vocab
    if sc.seq_len:
        d["seq_len"] = sc.seq_len
    if domain:
        d["domain"] = domain
    return d


# ----------------------------------------------------------------------------- shapes
# (layout, d_model, d_intermediate) per family and scale. Paper scales are Table 1 (SwiGLU
# widths 2816 / 4096 / 5504 at d 1024 / 1536 / 2048 as in the reference configs; SpaceByte's
# 768-wide outer Transformers get 2048). CPU scales keep each family's shape, shrunk so a model
# trains on 2 CPU cores in minutes (cpu-tiny ~0.3-0.6M params, cpu-small ~1.5-3M).

ONE_STAGE = {  # family -> scale -> main depth; outer m4 (paper) / m2 (cpu)
    "hnet-1stage": {"paper-L": 22, "paper-XL": 24, "cpu-tiny": 3, "cpu-small": 4},
    "hnet-space": {"paper-L": 28, "paper-XL": 31, "cpu-tiny": 3, "cpu-small": 4},
    "hnet-pool": {"paper-L": 28, "cpu-tiny": 3, "cpu-small": 4},
    "spacebyte++": {"paper-L": 28, "paper-XL": 31, "cpu-tiny": 3, "cpu-small": 4},
}
WIDTHS = {  # scale -> (outer d, main d, outer SwiGLU width, main SwiGLU width)
    "paper-L": (1024, 1536, 2816, 4096),
    "paper-XL": (1024, 2048, 4096, 5504),
    "cpu-tiny": (64, 96, 160, 256),
    "cpu-small": (128, 192, 320, 512),
}
OUTER_DEPTH = {"paper-L": 4, "paper-XL": 4, "cpu-tiny": 2, "cpu-small": 2}

# Switch settings of the chunking families (H-Net's additions on, or all off for SpaceByte).
HNET_SWITCHES = dict(smoothing=True, ste=True, residual_proj=True, norm_balance=True)
SPACEBYTE_SWITCHES = dict(smoothing=False, ste=False, residual_proj=False, norm_balance=False)


def _one_stage(family: str, scale: str) -> dict:
    do, dm, _, fm = WIDTHS[scale]
    k = OUTER_DEPTH[scale]
    layout = [f"m{k}", [f"T{ONE_STAGE[family][scale]}"], f"m{k}"]
    if family == "hnet-1stage":
        extra = dict(chunking="dc", ratio_targets=[6.0], **HNET_SWITCHES)
    elif family == "hnet-space":
        extra = dict(chunking="space", ratio_targets=[6.0], **HNET_SWITCHES)
    elif family == "hnet-pool":
        extra = dict(chunking="pool", pool_size=6, ratio_targets=[6.0], **HNET_SWITCHES)
    else:  # spacebyte++
        extra = dict(chunking="space", ratio_targets=[6.0], **SPACEBYTE_SWITCHES)
    out = {"model": model_dict(scale, layout, [do, dm], [0, fm], **extra), "data": _data(scale)}
    if family.startswith("spacebyte"):
        out["train"] = {"lr_mult": "none"}
    return out


def _two_stage(scale: str) -> dict:
    do, dm, fo, fm = WIDTHS[scale]
    k = OUTER_DEPTH[scale]
    main = {"paper-L": 26, "paper-XL": 27, "cpu-tiny": 2, "cpu-small": 3}[scale]
    # paper-L keeps stage 1 at 1024 wide; paper-XL widens it to 1536 (Table 1)
    d1, f1 = {"paper-XL": (1536, 4096)}.get(scale, (do, fo))
    layout = [f"m{k}", [f"T1m{k}", [f"T{main}"], f"m{k}T1"], f"m{k}"]
    model = model_dict(scale, layout, [do, d1, dm], [0, f1, fm], chunking="dc",
                       ratio_targets=[3.0, 3.0], **HNET_SWITCHES)
    return {"model": model, "data": _data(scale)}


def _transformer_bpe(scale: str) -> dict:
    sc = SCALES[scale]
    depth, d, f = {"paper-L": (24, 1536, 4096), "paper-XL": (24, 2048, 5504),
                   "cpu-tiny": (4, 96, 256), "cpu-small": (5, 192, 512)}[scale]
    model = model_dict(scale, f"T{depth}", [d], [f], vocab_size=sc.bpe_vocab,
                       tie_embeddings=True)
    return {"model": model, "data": _data(scale, sc.tokenizer)}


def _llamabyte(scale: str, global_attn: bool) -> dict:
    depth, d, f = {"paper-L": (16, 1024, 2816), "cpu-tiny": (4, 96, 256),
                   "cpu-small": (6, 192, 512)}[scale]
    model = model_dict(scale, f"T{depth}", [d], [f])
    model["attn_window"] = [-1 if global_attn else SCALES[scale].window]
    return {"model": model, "data": _data(scale)}


def _mambabyte(scale: str) -> dict:
    depth, d = {"paper-L": (28, 1024), "cpu-tiny": (6, 96), "cpu-small": (10, 192)}[scale]
    return {"model": model_dict(scale, f"m{depth}", [d], [0]), "data": _data(scale)}


def _spacebyte(scale: str) -> dict:
    k, main, do, dm, fo, fm = {"paper-L": (8, 16, 768, 1536, 2048, 4096),
                               "cpu-tiny": (2, 3, 64, 96, 160, 256),
                               "cpu-small": (2, 4, 128, 192, 320, 512)}[scale]
    layout = [f"T{k}", [f"T{main}"], f"T{k}"]
    model = model_dict(scale, layout, [do, dm], [fo, fm], chunking="space",
                       ratio_targets=[6.0], **SPACEBYTE_SWITCHES)
    return {"model": model, "data": _data(scale), "train": {"lr_mult": "none"}}


# ----------------------------------------------------------------------------- DNA (Table 5)

DNA_SHAPES = {  # family -> scale -> (layout, d_model, d_intermediate)
    "transformer-dna": {"dna": ("T9", [512], [1408]), "cpu-tiny": ("T4", [64], [176])},
    "mamba-dna": {"dna": ("M10", [512], [1024]), "cpu-tiny": ("M4", [64], [128])},
    "hnet-dna": {"dna": (["M3T1", ["T15"], "M4"], [512, 512], [1024, 1024]),
                 "cpu-tiny": (["M1T1", ["T3"], "M2"], [64, 64], [128, 128])},
    "hnet-dna-mamba": {"dna": (["M3T1", ["M15"], "M4"], [512, 512], [1024, 1024]),
                       "cpu-tiny": (["M1T1", ["M3"], "M2"], [64, 64], [128, 128])},
}


def _dna(family: str, scale: str) -> dict:
    layout, d, f = DNA_SHAPES[family][scale]
    extra = {}
    if family.startswith("hnet"):
        extra = dict(chunking="dc", ratio_targets=[3.0], **HNET_SWITCHES)
    model = model_dict(scale, layout, d, f, window_outer=False, **extra)
    out = {"model": model, "data": _data(scale, domain="dna")}
    if scale == "dna":
        out["train"] = {"lr": 5e-3}
    return out


# ----------------------------------------------------------------------------- ablations
# One switch of the paper's ablations flipped on the 1-stage H-Net.
ABLATIONS = {
    "nosmooth": {"smoothing": False},
    "noste": {"ste": False},
    "linear-router": {"router": "linear"},
    "noresidual": {"residual_proj": False},
    "nonorm": {"norm_balance": False},
    "mean-down": {"downsample": "mean"},
    "max-down": {"downsample": "max"},
}


def _ablation(switch: str, scale: str) -> dict:
    out = _one_stage("hnet-1stage", scale)
    out["model"].update(ABLATIONS[switch])
    return out


# ----------------------------------------------------------------------------- registration


def _register(name: str, fn: Callable[..., dict], *args) -> None:
    register_preset(name)(lambda: fn(*args))


def _register_all() -> None:
    for family, depths in ONE_STAGE.items():
        for scale in depths:
            _register(f"{family}@{scale}", _one_stage, family, scale)
    for scale in ("paper-L", "paper-XL", *CPU_SCALES):
        _register(f"hnet-2stage@{scale}", _two_stage, scale)
        _register(f"transformer-bpe@{scale}", _transformer_bpe, scale)
    for scale in ("paper-L", *CPU_SCALES):
        _register(f"llamabyte@{scale}", _llamabyte, scale, False)
        _register(f"llamabyte-global@{scale}", _llamabyte, scale, True)
        _register(f"mambabyte@{scale}", _mambabyte, scale)
        _register(f"spacebyte@{scale}", _spacebyte, scale)
        for switch in ABLATIONS:
            _register(f"hnet-1stage-{switch}@{scale}", _ablation, switch, scale)
    for family, shapes in DNA_SHAPES.items():
        for scale in shapes:
            _register(f"{family}@{scale}", _dna, family, scale)


_register_all()
