"""Convert a goombalab/hnet checkpoint (its config JSON + weights) into an hnetbench run.

The released H-Nets (hnet_1stage_L/XL, hnet_2stage_L/XL, ...) become a run directory whose
checkpoint every command reads (`eval bpb|lm|robustness`, `viz boundaries`, `generate`).
Known differences between the two codebases, handled here:

- names: `embeddings`/`lm_head` -> `embedding`/`head`; an H-Net's `main_network` is our `inner`
  (an innermost one our `main`); `routing_module` -> `router`, `residual_proj` -> `residual`,
  `rmsnorm` -> `norm`, attention `Wqkv` -> `wqkv`; the inner stage's `pad_dimension` is owned by
  the enclosing stage here (`pad`).
- router: the reference computes p_t = cos(q_{t-1}, k_t) where we compute cos(q_t, k_{t-1}), so
  its q projection is our k projection and vice versa.
- SwiGLU: the reference's fc1 rows are [value; gate], ours [gate; value]; its MLP width is
  rounded up to a multiple of 128.
- sliding window: flash-attn's window_size w attends w + 1 positions; ours counts them all.
- vocabulary: the reference's byte tokenizer has 256 ids with BOS = 254; ours has BOS = 256.
  Our BOS row takes the reference's BOS embedding, and its LM-head row copies row 254 so id 256
  and id 254 share the reference's (negligible) BOS probability.
- the reference's Mamba-2 uses mamba_ssm defaults our config spells out: headdim 64, 1 group.

Weights are read with `torch.load(weights_only=True)` (omegaconf containers that the released
pickles hold are read as plain stand-ins, nothing is imported or executed) or from safetensors,
and stored as float32.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from hnetbench.config import ConfigError, ModelConfig, RunConfig, atomic_write_text, save_config

REF_BOS = 254  # goombalab/hnet ByteTokenizer.bos_idx
OUR_BOS = 256
REF_VOCAB = 256
MLP_MULTIPLE = 128  # the reference SwiGLU's multiple_of
REF_KEYS = {"arch_layout", "d_model", "d_intermediate", "vocab_size", "ssm_cfg", "attn_cfg",
            "tie_embeddings"}
SSM_DEFAULTS = {"d_conv": 4, "expand": 2, "d_state": 128, "chunk_size": 256}


# ----------------------------------------------------------------------------- config


def _depth(layout: Any, where: str) -> int:
    if isinstance(layout, list) and len(layout) == 1 and isinstance(layout[0], str):
        return 1
    if (isinstance(layout, list) and len(layout) == 3 and isinstance(layout[0], str)
            and isinstance(layout[2], str)):
        return 1 + _depth(layout[1], where)
    raise ConfigError(f"{where}: arch_layout: expected [encoder, [inner], decoder] or [main], "
                      f"got {layout!r}")


def _per_stage(cfg: dict, key: str, n: int, where: str, default: Any) -> list:
    v = cfg.get(key, default)
    if not isinstance(v, list):
        return [v] * n
    if len(v) == 0:
        return [default] * n
    if len(v) != n:
        raise ConfigError(f"{where}: {key}: expected {n} per-stage values, got {v!r}")
    return list(v)


def _one_value(ssm: dict, key: str, where: str) -> int:
    v = ssm.get(key, SSM_DEFAULTS[key])
    if isinstance(v, list):
        if len(set(v)) != 1:
            raise ConfigError(f"{where}: ssm_cfg.{key}: per-stage values {v} differ "
                              "(hnetbench uses one value for every stage)")
        v = v[0]
    return int(v)


def mlp_width(d_intermediate: int) -> int:
    """The reference SwiGLU's hidden width (rounded up to a multiple of 128; 0 = no MLP)."""
    if d_intermediate <= 0:
        return 0
    return (d_intermediate + MLP_MULTIPLE - 1) // MLP_MULTIPLE * MLP_MULTIPLE


