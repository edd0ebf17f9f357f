"""Sweep runner: plan a spec, start what is unfinished, report status, cancel.

results/<sweep>/ holds spec.yaml (a copy), plan.json, jobs.json (submitted job ids) and one
directory per run (results/<sweep>/<run_id>/, see docs/INTERFACES.md). Completed runs are
skipped, interrupted ones resume (train() picks up ckpt/), failed ones wait for --retry-failed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hnetbench.config import RunConfig, atomic_write_text, save_config, to_dict
from hnetbench.sweeps import slurm
from hnetbench.sweeps.executors import WAITS, cancel_jobs, check_available, get_executor
from hnetbench.sweeps.spec import (
    PlannedRun,
    SweepSpec,
    expand,
    family_scale,
    forward_flops_per_byte,
    load_spec,
)
from hnetbench.sweeps.state import (
    RunLock,
    is_completed,
    live_owner,
    now,
    read_json,
    read_status,
    update_status,
    write_json,
)

Log = Callable[[str], None]
CPU_FLOPS = 5e10  # sustained fp32 training FLOP/s of a small CPU box (FIELD-NOTES: ~150 peak)


# ----------------------------------------------------------------------------- planning


def train_bytes(cfg: RunConfig, fpb: float | None) -> int:
    """Bytes a run trains on: train_bytes, else train_flops / (3 x FLOPs per byte), else steps."""
    t, d = cfg.train, cfg.data
    if t.train_bytes > 0:
        return int(t.train_bytes)
    if t.train_flops > 0 and fpb:
        return int(t.train_flops / (3 * fpb))
    return int(t.steps * t.grad_accum * d.batch_size * d.seq_len)


def _flops_per_byte(cfg: RunConfig, spec: SweepSpec) -> float | None:
    bpt = spec.match.bytes_per_token if spec.match else None
    try:
        return forward_flops_per_byte(cfg, bpt)
    except ImportError:
        return None


def _params(cfg: RunConfig) -> int | None:
    try:
        from hnetbench.models import count_parameters
    except ImportError:
        return None
    try:
        return int(count_parameters(cfg.model))
    except Exception:  # noqa: BLE001 - the plan is informative; a model bug shows up in training
        return None


def throughput(spec: SweepSpec, executor: str) -> float:
    """Sustained training FLOP/s of one run, for the time estimate."""
    if spec.estimate.flops_per_s > 0:
        return spec.estimate.flops_per_s
    s, e = spec.slurm, spec.estimate
    if executor == "slurm" and s.gpus_per_node > 0:
        return s.nodes * s.gpus_per_node * e.gpu_peak_flops * e.mfu
    if executor == "slurm":  # a CPU partition: a small CPU box per node
        return s.nodes * CPU_FLOPS
    return CPU_FLOPS


def throughput_basis(spec: SweepSpec, executor: str) -> str:
    """What the time estimate assumes, for the plan's header."""
    s, e = spec.slurm, spec.estimate
    if e.flops_per_s > 0:
        return "estimate.flops_per_s"
    if executor == "slurm" and s.gpus_per_node > 0:
        return (f"{s.nodes}x{s.gpus_per_node} GPUs at {_fmt_num(e.gpu_peak_flops, 'FLOP/s')} peak"
                f" (estimate.gpu_peak_flops) x mfu {e.mfu}")
    return f"{_fmt_num(CPU_FLOPS, 'FLOP/s')} per CPU node; set estimate.flops_per_s"


def plan(spec: SweepSpec, runs: list[PlannedRun], executor: str) -> list[dict[str, Any]]:
    rate = throughput(spec, executor)
    ids = {r.label: r.run_id for r in runs}
    rows = []
    for r in runs:
        fpb = r.match.get("flops_per_byte") if r.match and "flops_per_byte" in r.match else None
        fpb = fpb or _flops_per_byte(r.cfg, spec)
        nbytes = train_bytes(r.cfg, fpb)
        total = 3 * fpb * nbytes if fpb else None
        fam, scale = family_scale(r.cfg)
        match = dict(r.match) if r.match else None
        if match:
            match["reference_run_id"] = ids.get(match["reference"])
        rows.append({
            "run_id": r.run_id, "label": r.label, "axes": r.axes, "family": fam, "scale": scale,
            "domain": r.cfg.data.domain, "params": _params(r.cfg), "flops_per_byte": fpb,
            "train_bytes": nbytes, "train_flops": total,
            "est_s": round(total / rate, 1) if total else None, "match": match,
        })
    return rows


def _fmt_num(x: float | None, unit: str = "") -> str:
    if x is None:
        return "?"
    for div, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}{unit}"
    return f"{x:.3g}{unit}"


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "?"
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}min"
    return f"{s / 3600:.1f}h"


