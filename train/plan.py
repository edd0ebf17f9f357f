"""What a run needs decided before its first step: validation, device and precision, the step
budget, and which config changes a resume may accept."""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from hnetbench.config import ConfigError, RunConfig, to_dict
from hnetbench.train.schedule import SCHEDULES

# Keys that do not change the training trajectory: a resume may change them freely. Everything
# else (budget keys included: the LR schedule depends on the total) needs --force.
RESUME_FREE_KEYS = (
    "name",
    "eval",
    "train.ckpt_every",
    "train.keep_last",
    "train.log_every",
    "train.eval_every",
    "train.eval_batches",
    "train.compile",
    "train.debug_nan_step",
)


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def trajectory_keys(run_cfg: RunConfig) -> dict[str, Any]:
    """The flattened config without RESUME_FREE_KEYS: what must match to resume."""
    return {
        k: v for k, v in _flat(to_dict(run_cfg)).items()
        if not any(k == f or k.startswith(f + ".") for f in RESUME_FREE_KEYS)
    }


def config_changes(old: RunConfig, new: RunConfig) -> list[str]:
    """'key: old -> new' for every trajectory key that differs."""
    a, b = trajectory_keys(old), trajectory_keys(new)
    keys = sorted(set(a) | set(b))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def validate(run_cfg: RunConfig) -> None:
    """One-line ConfigError naming the first bad train/data key."""
    tc, dc = run_cfg.train, run_cfg.data
    checks = [
        (tc.schedule in SCHEDULES, "train.schedule", f"one of {', '.join(SCHEDULES)}", tc.schedule),
        (len(tc.betas) == 2 and all(0 <= b < 1 for b in tc.betas), "train.betas",
         "two numbers in [0, 1)", tc.betas),
        (tc.grad_accum >= 1, "train.grad_accum", "an integer >= 1", tc.grad_accum),
        (tc.lr > 0, "train.lr", "a positive number", tc.lr),
        (0 <= tc.warmup_frac <= 1, "train.warmup_frac", "a fraction in [0, 1]", tc.warmup_frac),
        (0 <= tc.decay_frac <= 1, "train.decay_frac", "a fraction in [0, 1]", tc.decay_frac),
        (tc.steps > 0 or tc.train_bytes > 0 or tc.train_flops > 0, "train.steps",
         "a positive budget (steps, train_bytes or train_flops)", tc.steps),
        (tc.device in ("auto", "cpu", "cuda"), "train.device", "auto, cpu or cuda", tc.device),
        (tc.dtype in ("auto", "fp32", "bf16"), "train.dtype", "auto, fp32 or bf16", tc.dtype),
        (tc.log_every >= 1, "train.log_every", "an integer >= 1", tc.log_every),
        (dc.batch_size >= 1, "data.batch_size", "an integer >= 1", dc.batch_size),
        (tc.compile in (True, False, "auto", "off", "blocks"), "train.compile",
         "auto, off or blocks", tc.compile),
    ]
    for ok, key, expected, value in checks:
        if not ok:
            raise ConfigError(f"{key}: expected {expected}, got {value!r}")


def device_type(run_cfg: RunConfig) -> str:
    want = run_cfg.train.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' requested but no CUDA device is available")
    return "cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu"


def autocast_dtype(run_cfg: RunConfig, device: torch.device) -> torch.dtype | None:
    """None = plain fp32; bf16 autocast on CUDA by default (fp32 master weights either way)."""
    d = run_cfg.train.dtype
    if d == "bf16" or (d == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def forward_flops_per_byte(run_cfg: RunConfig, bytes_per_token: float) -> float | None:
    """Analytic forward FLOPs per byte (hnetbench.flops, at the run's sequence length), or None
    when that module is not available."""
    try:
        from hnetbench.flops import flops_per_byte
    except ImportError:
        return None
    report = flops_per_byte(run_cfg.model, bytes_per_token=bytes_per_token,
                            seq_len=run_cfg.data.seq_len, with_params=False)
    return float(report.forward_per_byte)


def bytes_per_step(run_cfg: RunConfig) -> int:
    """Nominal bytes an optimizer step consumes (the loader matches BPE batches to it)."""
    return run_cfg.data.batch_size * run_cfg.data.seq_len * run_cfg.train.grad_accum


def plan_steps(run_cfg: RunConfig, fwd_fpb: float | None) -> int:
    """Optimizer steps for the budget: train_flops (training = 3x forward FLOPs per byte) wins
    over train_bytes, which wins over steps."""
    tc = run_cfg.train
    if tc.train_flops > 0:
        if not fwd_fpb:
            raise ConfigError("train.train_flops: needs FLOPs per byte (hnetbench.flops)")
        return max(1, math.ceil(tc.train_flops / (3.0 * fwd_fpb) / bytes_per_step(run_cfg)))
    if tc.train_bytes > 0:
        return max(1, math.ceil(tc.train_bytes / bytes_per_step(run_cfg)))
    return tc.steps


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def available_memory(device: torch.device) -> int | None:
    """Bytes this process could still allocate: free device memory on CUDA, MemAvailable (else
    physical RAM) on the host; None when the platform does not say."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_estimate(run_cfg: RunConfig, world_size: int = 1) -> dict[str, int]:
    """A lower bound on the peak memory of one rank's training step, in bytes.

    Counts only what cannot be avoided: the loader's batch tensors (rows, inputs, targets,
    doc_start: 4 int64 per position; they live on the host) and, on the compute device, the
    output logits and their gradient (2 fp32 values per vocabulary entry per position). Weights,
    optimizer state and hidden activations come on top (counting parameters would mean building
    the model first), so a run refused by this bound can never have fitted."""
    dc, mc = run_cfg.data, run_cfg.model
    # BPE positions are fewer than bytes; 8 bytes/token keeps the bound below the real count
    positions = int(dc.batch_size * dc.seq_len * (1.0 if dc.tokenizer == "bytes" else 1 / 8))
    return {"host": positions * 4 * 8,
            "device": positions // max(1, world_size) * mc.vocab_size * 4 * 2}


def check_memory(run_cfg: RunConfig, device: torch.device, world_size: int = 1) -> None:
    """One-line ConfigError, before anything is allocated, when the batch cannot fit."""
    est = memory_estimate(run_cfg, world_size)
    need = {"cpu": est["host"] + est["device"]} if device.type == "cpu" else \
        {"cpu": est["host"], "cuda": est["device"]}
    for kind, n in need.items():
        have = available_memory(device if kind == device.type else torch.device("cpu"))
        if have is not None and n > have:
            dc = run_cfg.data
            where = "GPU" if kind == "cuda" else "host"
            raise ConfigError(
                f"data.batch_size={dc.batch_size} x data.seq_len={dc.seq_len}: a training step "
                f"needs at least {_gb(n)} of {where} memory (batch tensors, logits and their "
                f"gradient), but only {_gb(have)} is available; lower "
                f"data.batch_size (train.grad_accum keeps the tokens per step)")