def model_config_from_reference(
    ref: dict, ratio_targets: list[float] | None = None, where: str = "config"
) -> ModelConfig:
    """Our ModelConfig for a goombalab/hnet HNetConfig dict (its configs/*.json)."""
    if not isinstance(ref, dict):
        raise ConfigError(f"{where}: expected a JSON object (goombalab/hnet HNetConfig)")
    unknown = sorted(set(ref) - REF_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (expected {sorted(REF_KEYS)})")
    if "arch_layout" not in ref or "d_model" not in ref:
        raise ConfigError(f"{where}: missing arch_layout or d_model")
    layout = ref["arch_layout"]
    n = _depth(layout, where)
    if n < 2:
        raise ConfigError(f"{where}: arch_layout {layout!r} has no stage to convert")
    vocab = int(ref.get("vocab_size", REF_VOCAB))
    if vocab != REF_VOCAB:
        raise ConfigError(f"{where}: vocab_size: expected {REF_VOCAB} (the reference's byte "
                          f"tokenizer), got {vocab}")
    d_model = [int(d) for d in ref["d_model"]]
    if len(d_model) != n:
        raise ConfigError(f"{where}: d_model: expected {n} widths for {layout!r}, got {d_model}")
    d_int = [mlp_width(int(x)) for x in _per_stage(ref, "d_intermediate", n, where, 0)]
    attn = ref.get("attn_cfg", {}) or {}
    ssm = ref.get("ssm_cfg", {}) or {}
    heads = [int(h) for h in _per_stage(attn, "num_heads", n, where, 8)]
    rotary = [int(r) for r in _per_stage(attn, "rotary_emb_dim", n, where, 0)]
    window = [int(w) + 1 if int(w) >= 0 else -1
              for w in _per_stage(attn, "window_size", n, where, -1)]
    if ratio_targets is None:  # the paper's: 6 for one stage, (3, 3) for two
        ratio_targets = [6.0] if n == 2 else [3.0] * (n - 1)
    return ModelConfig(
        arch="hnet", layout=layout, d_model=d_model, d_intermediate=d_int,
        vocab_size=OUR_BOS + 1, tie_embeddings=bool(ref.get("tie_embeddings", False)),
        attn_num_heads=heads, attn_rotary_dim=rotary, attn_window=window,
        mamba_d_state=_one_value(ssm, "d_state", where),
        mamba_d_conv=_one_value(ssm, "d_conv", where),
        mamba_expand=_one_value(ssm, "expand", where), mamba_headdim=64, mamba_ngroups=1,
        mamba_chunk_size=_one_value(ssm, "chunk_size", where),
        chunking="dc", ratio_targets=list(ratio_targets), init="reference",
    )


# ----------------------------------------------------------------------------- names


_SKIP = re.compile(r"\.rotary_emb\.")  # rotary caches/buffers: recomputed, never learned


def _map_isotropic(rest: str) -> str:
    if rest == "rmsnorm.weight":
        return "norm.weight"
    return rest.replace(".mixer.Wqkv.", ".mixer.wqkv.")


def _map_stage(rest: str, level: int, n: int) -> str | None:
    head, _, tail = rest.partition(".")
    if level == n - 1:  # innermost: only its isotropic main network
        return "main." + _map_isotropic(tail) if head == "main_network" else None
    if head in ("encoder", "decoder"):
        return f"{head}." + _map_isotropic(tail)
    if head == "routing_module":  # cos(q_{t-1}, k_t) there = cos(q_t, k_{t-1}) here: swap
        return {"q_proj_layer.weight": "router.k_proj.weight",
                "k_proj_layer.weight": "router.q_proj.weight"}.get(tail)
    if head == "residual_proj":
        return "residual." + tail
    if head == "main_network":
        if tail == "pad_dimension":
            return "pad"
        inner = _map_stage(tail, level + 1, n)
        return None if inner is None else "inner." + inner
    return None


def map_key(key: str, n_levels: int) -> str | None:
    """Our parameter name for a reference state-dict key; None for buffers we recompute.
    Raises ConfigError for a key that has no counterpart."""
    if _SKIP.search(key):
        return None
    if key == "embeddings.weight":
        return "embedding.weight"
    if key == "lm_head.weight":
        return "head.weight"
    ours = _map_stage(key[len("backbone."):], 0, n_levels) if key.startswith("backbone.") else None
    if ours is None:
        raise ConfigError(f"reference weights: key {key!r} has no hnetbench counterpart")
    return "backbone." + ours


def _swap_halves(w: torch.Tensor) -> torch.Tensor:
    value, gate = w.chunk(2, dim=0)
    return torch.cat([gate, value], dim=0)


def _add_bos_row(w: torch.Tensor) -> torch.Tensor:
    return torch.cat([w, w[REF_BOS : REF_BOS + 1]], dim=0)


def convert_state_dict(
    ref_sd: dict[str, torch.Tensor], cfg: ModelConfig
) -> dict[str, torch.Tensor]:
    """Reference tensors -> our state dict (float32), laid out for `build_model(cfg)`."""
    from hnetbench.models.lm import layout_depth

    n = layout_depth(cfg.layout)
    out: dict[str, torch.Tensor] = {}
    for key, t in ref_sd.items():
        if not isinstance(t, torch.Tensor):
            raise ConfigError(f"reference weights: {key!r} is a {type(t).__name__}, not a tensor")
        ours = map_key(key, n)
        if ours is None:
            continue
        t = t.detach().to(torch.float32)
        if ours.endswith(".mlp.fc1.weight"):
            t = _swap_halves(t)
        elif ours in ("embedding.weight", "head.weight"):
            if t.shape[0] != REF_VOCAB:
                raise ConfigError(f"reference weights: {key}: expected {REF_VOCAB} rows, "
                                  f"got {tuple(t.shape)}")
            t = _add_bos_row(t)
        out[ours] = t.contiguous()
    if cfg.tie_embeddings:
        out.pop("head.weight", None)
    return out


def load_into(model: torch.nn.Module, sd: dict[str, torch.Tensor], where: str) -> None:
    """Copy a converted state dict into `model`, with one clear line for any mismatch."""
    params = dict(model.state_dict())
    if model.cfg.tie_embeddings:
        params.pop("head.weight", None)
    missing = sorted(set(params) - set(sd))
    extra = sorted(set(sd) - set(params))
    if missing or extra:
        what = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise ConfigError(f"{where}: does not fit the config ({what})")
    for k, v in sd.items():
        if tuple(params[k].shape) != tuple(v.shape):
            raise ConfigError(f"{where}: {k}: shape {tuple(v.shape)} does not fit the config "
                              f"(expected {tuple(params[k].shape)})")
    model.load_state_dict(sd, strict=False)


# ----------------------------------------------------------------------------- files


class _Standin:
    """A plain object standing in for a pickled omegaconf container (never imported)."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state


def _standins() -> list:
    import typing

    names = ["omegaconf.listconfig.ListConfig", "omegaconf.dictconfig.DictConfig",
             "omegaconf.base.ContainerMetadata", "omegaconf.base.Metadata",
             "omegaconf.nodes.AnyNode", "omegaconf.nodes.StringNode",
             "omegaconf.nodes.IntegerNode", "omegaconf.nodes.FloatNode",
             "omegaconf.nodes.BooleanNode"]
    out: list = [typing.Any, list, dict, int, float, str, bool]
    for full in names:
        mod, _, name = full.rpartition(".")
        out.append(type(name, (_Standin,), {"__module__": mod, "__qualname__": name}))
    return out


def _tensors_of(obj: Any) -> dict | None:
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for k in ("model", "state_dict", "model_state_dict"):
            if k in obj:
                return _tensors_of(obj[k])
    return None


def load_reference_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A reference state dict from .safetensors or a torch pickle (weights_only=True)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such weights file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except Exception as e:  # noqa: BLE001 - any unreadable file is one line
            raise ConfigError(f"{p}: unreadable safetensors ({str(e).splitlines()[0]})") from None
    try:
        with torch.serialization.safe_globals(_standins()):
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        msg = str(e).strip().splitlines()
        first = next((m for m in msg if "Unsupported" in m or "Error" in m), msg[0] if msg else "")
        raise ConfigError(f"{p}: cannot load with weights_only=True ({first.strip()[:200]})"
                          ) from None
    sd = _tensors_of(obj)
    if sd is None:
        raise ConfigError(f"{p}: expected a state dict of tensors (or one under 'model'/"
                          f"'state_dict'), got {type(obj).__name__}")
    return {k: v for k, v in sd.items()}


def read_reference_config(path: str | Path) -> dict:
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid JSON ({str(e).splitlines()[0]})") from None


def convert(
    config_path: str | Path,
    weights_path: str | Path,
    out: str | Path,
    ratio_targets: list[float] | None = None,
    seq_len: int = 8192,
) -> Path:
    """Write run directory `out` (ckpt/step_000000) holding the converted reference model."""
    from hnetbench.models import build_model
    from hnetbench.models.lm import layout_depth
    from hnetbench.train.checkpoint import save_checkpoint

    ref_cfg = read_reference_config(config_path)
    mcfg = model_config_from_reference(ref_cfg, ratio_targets, where=str(config_path))
    run = RunConfig()
    run.name = f"converted-{Path(weights_path).stem}"
    run.model = mcfg
    run.data.tokenizer = "bytes"
    run.data.seq_len = seq_len
    sd = convert_state_dict(load_reference_weights(weights_path), mcfg)
    model = build_model(mcfg)
    load_into(model, sd, str(weights_path))
    out = Path(out)
    source = {"config": str(config_path), "weights": str(weights_path)}
    ckpt = save_checkpoint(out / "ckpt", 0, model, {"converted_from": source}, run, keep_last=0)
    # a run directory like train's: `eval` saves eval.json beside it, `report` reads the summary
    save_config(run, out / "config.yaml")
    n_stages = layout_depth(mcfg.layout) - 1
    summary = {"status": "converted", "steps": 0, "name": run.name,
               "params": sum(p.numel() for p in model.parameters()),
               "family": f"hnet-{n_stages}stage", "domain": run.data.domain,
               "converted_from": source}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return ckpt