def format_plan(spec: SweepSpec, rows: list[dict[str, Any]], executor: str) -> str:
    lines = [f"sweep {spec.name}: {len(rows)} runs, executor {executor},"
             f" throughput estimate {_fmt_num(throughput(spec, executor), 'FLOP/s')} per run"
             f" ({throughput_basis(spec, executor)})"]
    head = f"{'run_id':12s}  {'params':>7s}  {'FLOPs/B':>8s}  {'bytes':>7s}  {'est':>6s}  label"
    lines.append(head)
    for r in rows:
        m = r["match"]
        note = ""
        if m and not m.get("is_reference") and m.get("target_flops_per_byte"):
            a, b = m.get("main_depth") or ("?", "?")
            note = (f"  [matched to {m['reference']}: target "
                    f"{_fmt_num(m['target_flops_per_byte'])}, main depth {a}->{b}]")
        elif m and m.get("is_reference"):
            note = "  [reference]"
        lines.append(f"{r['run_id']:12s}  {_fmt_num(r['params']):>7s}  "
                     f"{_fmt_num(r['flops_per_byte']):>8s}  {_fmt_num(r['train_bytes'], 'B'):>7s}  "
                     f"{_fmt_time(r['est_s']):>6s}  {r['label']}{note}")
    total = sum(r["est_s"] or 0 for r in rows)
    lines.append(f"total estimated run time {_fmt_time(total)} (sequential)")
    return "\n".join(lines)


def job_evals(spec: SweepSpec, cfg: Any) -> dict[str, Any]:
    """The evals a run's job does after training: the spec's `eval:`, plus the robustness eval
    for the runs its `robustness:` section selects (by domain and seed), so that it runs inside
    those jobs, packed with the other jobs, instead of in a phase of its own afterwards."""
    evals = to_dict(spec.eval)
    rs = spec.robustness
    if rs is not None and cfg.data.domain in rs.domains and cfg.train.seed in rs.seeds:
        evals.update(robustness=True, robustness_tasks=list(rs.tasks),
                     robustness_limit=rs.limit)
    return evals


def _shown_path(path: str | os.PathLike) -> str:
    """`path` relative to the working directory when it lies under it (a sweep's plan.json
    then names `sweeps/specs/cpu.yaml`, not the absolute path of one clone), else absolute."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def write_plan(spec: SweepSpec, runs: list[PlannedRun], rows: list[dict[str, Any]],
               sweep_dir: Path) -> None:
    """spec.yaml copy, plan.json and each run's config.yaml + job.json."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep_dir / "spec.yaml", Path(spec.path).read_text(encoding="utf-8"))
    write_json(sweep_dir / "plan.json", {"sweep": spec.name, "spec": _shown_path(spec.path),
                                         "written": now(), "runs": rows})
    for run, row in zip(runs, rows):
        rd = sweep_dir / run.run_id
        rd.mkdir(exist_ok=True)
        if not (rd / "config.yaml").exists():
            save_config(run.cfg, rd / "config.yaml")
        write_json(rd / "job.json", {"sweep": spec.name, "label": run.label,
                                     "eval": job_evals(spec, run.cfg),
                                     "match": row["match"],
                                     "flops_per_byte": row["flops_per_byte"]})


# ----------------------------------------------------------------------------- run


