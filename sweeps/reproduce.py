"""`hnetbench reproduce`: the paper's comparison end to end — sweep, evals, report.

Presets are sweep specs shipped in sweeps/specs/. `cpu` (the default) trains, evaluates and
reports here, on the embedded corpora; the paper-scale presets (`paper-L`, `paper-XL`,
`chinese-code`, `dna`) are written out for Slurm and shown with `--dry-run`. A rerun skips
finished runs and resumes interrupted ones (the sweep runner's guarantees).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from hnetbench.cli import CLIError
from hnetbench.config import to_dict
from hnetbench.sweeps import cost
from hnetbench.sweeps.spec import SweepSpec
from hnetbench.sweeps.state import now
from hnetbench.sweeps.zygote import close_shared_zygote

SPECS = Path(__file__).resolve().parent / "specs"
# preset -> (spec file, runs here?) ; paper-scale presets need GPUs and the paper's data
PRESETS: dict[str, tuple[str, bool]] = {
    "cpu": ("cpu.yaml", True),
    "paper-L": ("paper-L.yaml", False),
    "paper-XL": ("paper-XL.yaml", False),
    "chinese-code": ("chinese-code.yaml", False),
    "dna": ("dna.yaml", False),
    "tokenizers": ("tokenizers.yaml", True),  # BPE vs SentencePiece vs the H-Net, cpu scale
}


# disk a preset's run directories take (checkpoints kept for branches and boundary pictures),
# measured: cpu 489 MB in results/cpu (2026-11-30); with room for the cache and a margin
NEEDS_DISK = {"cpu": 1 << 30}


def check_disk(results: Path, need: int) -> None:
    """A one-line error before any run starts when the results' disk cannot hold them (a full
    disk mid-sweep fails every job and the report alike)."""
    if need <= 0:
        return
    probe = results
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need:
        raise CLIError(f"{results}: {free / 2**20:.0f} MiB free on its disk, this preset needs "
                       f"about {need / 2**20:.0f} MiB (run directories and checkpoints); free "
                       "space or pass --results on another disk")


class ProgressLog:
    """The sweep runner's log lines, plus runs finished / to run, elapsed time and an ETA.

    With the sweep's plan (`results`/NAME/plan.json) the ETA weighs the runs left by the plan's
    estimate of each (from their FLOPs), scaled by how the finished runs compared with theirs,
    and counts the time the running ones have already had, over `workers` runs at a time: runs
    are listed longest first, so a plain average over the runs finished would put the first
    ETAs several times too far. Without estimates (branch runs), that plain average."""

    def __init__(self, t0: float, results: Path | None = None, workers: int = 1,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.t0, self.total, self.done = t0, 0, 0
        self.results, self.workers, self.clock = results, max(1, workers), clock
        self.est: dict[str, float] = {}  # run id -> planned seconds, runs still to finish
        self.running: dict[str, float] = {}  # run id -> start time
        self.finished_est = self.finished_wall = 0.0

    def _load_estimates(self, name: str) -> None:
        from hnetbench.sweeps.state import is_completed, read_json

        if self.results is None:
            return
        sweep = self.results / name
        plan = read_json(sweep / "plan.json") or {}
        self.est = {r["run_id"]: float(r["est_s"]) for r in plan.get("runs", [])
                    if r.get("est_s") and not is_completed(sweep / r["run_id"])}

    def __call__(self, line: str) -> None:
        m = re.match(r"sweep (\S+): \d+ runs, (\d+) to run", line)
        if m:
            self.total = int(m.group(2))
            self._load_estimates(m.group(1))
        print(line, flush=True)
        word, _, rest = line.partition(" ")
        run = rest.split()[0] if rest.split() else ""
        now = self.clock()
        if word == "started":
            self.running[run] = now
        if word in ("completed", "failed", "cancelled", "locked") and self.total:
            self.done += 1
            began, est = self.running.pop(run, None), self.est.pop(run, None)
            if word == "completed" and began is not None and est:  # calibrate on finished work
                self.finished_est += est
                self.finished_wall += now - began
            spent = now - self.t0
            print(f"[reproduce] {self.done}/{self.total} runs finished, {_mmss(spent)} elapsed, "
                  f"ETA {_mmss(self._eta(now, spent))} (then the report)", flush=True)

    def _eta(self, now: float, spent: float) -> float:
        left = self.total - self.done
        if left <= 0:
            return 0.0
        if not self.finished_est or any(r not in self.est for r in self.running):
            return spent / self.done * left  # no estimates to go by
        scale = self.finished_wall / self.finished_est
        running = [max(0.0, self.est[r] * scale - (now - t)) for r, t in self.running.items()]
        pending = [e * scale for r, e in self.est.items() if r not in self.running]
        return max(sum(running + pending) / self.workers, max(running, default=0.0))


def _mmss(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS),
                        help="which experiment (default: cpu, ~20 min on 2 cores; README)")
    parser.add_argument("--results", default="results", help="results root (default: results)")
    parser.add_argument("--executor", default=None,
                        help="local | submitit-local | slurm (default: local for cpu; paper "
                             "presets default to printing the plan)")
    parser.add_argument("--max-parallel", type=int, default=2,
                        help="runs at once with a local executor (default 2: one per core)")
    parser.add_argument("--spec", default=None, metavar="PATH",
                        help="run this sweep spec through the pipeline instead of the preset's "
                             "(e.g. a copy from --write-spec with smaller budgets)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--check", action="store_true",
                        help="preflight every run (data prepared and large enough, tokenizer "
                             "files, Slurm options), one line per problem; exit 2 on any")
    parser.add_argument("--write-spec", default=None, metavar="PATH",
                        help="copy the preset's sweep spec to PATH (to edit, then `hnetbench "
                             "sweep run PATH --executor slurm`)")


def main(args: argparse.Namespace) -> int:
    from hnetbench.sweeps import runner

    spec_file, runs_here = PRESETS[args.preset]
    spec = SPECS / spec_file
    if args.spec:
        spec, runs_here = Path(args.spec), True
    if not spec.is_file():
        raise CLIError(f"{spec}: the preset's sweep spec is missing from this installation")
    if args.write_spec:
        dest = Path(args.write_spec)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(spec, dest)
        print(f"wrote {dest}")
        return 0
    if args.check:
        executor = args.executor or ("local" if runs_here else "slurm")
        return runner.run_sweep(spec, executor=executor, results=args.results, check=True)
    if args.dry_run or (not runs_here and args.executor is None):
        if not runs_here:
            print(f"{args.preset} needs GPUs and the paper's data; its plan (edit a copy made "
                  f"with --write-spec, then run it with --executor slurm):")
        return runner.run_sweep(spec, executor=args.executor or "slurm" if not runs_here
                                else args.executor or "local", dry_run=True, results=args.results)
    executor = args.executor or "local"
    if executor != "slurm":
        check_disk(Path(args.results), NEEDS_DISK.get(args.preset if not args.spec else "", 0))
    if executor == "local" and args.max_parallel > 1:
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per job: no oversubscription
    t0, since, cpu0 = time.perf_counter(), now(), cost.process_tree_cpu_s()
    rc = runner.run_sweep(spec, executor=executor, max_parallel=args.max_parallel,
                          results=args.results,
                          log=ProgressLog(t0, Path(args.results), args.max_parallel))
    if not runner.WAITS[executor]:
        return rc
    loaded = runner.load_spec(spec)
    sweep_dir = Path(args.results) / loaded.name
    if loaded.branch is not None:
        rc = max(rc, run_branches(loaded, sweep_dir, executor, args.max_parallel,
                                  ProgressLog(time.perf_counter(), workers=args.max_parallel)))
    if loaded.robustness is not None:
        rc = max(rc, run_robustness(loaded, sweep_dir, args.max_parallel, print))
    from hnetbench.reports.report import build_report

    report = build_report(sweep_dir)
    print(f"report: {report.report_md}  "
          f"({(time.perf_counter() - t0) / 60:.1f} min)")
    if executor != "slurm":  # jobs are children: close the zygote so its CPU is counted too
        close_shared_zygote()
    print(cost.one_line(cost.record(sweep_dir, since, t0, cpu0 if executor != "slurm" else None))
          + f"  ({sweep_dir / 'cost.json'})")
    return rc


def branch_dirs(spec: SweepSpec, sweep_dir: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Create the cool-down branch directories of the sweep's finished runs that the spec's
    `branch:` section selects (by domain and seed); returns every branch directory."""
    from hnetbench.config import ConfigError, load_saved
    from hnetbench.sweeps.state import is_completed, read_json
    from hnetbench.train.branch import make_branch

    bs = spec.branch
    assert bs is not None
    plan = read_json(sweep_dir / "plan.json") or {}
    evals = to_dict(spec.eval)
    if not bs.tasks:
        evals = {"bpb": evals.get("bpb", True), "splits": evals.get("splits"), "tasks": [],
                 "robustness": False}
    out = []
    for row in plan.get("runs", []):
        rd = sweep_dir / row["run_id"]
        if row.get("domain") not in bs.domains or not (rd / "config.yaml").is_file():
            continue
        if load_saved(rd / "config.yaml").train.seed not in bs.seeds:
            continue
        if not is_completed(rd):
            log(f"skip branches of {row['run_id']} {row['label']}: run not completed")
            continue
        job = read_json(rd / "job.json") or {}
        for frac in bs.fractions:
            job_b = {**job, "label": f"{row['label']},cooldown={frac:g}", "eval": evals}
            try:
                out.append(make_branch(rd, frac, sweep_dir, job_b))
            except ConfigError as e:
                log(f"skip branch {frac:g} of {row['run_id']}: {e}")
    return out


