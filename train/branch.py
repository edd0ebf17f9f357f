"""WSD cool-down branches: the final loss at a smaller budget without a second full run.

Under the warmup-stable-decay schedule, a cool-down started from a stable-phase checkpoint gives
(close to) the loss of a full run at that shorter budget (Hägele et al. 2024, arXiv 2405.18392).
A branch of a run with S steps at fraction f is the run with T = round(f * S) steps whose warmup
has the parent's W steps (warmup_frac = W / T) and whose decay is round(decay_frac * T) steps:
its first K = T - decay steps are exactly the parent's (same warmup, LR 1 after it, same data
order and seed), so it starts from the parent's checkpoint at step K and trains only the decay.

Each branch is its own run directory (config.yaml, job.json, branch.json, metrics.jsonl, ckpt/):
`train()` resumes it like any interrupted run and reports read it like any run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from hnetbench.config import (
    ConfigError,
    RunConfig,
    atomic_write_text,
    config_hash,
    load_saved,
    save_config,
)
from hnetbench.train import checkpoint as ck
from hnetbench.train.plan import bytes_per_step
from hnetbench.train.schedule import phase_lengths

BRANCH_FILE = "branch.json"


@dataclasses.dataclass
class BranchPlan:
    parent_dir: Path
    fraction: float
    cfg: RunConfig  # the branch's full config (a run of T steps)
    from_step: int  # K: the parent's checkpoint the branch starts from
    total_steps: int  # T

    @property
    def run_id(self) -> str:
        return config_hash(self.cfg)


def parent_steps(cfg: RunConfig) -> int:
    """The parent's optimizer steps (from its byte or step budget; FLOP budgets not supported)."""
    tc = cfg.train
    if tc.train_flops > 0:
        raise ConfigError("train.train_flops: cool-down branches need a byte or step budget")
    if tc.train_bytes > 0:
        return -(-tc.train_bytes // bytes_per_step(cfg))
    return tc.steps


def plan_branch(parent_cfg: RunConfig, fraction: float, parent_dir: Path) -> BranchPlan:
    """The branch config at `fraction` of the parent's budget and the step it starts from."""
    tc = parent_cfg.train
    if tc.schedule != "wsd":
        raise ConfigError(f"{parent_dir}: train.schedule is '{tc.schedule}'; cool-down branches "
                          "need the wsd schedule")
    if not 0 < fraction < 1:
        raise ConfigError(f"branch.fractions: expected fractions in (0, 1), got {fraction}")
    total = parent_steps(parent_cfg)
    warmup, _ = phase_lengths(total, tc.warmup_frac, tc.decay_frac)
    t = max(1, round(fraction * total))
    warmup_frac = warmup / t
    w2, decay = phase_lengths(t, warmup_frac, tc.decay_frac)
    k = t - decay
    if w2 != warmup or k < warmup:
        raise ConfigError(f"{parent_dir}: branch at {fraction} of {total} steps ({t} steps) would "
                          f"start its cool-down at step {k}, before the parent's warmup "
                          f"({warmup} steps) ends; use a larger fraction")
    train = dataclasses.replace(tc, steps=t, train_bytes=t * bytes_per_step(parent_cfg),
                                warmup_frac=warmup_frac)
    name = f"{parent_cfg.name},cooldown={fraction:g}"
    cfg = dataclasses.replace(parent_cfg, train=train, name=name)
    return BranchPlan(parent_dir, fraction, cfg, k, t)


def branch_steps(parent_cfg: RunConfig, fractions: list[float]) -> list[int]:
    """Parent steps at which branches start (the checkpoints the parent must keep)."""
    return [plan_branch(parent_cfg, f, Path("<run>")).from_step for f in fractions]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _parent_checkpoint(plan: BranchPlan) -> Path:
    """The parent's verified checkpoint at the branch's start step (one-line error if absent)."""
    src = plan.parent_dir / "ckpt" / f"step_{plan.from_step:06d}"
    if not (src / ck.MANIFEST).is_file():
        have = [s for s, _ in ck.list_checkpoints(plan.parent_dir / "ckpt")]
        raise ConfigError(
            f"{plan.parent_dir}: no checkpoint at step {plan.from_step} for the "
            f"{plan.fraction:g} cool-down branch (have steps {have}); set train.ckpt_every to a "
            f"divisor of {plan.from_step} and train.keep_last: 0")
    ck.verify_checkpoint(src)
    return src


def _seed_checkpoint(plan: BranchPlan, out: Path) -> None:
    """Copy the parent's step-K checkpoint into out/ckpt/, relabelled with the branch's config
    (true: the branch's first K steps are the parent's), manifest checksums updated."""
    src = _parent_checkpoint(plan)
    root = out / "ckpt"
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp_step_{plan.from_step:06d}_branch"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    save_config(plan.cfg, tmp / "config.yaml")
    manifest = json.loads((tmp / ck.MANIFEST).read_text(encoding="utf-8"))
    manifest["files"]["config.yaml"] = _sha256(tmp / "config.yaml")
    (tmp / ck.MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    tmp.rename(root / src.name)


def _parent_metrics(parent_dir: Path, upto: int) -> str:
    """The parent's metrics.jsonl lines up to step K (the branch's shared history)."""
    path = parent_dir / "metrics.jsonl"
    if not path.is_file():
        return ""
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= upto:
            keep.append(line)
    return "".join(x + "\n" for x in keep)


def make_branch(parent_dir: str | Path, fraction: float, out_root: str | Path,
                job: dict[str, Any] | None = None) -> Path:
    """Create (or find) the branch run directory of `parent_dir` at `fraction` under `out_root`;
    returns it. Idempotent: a branch directory that already holds a checkpoint is left alone."""
    parent_dir = Path(parent_dir)
    parent_cfg = load_saved(parent_dir / "config.yaml")
    plan = plan_branch(parent_cfg, fraction, parent_dir)
    out = Path(out_root) / plan.run_id
    info = {"parent": parent_dir.name, "parent_dir": str(parent_dir), "fraction": fraction,
            "from_step": plan.from_step, "total_steps": plan.total_steps,
            "parent_steps": parent_steps(parent_cfg)}
    if ck.list_checkpoints(out / "ckpt"):
        return out
    _parent_checkpoint(plan)  # before anything is written: no half-made branch directory
    out.mkdir(parents=True, exist_ok=True)
    save_config(plan.cfg, out / "config.yaml")
    atomic_write_text(out / BRANCH_FILE, json.dumps(info, indent=1) + "\n")
    if job is not None:
        atomic_write_text(out / "job.json", json.dumps({**job, "branch": info}, indent=1) + "\n")
    atomic_write_text(out / "metrics.jsonl", _parent_metrics(parent_dir, plan.from_step))
    _seed_checkpoint(plan, out)
    return out


def train_branch(parent_dir: str | Path, fraction: float, out_root: str | Path) -> dict:
    """Create the branch and train its cool-down in this process; returns train()'s summary."""
    from hnetbench.train.trainer import train

    out = make_branch(parent_dir, fraction, out_root)
    return train(load_saved(out / "config.yaml"), out)