def run_sweep(spec_path: str | Path, executor: str = "local", max_parallel: int = 1,
              dry_run: bool = False, retry_failed: bool = False, results: str | Path = "results",
              log: Log = print, check: bool = False) -> int:
    spec = load_spec(spec_path)
    run_fn = get_executor(executor)
    runs = expand(spec)
    rows = plan(spec, runs, executor)
    if dry_run:
        log(format_plan(spec, rows, executor))
        return 0
    if check or executor == "slurm":  # preflight: always before a Slurm submission
        from hnetbench.sweeps.check import check_sweep

        rc = check_sweep(spec, runs, rows, executor, log)
        if check or rc:
            return rc
    check_available(executor)
    sweep_dir = Path(results) / spec.name
    write_plan(spec, runs, rows, sweep_dir)
    todo = []
    skipped = {"completed": 0, "failed": 0, "running elsewhere": 0, "queued or running in Slurm": 0}
    recs = slurm_records(sweep_dir, [r.run_id for r in runs])
    for run in runs:
        rd = sweep_dir / run.run_id
        if is_completed(rd):
            skipped["completed"] += 1
            continue
        owner = live_owner(rd)
        if owner is not None:
            skipped["running elsewhere"] += 1
            log(f"skip {run.run_id} {run.label}: running in pid {owner.get('pid')}"
                f" on {owner.get('host')}")
            continue
        rec = recs.get(run.run_id)
        if rec is not None and rec["state"] in slurm.ACTIVE:  # queued runs hold no lock
            skipped["queued or running in Slurm"] += 1
            log(f"skip {run.run_id} {run.label}: Slurm job {rec['job_id']} is {rec['state']}")
            continue
        if rec is not None:
            settle_from_slurm(rd, rec)
        if read_status(rd)["state"] == "failed" and not retry_failed:
            skipped["failed"] += 1
            log(f"skip failed {run.run_id} {run.label} (use --retry-failed)")
            continue
        todo.append(rd)
    log(f"sweep {spec.name}: {len(runs)} runs, {len(todo)} to run"
        + "".join(f", {n} {k}" for k, n in skipped.items() if n))
    if not todo:
        return 1 if skipped["failed"] else 0
    outcome = run_fn(spec, sweep_dir, todo, max_parallel, log)
    if not WAITS[executor]:
        log(f"submitted {len(todo)} jobs; follow with `hnetbench sweep status {spec_path}`")
        return 0
    counts: dict[str, int] = {}
    for state in outcome.values():
        counts[state] = counts.get(state, 0) + 1
    log(f"sweep {spec.name}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return 1 if counts.get("failed") or skipped["failed"] else 0


# ----------------------------------------------------------------------------- status


def _planned(spec_path: str | Path, results: str | Path) -> tuple[SweepSpec, Path, list[dict]]:
    spec = load_spec(spec_path)
    sweep_dir = Path(results) / spec.name
    data = read_json(sweep_dir / "plan.json")
    if data is None:  # never run: show what would run
        rows = [{"run_id": r.run_id, "label": r.label} for r in expand(spec)]
    else:
        rows = data["runs"]
    return spec, sweep_dir, rows


def _last_metrics(path: Path) -> dict[str, Any]:
    """The last train line of metrics.jsonl (reads the tail only)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("split") != "val":
            return rec
    return {}


def slurm_records(sweep_dir: Path, run_ids: list[str]) -> dict[str, dict[str, str]]:
    """Slurm's record of each run's latest Slurm job ({} for runs never sent to Slurm, jobs
    Slurm forgot, or no Slurm here)."""
    jobs = read_json(sweep_dir / "jobs.json") or {}
    last: dict[str, str] = {}
    for run_id in run_ids:
        entries = [e for e in jobs.get(run_id) or [] if e.get("executor") == "slurm"]
        if entries:
            last[run_id] = str(entries[-1]["job_id"])
    if not last:
        return {}
    recs = slurm.job_records(last.values())
    return {run_id: {**recs[j], "job_id": j} for run_id, j in last.items() if j in recs}


def settle_from_slurm(rd: Path, rec: dict[str, str]) -> None:
    """Write Slurm's verdict into status.json for a job that ended without recording it (failed
    in its setup, killed for memory, timed out without requeue, cancelled while queued)."""
    verdict = ("failed" if rec["state"] in slurm.FAILED
               else "cancelled" if rec["state"] == "CANCELLED" else None)
    if verdict is None or read_status(rd)["state"] in ("completed", "failed", "cancelled"):
        return
    lock = RunLock(rd)
    if not lock.acquire():  # a live job holds the run: it records its own outcome
        return
    try:
        if read_status(rd)["state"] not in ("completed", "failed", "cancelled"):
            update_status(rd, state=verdict, error=slurm.describe(rec), finished=now())
    finally:
        lock.release()


def run_state(rd: Path, jobs: dict[str, Any], rec: dict[str, str] | None = None) -> str:
    """The state status shows: the run's own record, a live lock, else what Slurm says."""
    if is_completed(rd):
        return "completed"
    if live_owner(rd) is not None:
        return read_status(rd)["state"]
    if rec is not None and rec["state"] in slurm.ACTIVE:
        return "queued" if rec["state"].startswith(("PENDING", "REQUEUE")) else "starting"
    if rec is not None:
        settle_from_slurm(rd, rec)
    state = read_status(rd)["state"]
    if state == "running":
        return "interrupted"
    if state == "pending" and rd.name in jobs:
        return "submitted"
    return state