def run_branches(spec: SweepSpec, sweep_dir: Path, executor: str, max_parallel: int,
                 log: Callable[[str], None]) -> int:
    """Phase 2 of a reproduce: train and evaluate the cool-down branches not yet completed."""
    from hnetbench.sweeps.executors import get_executor
    from hnetbench.sweeps.state import is_completed

    dirs = branch_dirs(spec, sweep_dir, log)
    todo = [d for d in dirs if not is_completed(d)]
    log(f"sweep {spec.name}/branches: {len(dirs)} runs, {len(todo)} to run")
    if not todo:
        return 0
    outcome = get_executor(executor)(spec, sweep_dir, todo, max_parallel, log)
    return 1 if any(state == "failed" for state in outcome.values()) else 0


def run_robustness(spec: SweepSpec, sweep_dir: Path, max_parallel: int,
                   log: Callable[[str], None]) -> int:
    """Phase 3, a catch-up: `hnetbench eval robustness` on the finished runs the spec's
    `robustness:` section selects whose eval.json has no robustness yet (their jobs run it; this
    covers runs that finished before, or whose robustness eval failed), `max_parallel` at a
    time."""
    import subprocess
    import sys

    from hnetbench.config import load_saved
    from hnetbench.sweeps.state import is_completed, read_json

    rs = spec.robustness
    assert rs is not None
    plan = read_json(sweep_dir / "plan.json") or {}
    cmds = []
    for row in plan.get("runs", []):
        rd = sweep_dir / row["run_id"]
        if row.get("domain") not in rs.domains or not is_completed(rd):
            continue
        cfg = load_saved(rd / "config.yaml")
        if cfg.train.seed not in rs.seeds or "robustness" in (read_json(rd / "eval.json") or {}):
            continue
        tasks = ",".join(t.replace("{domain}", cfg.data.domain) for t in rs.tasks)
        limit = ["--limit", str(rs.limit)] if rs.limit else []
        cmds.append((row["label"], [sys.executable, "-m", "hnetbench", "eval", "robustness",
                                    "--checkpoint", str(rd), "--tasks", tasks, *limit], rd))
    log(f"sweep {spec.name}/robustness: {len(cmds)} runs to evaluate")
    failed, running = 0, []
    while cmds or running:
        while cmds and len(running) < max(1, max_parallel):
            label, argv, rd = cmds.pop(0)
            f = open(rd / "robustness.log", "w", encoding="utf-8")  # noqa: SIM115 - closed below
            running.append((label, subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT), f))
        label, proc, f = running.pop(0)
        rc = proc.wait()
        f.close()
        failed += rc != 0
        log(f"robustness {'completed' if rc == 0 else f'failed (exit {rc})'} {label}")
    return 1 if failed else 0
