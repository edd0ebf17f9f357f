"""Preflight (`sweep run SPEC --check`, `reproduce --preset P --check`): everything that would
fail inside a job, found before any job starts, one line each.

Per run: the tokenizer loads (a GPT-2 BPE file is present), the data is prepared (or cheap to
prepare in the job), its training split holds the run's byte budget and at least one batch, the
model's vocabulary covers the tokenizer. Per sweep on Slurm: submitit/sbatch are there and the
resources are consistent (positive sizes; every run's batch divides over the job's ranks).
Runs sharing a data config are checked once. Nothing is prepared, trained or submitted.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from hnetbench.config import ConfigError, RunConfig
from hnetbench.sweeps.spec import PlannedRun, SweepSpec

AUTO_PREPARE_LIMIT = 1 << 30  # inputs above 1 GB must be prepared before a job starts


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def data_problems(cfg: RunConfig, budget: int | None) -> list[str]:
    """What would stop `cfg`'s job at data loading (or make it train on less than it says)."""
    from hnetbench.data import prepare as prep
    from hnetbench.data import shards as sh

    d = cfg.data
    try:
        tok = prep.prepare_tokenizer(d)
    except (ConfigError, OSError) as e:
        return [f"tokenizer: {e}"]
    out = []
    if cfg.model.vocab_size < tok.vocab_size:
        out.append(f"model.vocab_size {cfg.model.vocab_size} is smaller than the {tok.name} "
                   f"tokenizer's {tok.vocab_size} ids")
    try:
        root = prep.prepared_dir(d, tok)
    except ConfigError as e:
        return out + [str(e)]
    if not (root / sh.MANIFEST).is_file():
        if d.source == "prepared":
            return out + [f"data: {root}: not prepared (run `hnetbench data prepare ... "
                          f"data.tokenizer={d.tokenizer} --out {d.path}`)"]
        if d.source == "hf" and not prep._hf_local(d) and d.max_bytes <= 0:
            return out + [f"data: data.source=hf '{d.path}' streams the whole dataset; prepare "
                          "it with `hnetbench data prepare` and use data.source=prepared"]
        if d.source == "files":
            try:
                size = sum(p.stat().st_size for p in _files(d))
            except ConfigError as e:
                return out + [f"data: {e}"]
            if size > AUTO_PREPARE_LIMIT and not d.max_bytes:
                out.append(f"data: {d.path}: {_gb(size)} of input would be prepared inside every "
                           "job; run `hnetbench data prepare` first and use "
                           "data.source=prepared")
        return out  # embedded / small inputs: prepared into the cache on first use
    try:
        man = sh.load_manifest(root)
    except ConfigError as e:
        return out + [f"data: {e}"]
    if man["tokenizer"]["fingerprint"] != sh.tokenizer_identity(tok)["fingerprint"]:
        out.append(f"data: {root / sh.MANIFEST}: prepared with tokenizer "
                   f"{man['tokenizer']['name']} ({man['tokenizer']['fingerprint']}), the run uses "
                   f"{tok.name}")
        return out
    tr = man["splits"]["train"]
    if budget and tr["bytes"] < budget:
        out.append(f"data: {root}: the train split holds {_gb(tr['bytes'])}, less than the run's "
                   f"budget of {_gb(budget)} (it would repeat data {budget / tr['bytes']:.1f}x)")
    if man["splits"]["val"]["documents"] == 0 and cfg.train.eval_batches > 0:
        out.append(f"data: {root}: the val split is empty (train.eval_batches > 0)")
    # a batch larger than the data trains on repeats: the loader refuses it
    positions = tr["tokens"] + tr["documents"]
    t = sh.matched_seq_len(d.seq_len, tok.name, tr)
    if (positions - 1) // t < d.batch_size:
        out.append(f"data: {root}: the train split gives {(positions - 1) // t} windows of {t} "
                   f"tokens, fewer than one batch of {d.batch_size}")
    return out


def _files(d) -> list:
    from hnetbench.data.connectors import expand_paths

    return expand_paths(d.path)


def slurm_problems(spec: SweepSpec, runs: list[PlannedRun]) -> list[str]:
    from hnetbench.sweeps.executors import check_available, tasks_per_node

    s, out = spec.slurm, []
    try:
        check_available("slurm")
    except ConfigError as e:
        out.append(str(e))
    for key in ("nodes", "cpus_per_task", "mem_gb", "time_min", "array_parallelism"):
        if not isinstance(getattr(s, key), int) or getattr(s, key) < 1:
            out.append(f"slurm.{key}: expected a positive integer, got {getattr(s, key)!r}")
    for key in ("gpus_per_node", "max_requeue"):  # 0 GPUs: a CPU partition
        if not isinstance(getattr(s, key), int) or getattr(s, key) < 0:
            out.append(f"slurm.{key}: expected an integer >= 0, got {getattr(s, key)!r}")
    ok = all(isinstance(getattr(s, k), int) and getattr(s, k) >= 0
             for k in ("nodes", "gpus_per_node", "tasks_per_node"))
    world = s.nodes * tasks_per_node(spec) if ok else 0
    for r in runs:
        if world > 0 and r.cfg.data.batch_size % world:
            out.append(f"{r.run_id} {r.label}: data.batch_size {r.cfg.data.batch_size} is not a "
                       f"multiple of the job's {world} ranks (slurm.nodes x tasks per node)")
    return out


def check_sweep(spec: SweepSpec, runs: list[PlannedRun], rows: list[dict[str, Any]],
                executor: str, log: Callable[[str], None] = print) -> int:
    """Log one line per problem; 2 if there is any, else 0."""
    problems: list[str] = []
    seen: dict[str, list[str]] = {}
    for run, row in zip(runs, rows):
        key = json.dumps([dataclasses.asdict(run.cfg.data), run.cfg.model.vocab_size,
                          row.get("train_bytes"), run.cfg.train.eval_batches], default=str)
        if key not in seen:
            seen[key] = data_problems(run.cfg, row.get("train_bytes"))
        problems += [f"{run.run_id} {run.label}: {p}" for p in seen[key]]
    if executor == "slurm":
        problems += slurm_problems(spec, runs)
    for p in problems:
        log(f"check: {p}")
    log(f"check: {spec.name}: {len(runs)} runs, "
        + (f"{len(problems)} problem(s)" if problems else "no problems found"))
    return 2 if problems else 0
