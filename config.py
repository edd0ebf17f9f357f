"""Dataclass configs: defaults < YAML file < `key=value` overrides.

Every section is a dataclass; unknown keys and wrong types are `ConfigError`s (one line, naming
the key). The resolved config is saved next to every output with `save_config`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad config key or value; the message is one line and names the key."""


# ----------------------------------------------------------------------------- sections


@dataclass
class DataConfig:
    domain: str = "en"  # en | zh | code | dna (embedded corpora) or a connector name
    source: str = "embedded"  # embedded | files | hf
    path: str | None = None  # local file(s) or HF dataset name for non-embedded sources
    tokenizer: str = "bytes"  # bytes | bpe | sentencepiece | gpt2 | llama3 | hf
    bpe_vocab_size: int = 2048  # vocabulary of the trained tokenizers (bpe, sentencepiece)
    seq_len: int = 512  # bytes per sequence (byte models); BPE models get matched tokens
    batch_size: int = 8  # sequences per optimizer step (before gradient accumulation)
    hf_config: str | None = None  # HF dataset config (e.g. sample-10BT) for source=hf
    text_field: str = "text"  # document field in jsonl/parquet/HF records
    max_bytes: int = 0  # cap on document bytes read from files/hf sources (0 = no cap)
    fasta_window: int = 16384  # bp per document when reading FASTA files
    tokenizer_path: str | None = None  # gpt2: local tiktoken ranks file or GPT-2 vocab dir
    # llama3: tokenizer.model ranks file; sentencepiece: a .model (else trained); hf: tokenizer.json
    sp_model_type: str = "unigram"  # sentencepiece training: unigram | bpe


@dataclass
class ModelConfig:
    arch: str = "hnet"  # hnet | isotropic
    # Nested layout: "T4" is isotropic; ["m2", ["T2"], "m2"] is a 1-stage H-Net.
    layout: Any = field(default_factory=lambda: ["m2", ["T2"], "m2"])
    d_model: list[int] = field(default_factory=lambda: [128, 192])  # one per stage
    d_intermediate: list[int] = field(default_factory=lambda: [0, 384])  # 0 = no MLP
    vocab_size: int = 257  # the byte tokenizer: 256 bytes + BOS
    tie_embeddings: bool = False  # share input embedding and LM head (GPT-2 style BPE baseline)
    max_seq_len: int = 65536  # longest sequence (in model tokens) the model accepts
    # attention (per stage lists; a single value broadcasts)
    attn_num_heads: list[int] = field(default_factory=lambda: [4])
    attn_rotary_dim: list[int] = field(default_factory=lambda: [16])
    attn_window: list[int] = field(default_factory=lambda: [-1])  # -1 = global causal
    # Mamba-2
    mamba_d_state: int = 32
    mamba_d_conv: int = 4
    mamba_expand: int = 2
    mamba_headdim: int = 32
    mamba_chunk_size: int = 64
    mamba_ngroups: int = 1
    # dynamic chunking
    chunking: str = "dc"  # dc (learned router) | space (spacelike bytes) | pool (every k bytes)
    pool_size: int = 6
    ratio_targets: list[float] = field(default_factory=lambda: [6.0])  # N_s per stage
    ratio_alpha: float = 0.03
    # ablation switches (paper Section 3.3 / App. C)
    smoothing: bool = True
    ste: bool = True
    router: str = "cosine"  # cosine | linear
    residual_proj: bool = True
    norm_balance: bool = True
    downsample: str = "select"  # select | mean | max
    init_std: float = 0.02
    # reference: goombalab/hnet's init (embedding std 1.0, residual outputs init_std/sqrt(
    # cumulative height), residual projection with a bias); gpt2: this suite's earlier init
    # (embedding init_std, residual outputs init_std/sqrt(2 * layers), no residual bias)
    init: str = "reference"
    kernels: str = "auto"  # auto | torch | triton


@dataclass
class TrainConfig:
    steps: int = 200  # optimizer steps (train_bytes / train_flops override when > 0)
    train_bytes: int = 0
    train_flops: float = 0.0
    lr: float = 3e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    grad_accum: int = 1
    schedule: str = "wsd"  # wsd | cosine | constant
    warmup_frac: float = 0.1
    decay_frac: float = 0.2
    lr_mult: Any = "auto"  # auto (Eq. 11) | none | list of per-stage multipliers
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto (fp32 on CPU, bf16 autocast on CUDA) | fp32 | bf16
    compile: Any = "auto"  # auto | off | blocks (train/compile.py); true/false = blocks/off
    ckpt_every: int = 50
    keep_last: int = 2
    eval_every: int = 100
    eval_batches: int = 4
    log_every: int = 10
    debug_nan_step: int = 0  # test hook: make the loss NaN at this step (0 = off)


@dataclass
class EvalConfig:
    bpb_split: str = "val"
    bpb_max_bytes: int = 200_000
    tasks: list[str] = field(default_factory=list)
    limit: int | None = None
    robustness: bool = False


@dataclass
class RunConfig:
    name: str = "run"
    preset: str | None = None  # a named model preset; its values sit under the YAML's
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ----------------------------------------------------------------------------- machinery


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and gently coerce) `value` against annotation `tp`; raise ConfigError on mismatch."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        scalar = isinstance(value, (int, float, str)) and not isinstance(value, bool)
        if scalar and item_tp in (int, float):
            value = [value]  # a single value broadcasts to a one-element list
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a (partial) dict; unknown keys are errors."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}' (valid: {', '.join(sorted(names))})"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge; `update` wins. Lists are replaced, not merged."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """`model.d_model=[64,96]` -> (['model', 'd_model'], [64, 96]); values parse as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def set_path(d: dict, path: list[str], value: Any) -> None:
    for p in path[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise ConfigError(f"override '{'.'.join(path)}': '{p}' is not a section")
    d[path[-1]] = value


def read_yaml(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{p}: malformed YAML{where}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def resolve(
    yaml_path: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    base: dict | None = None,
) -> RunConfig:
    """defaults < preset < base dict < YAML < overrides -> RunConfig."""
    layered: dict = dict(base or {})
    if yaml_path is not None:
        layered = merge(layered, read_yaml(yaml_path))
    for text in overrides or []:
        path, value = parse_override(text)
        set_path(layered, path, value)
    preset = layered.get("preset")
    if preset:
        from hnetbench.baselines import preset_dict  # late import: presets need models

        layered = merge(preset_dict(preset), layered)
    return from_dict(RunConfig, layered)


def config_hash(cfg: Any, length: int = 12) -> str:
    """Stable short hash of a config (used as run id)."""
    blob = json.dumps(to_dict(cfg), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> None:
    """Delete the temp files of `path` that killed writers on this host left behind (their
    name carries host and pid, so a live writer's, or another host's, is never touched)."""
    p = Path(path)
    prefix = f".{p.name}.tmp."
    suffix = f".{socket.gethostname()}"
    if not p.parent.is_dir():
        return
    for q in p.parent.iterdir():
        pid = q.name[len(prefix):-len(suffix)] if q.name.endswith(suffix) else ""
        if q.name.startswith(prefix) and pid.isdigit() and not _pid_alive(int(pid)):
            q.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp name next to `path`; when the block ends without error, fsync it and rename
    it to `path`, so a kill never leaves a half-written file. Stale temps of earlier killed
    writers of the same file are removed first."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(p)
    tmp = p.with_name(f".{p.name}.tmp.{os.getpid()}.{socket.gethostname()}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temp file + rename so a kill never leaves a half-written file."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def load_saved(path: str | os.PathLike) -> RunConfig:
    return from_dict(RunConfig, read_yaml(path))
