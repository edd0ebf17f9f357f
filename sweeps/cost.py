"""What one `hnetbench reproduce` cost in CPU time, and where it went (`<sweep>/cost.json`).

The total is the CPU this process and every child it waited for (resource.getrusage: forked or
subprocess jobs, the job zygote, robustness catch-ups) spent since `reproduce` began (Python's
start-up and imports before it, ~1 s, are not in it). Jobs record their own share in
status.json (sweeps/job.py: the whole job, its training leg, each eval), so the total splits into
training, evals, and the rest (planning with its tokenizer training, job start-up, the report).
Bytes are those trained in this invocation (each training leg's, so a cool-down branch counts
only the steps after the checkpoint it starts from, and a run finished earlier counts nothing).
Setting up the environment (`make setup`) is outside it. Jobs on Slurm are not our children:
there the total is the jobs' own records only. Each invocation (a rerun after an interruption
is another) is appended to cost.json's list, so a rerun never overwrites what the first spent;
each entry names the code that ran (its git commit, when run from a checkout).
"""

from __future__ import annotations

import resource
import subprocess
import time
from pathlib import Path
from typing import Any

from hnetbench.sweeps.state import read_json, write_json


def process_tree_cpu_s() -> float:
    """User + system CPU seconds of this process and of every child it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def code_commit() -> str | None:
    """The git commit of the hnetbench checkout that runs (12 hex digits, "+changes" when its
    tracked files outside results/ differ from it); None when installed from a wheel."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=30)

    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode or Path(top.stdout.strip()).resolve() != root:
            return None  # not a checkout of its own (a wheel inside some other repository)
        head = git("rev-parse", "--short=12", "HEAD").stdout.strip()
        changed = git("diff", "--quiet", "HEAD", "--", ".", ":(exclude)results").returncode
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+changes" if changed == 1 else "")) or None


def jobs_since(sweep_dir: Path, since: str) -> list[dict[str, Any]]:
    """status.json of each completed job of the sweep (runs and branches) started at or after
    `since` (state.now() format, so string order is time order)."""
    out = []
    for st_path in sorted(sweep_dir.glob("*/status.json")):
        st = read_json(st_path) or {}
        if st.get("state") == "completed" and str(st.get("started") or "") >= since:
            out.append(st)
    return out


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) else 0.0


def summarize(jobs: list[dict[str, Any]], total_cpu_s: float | None, wall_s: float) -> dict:
    """cost.json's content: totals and the split (None total: the jobs' records only)."""
    jobs_cpu = sum(_num(j.get("job_cpu_s")) for j in jobs)
    train_cpu = sum(_num(j.get("train_cpu_s")) for j in jobs)
    evals: dict[str, float] = {}
    for j in jobs:
        for name, s in (j.get("eval_cpu_s") or {}).items():
            evals[name] = evals.get(name, 0.0) + _num(s)
    trained = int(sum(_num(j.get("leg_bytes")) for j in jobs))
    if total_cpu_s is not None and total_cpu_s < jobs_cpu:
        total_cpu_s = None  # some jobs were not children it waited for (an executor's daemon)
    total = total_cpu_s if total_cpu_s is not None else jobs_cpu
    return {
        "cpu_s": round(total, 1),
        "scope": "process tree" if total_cpu_s is not None else "jobs' own records",
        "wall_s": round(wall_s, 1),
        "jobs": len(jobs),
        "bytes_trained": trained,
        "us_per_trained_byte": round(total / trained * 1e6, 1) if trained else None,
        "training_cpu_s": round(train_cpu, 1),
        "eval_cpu_s": {k: round(v, 1) for k, v in sorted(evals.items())},
        # job start-up and loading outside its training and evals
        "jobs_other_cpu_s": round(jobs_cpu - train_cpu - sum(evals.values()), 1),
        # planning (BPE tokenizers), the runner, the zygote, robustness catch-ups, the report
        "outside_jobs_cpu_s": round(total - jobs_cpu, 1) if total_cpu_s is not None else None,
    }


def record(sweep_dir: Path, since: str, t0: float, cpu0: float | None) -> dict[str, Any]:
    """Append this invocation to `<sweep_dir>/cost.json`: the jobs started since `since`, and
    (cpu0 = process_tree_cpu_s() at the start, None on Slurm) the process tree's CPU since."""
    total = process_tree_cpu_s() - cpu0 if cpu0 is not None else None
    cost = {"started": since, "commit": code_commit(),
            **summarize(jobs_since(sweep_dir, since), total, time.perf_counter() - t0)}
    old = (read_json(sweep_dir / "cost.json") or {}).get("invocations")
    write_json(sweep_dir / "cost.json",
               {"invocations": [*(old if isinstance(old, list) else []), cost]})
    return cost


def one_line(cost: dict[str, Any]) -> str:
    """`cost: 1,561 CPU-s for 16.1 MB trained (97 us/byte): training 1,314, evals 203, ...`"""
    per = cost["us_per_trained_byte"]
    evals = sum(cost["eval_cpu_s"].values())
    rest = cost["cpu_s"] - cost["training_cpu_s"] - evals
    return (f"cost: {cost['cpu_s']:,.0f} CPU-s for {cost['bytes_trained'] / 1e6:.1f} MB trained"
            + (f" ({per:.0f} us/byte)" if per is not None else "")
            + f": training {cost['training_cpu_s']:,.0f}, evals {evals:,.0f}, other {rest:,.0f}")