def sweep_status(spec_path: str | Path, results: str | Path = "results",
                 log: Log = print) -> list[dict[str, Any]]:
    spec, sweep_dir, rows = _planned(spec_path, results)
    jobs = read_json(sweep_dir / "jobs.json") or {}
    recs = slurm_records(sweep_dir, [row["run_id"] for row in rows])
    out = []
    for row in rows:
        rd = sweep_dir / row["run_id"]
        rec = recs.get(row["run_id"])
        state = run_state(rd, jobs, rec)
        st = read_status(rd)
        summary = read_json(rd / "summary.json") or {}
        last = _last_metrics(rd / "metrics.jsonl")
        note = st.get("error")
        if state in ("queued", "starting") and rec is not None:
            note = f"{rec['state']}: {rec['reason']}" if rec.get("reason") else rec["state"]
        out.append({"run_id": row["run_id"], "label": row["label"], "state": state,
                    "attempts": st["attempts"], "step": summary.get("steps", last.get("step")),
                    "val_bpb": summary.get("final_val_bpb"), "error": note,
                    "job": (jobs.get(row["run_id"]) or [{}])[-1].get("job_id")})
    counts: dict[str, int] = {}
    for r in out:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    log(f"sweep {spec.name} ({sweep_dir}): "
        + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    log(f"{'run_id':12s}  {'state':11s}  {'att':>3s}  {'step':>6s}  {'val_bpb':>7s}  "
        f"{'job':>10s}  label")
    for r in out:
        bpb = f"{r['val_bpb']:.4f}" if isinstance(r["val_bpb"], (int, float)) else "-"
        line = (f"{r['run_id']:12s}  {r['state']:11s}  {r['attempts']:>3d}  "
                f"{str(r['step'] if r['step'] is not None else '-'):>6s}  {bpb:>7s}  "
                f"{str(r['job'] or '-'):>10s}  {r['label']}")
        if r["error"] and r["state"] in ("failed", "cancelled", "queued", "submitted"):
            line += f"  ({r['error']})"
        log(line)
    return out


# ----------------------------------------------------------------------------- cancel


def cancel_sweep(spec_path: str | Path, results: str | Path = "results", log: Log = print,
                 wait_s: float = 60.0) -> int:
    """Cancel queued/running Slurm jobs, stop local ones, mark every unfinished run cancelled.

    A run's lock is never removed while its job may still write: cancelled jobs (SIGTERM) save
    a checkpoint at their current step, record `cancelled` and release the run themselves; we
    wait up to `wait_s` for that, then mark the runs no job holds."""
    spec, sweep_dir, rows = _planned(spec_path, results)
    slurm_hit = cancel_jobs(sweep_dir, log)
    host = socket.gethostname()
    marked: set[str] = set()
    signalled: set[int] = set()

    def mark_unheld() -> None:
        """Mark cancelled every unfinished run no job holds (a local runner then skips it)."""
        for row in rows:
            rd = sweep_dir / row["run_id"]
            if row["run_id"] in marked or not rd.is_dir() or is_completed(rd):
                continue
            lock = RunLock(rd)
            if lock.acquire():
                try:
                    if not is_completed(rd):
                        if read_status(rd)["state"] != "cancelled":
                            update_status(rd, state="cancelled",
                                          error="cancelled by sweep cancel", finished=now())
                        marked.add(row["run_id"])
                finally:
                    lock.release()

    def stop_local() -> None:
        """SIGTERM the local processes holding runs, including jobs a local runner started
        while we were cancelling (a forked job claims its run within a fraction of a second)."""
        for row in rows:
            rd = sweep_dir / row["run_id"]
            owner = live_owner(rd) if rd.is_dir() else None
            if owner and owner.get("host") == host and owner.get("pid") and \
                    not owner.get("slurm_job_id") and int(owner["pid"]) not in signalled:
                signalled.add(int(owner["pid"]))
                try:
                    os.kill(int(owner["pid"]), signal.SIGTERM)
                except ProcessLookupError:
                    pass

    mark_unheld()
    stop_local()
    deadline = time.time() + wait_s
    pending = {row["run_id"] for row in rows if (sweep_dir / row["run_id"]).is_dir()}
    while time.time() < deadline:
        stop_local()
        busy = {r for r in pending if live_owner(sweep_dir / r) is not None}
        recs = slurm.job_records(slurm_hit.values()) if slurm_hit else {}
        busy |= {r for r, j in slurm_hit.items() if j in recs and recs[j]["state"] in slurm.ACTIVE}
        if not busy:
            break
        time.sleep(0.3)
    mark_unheld()
    for row in rows:
        rd = sweep_dir / row["run_id"]
        if row["run_id"] not in marked and rd.is_dir() and not is_completed(rd):
            log(f"still stopping {row['run_id']} {row['label']} (held by {RunLock(rd).owner()});"
                " its job records `cancelled` when it ends")
    n = len(marked)
    log(f"sweep {spec.name}: marked {n} runs cancelled")
    return 0
