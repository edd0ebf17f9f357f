"""Checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint is a directory `ckpt/step_000050/` holding
  model.safetensors   the weights (`safetensors.torch.save_model`, so tied weights are fine)
  state.safetensors   every other tensor: optimizer moments, torch RNG states
  state.json          the rest (optimizer groups, python/numpy RNG, loader position, counters),
                      with tensors referenced by key into state.safetensors
  config.yaml         the resolved RunConfig, so a checkpoint directory is self-contained
  checkpoint.json     written last: step and the SHA-256 of every file above
It is written into a hidden temp directory and renamed into place, so a kill leaves either the
old set of checkpoints or the new one, never a half-written directory; pruned or replaced
checkpoints are renamed to a hidden temp name before they are deleted, for the same reason.
Loading verifies the checksums, so a truncated or corrupt file gives a one-line error naming it;
resuming falls back to the newest checkpoint that verifies (`newest_valid_checkpoint`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hnetbench.config import ConfigError, from_dict, read_yaml, save_config
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

MANIFEST = "checkpoint.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(ConfigError):
    """A missing, truncated or corrupt checkpoint (one-line message naming the file)."""


# ----------------------------------------------------------------------------- state encoding


def encode_state(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "s") -> Any:
    """Turn a nested state (dicts, lists, tuples, tensors, numpy arrays, bytes, scalars) into JSON
    data; torch tensors move into `tensors` under unique keys."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}.{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return {
            "__ndarray__": base64.b64encode(np.ascontiguousarray(obj).tobytes()).decode("ascii"),
            "dtype": obj.dtype.str,
            "shape": list(obj.shape),
        }
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes):
        return {"__bytes__": base64.b64encode(obj).decode("ascii")}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_state(v, tensors, prefix) for v in obj]}
    if isinstance(obj, list):
        return [encode_state(v, tensors, prefix) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: encode_state(v, tensors, prefix) for k, v in obj.items()}
        # non-string keys (the optimizer's integer parameter ids) as a list of pairs
        return {"__items__": [[encode_state(k, tensors, prefix), encode_state(v, tensors, prefix)]
                              for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot serialise {type(obj).__name__} in a checkpoint")


def decode_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [decode_state(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        raw = base64.b64decode(obj["__ndarray__"])
        return np.frombuffer(raw, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
    if "__bytes__" in obj:
        return base64.b64decode(obj["__bytes__"])
    if "__tuple__" in obj:
        return tuple(decode_state(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {decode_state(k, tensors): decode_state(v, tensors) for k, v in obj["__items__"]}
    return {k: decode_state(v, tensors) for k, v in obj.items()}


def rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(legacy=True),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- files


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(ckpt_root: str | os.PathLike) -> list[tuple[int, Path]]:
    """Completed checkpoints under `ckpt_root` as (step, path), oldest first."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(
    ckpt_root: str | os.PathLike,
    step: int,
    model: torch.nn.Module,
    state: dict,
    run_cfg: Any,
    keep_last: int = 2,
) -> Path:
    """Write `ckpt_root/step_{step:06d}` atomically and prune to the newest `keep_last` (<= 0 keeps
    all). `state` is any nested state `encode_state` accepts (optimizer, RNG, loader, counters)."""
    root = Path(ckpt_root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp_step_{step:06d}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    tensors: dict[str, torch.Tensor] = {}
    data = encode_state(state, tensors)
    save_file(tensors, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps(data), encoding="utf-8")
    save_config(run_cfg, tmp / "config.yaml")
    files = {}
    for name in ("model.safetensors", "state.safetensors", "state.json", "config.yaml"):
        _fsync(tmp / name)
        files[name] = _sha256(tmp / name)
    manifest = {"format": "hnetbench-ckpt-1", "step": step, "files": files}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    _fsync(tmp / MANIFEST)
    if final.exists():  # re-saving the same step (a --force resume, or over a corrupt one)
        _remove(final)
    os.replace(tmp, final)
    _fsync(root)
    prune_checkpoints(root, keep_last)
    return final


def prune_checkpoints(ckpt_root: str | os.PathLike, keep_last: int) -> None:
    """Keep the newest `keep_last` checkpoints (<= 0 keeps all). Called after every save and
    again on resume: a kill between a save's rename and its pruning leaves one too many."""
    if keep_last > 0:
        for _, old in list_checkpoints(ckpt_root)[:-keep_last]:
            _remove(old)


def _remove(ckpt_dir: Path) -> None:
    """Delete a checkpoint directory so that a kill midway never leaves a half-deleted
    `step_*` behind: rename it to a hidden temp name first (clean_temp finishes the job)."""
    doomed = ckpt_dir.with_name(f".tmp_old_{ckpt_dir.name}_{os.getpid()}")
    os.replace(ckpt_dir, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def clean_temp(ckpt_root: str | os.PathLike) -> None:
    """Remove temp directories a killed writer (or pruner) left behind."""
    root = Path(ckpt_root)
    if root.is_dir():
        for p in root.glob(".tmp_*"):
            shutil.rmtree(p, ignore_errors=True)


def newest_valid_checkpoint(
    ckpt_root: str | os.PathLike,
) -> tuple[Path | None, dict | None, list[str]]:
    """The newest checkpoint under `ckpt_root` whose files all verify: (path, manifest,
    one-line reasons for each newer checkpoint that did not verify, newest first).

    (None, None, []) when there is no checkpoint at all; a CheckpointError (the newest one's
    reason, and how many others failed) when checkpoints exist but none verifies, so a run never
    silently starts over on top of its own corrupt state."""
    skipped: list[str] = []
    for _, path in reversed(list_checkpoints(ckpt_root)):
        try:
            return path, verify_checkpoint(path), skipped
        except CheckpointError as e:
            skipped.append(str(e))
    if skipped:
        more = f" (and {len(skipped) - 1} older ones)" if len(skipped) > 1 else ""
        raise CheckpointError(f"no checkpoint verifies: {skipped[0]}{more}")
    return None, None, []


def resolve_checkpoint_dir(path: str | os.PathLike) -> Path:
    """A run dir, its `ckpt/` dir, or one `step_*` dir -> the newest checkpoint directory."""
    p = Path(path)
    if (p / MANIFEST).is_file():
        return p
    for root in (p / "ckpt", p):
        ckpts = list_checkpoints(root)
        if ckpts:
            return ckpts[-1][1]
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint or run directory")
    if _STEP_DIR.match(p.name):
        raise CheckpointError(f"{p / MANIFEST}: missing (incomplete or corrupt checkpoint)")
    raise CheckpointError(f"{p}: no checkpoint found (expected {MANIFEST} or ckpt/step_*/)")


def verify_checkpoint(ckpt_dir: Path) -> dict:
    """Check the manifest and every file's checksum; return the manifest."""
    mpath = ckpt_dir / MANIFEST
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        files = manifest["files"]
        int(manifest["step"])
    except FileNotFoundError:
        raise CheckpointError(f"{mpath}: missing (incomplete or corrupt checkpoint)") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise CheckpointError(f"{mpath}: corrupt checkpoint manifest") from None
    for name, digest in files.items():
        fpath = ckpt_dir / name
        if not fpath.is_file():
            raise CheckpointError(f"{fpath}: missing from checkpoint")
        if _sha256(fpath) != digest:
            raise CheckpointError(f"{fpath}: checksum mismatch (truncated or corrupt checkpoint)")
    return manifest


def load_weights(model: torch.nn.Module, ckpt_dir: Path) -> None:
    path = ckpt_dir / "model.safetensors"
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: unreadable ({str(e).splitlines()[0]})") from None
    except RuntimeError as e:  # shape mismatch: the model config differs from the checkpoint's
        first = str(e).splitlines()[0]
        raise CheckpointError(f"{path}: does not fit the model ({first})") from None
    if missing or unexpected:
        what = (f"missing {sorted(missing)[:3]}" if missing
                else f"unexpected {sorted(unexpected)[:3]}")
        raise CheckpointError(f"{path}: does not fit the model ({what})")


def load_state(ckpt_dir: Path) -> dict:
    try:
        tensors = load_file(str(ckpt_dir / "state.safetensors"))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(
            f"{ckpt_dir / 'state.safetensors'}: unreadable ({str(e).splitlines()[0]})"
        ) from None
    try:
        data = json.loads((ckpt_dir / "state.json").read_text(encoding="utf-8"))
        return decode_state(data, tensors)
    except (ValueError, KeyError, UnicodeDecodeError):
        raise CheckpointError(f"{ckpt_dir / 'state.json'}: corrupt") from None


def checkpoint_config(ckpt_dir: Path) -> Any:
    from hnetbench.config import RunConfig

    return from_dict(RunConfig, read_yaml(ckpt_dir / "config.yaml"))


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple:
    """Load a trained model for evaluation: `path` is a run dir, its ckpt/ dir or one checkpoint.

    Returns (model in eval mode, RunConfig, tokenizer). Never unpickles anything.
    """
    from hnetbench.data import get_tokenizer
    from hnetbench.models import build_model

    ckpt_dir = resolve_checkpoint_dir(path)
    verify_checkpoint(ckpt_dir)
    run_cfg = checkpoint_config(ckpt_dir)
    model = build_model(run_cfg.model)
    load_weights(model, ckpt_dir)
    model.to(device).eval()
    return model, run_cfg, get_tokenizer(run_cfg.data)
