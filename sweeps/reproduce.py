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
from pathlib import Path

from hnetbench.cli import CLIError

SPECS = Path(__file__).resolve().parent / "specs"
# preset -> (spec file, runs here?) ; paper-scale presets need GPUs and the paper's data
PRESETS: dict[str, tuple[str, bool]] = {
    "cpu": ("cpu.yaml", True),
    "paper-L": ("paper-L.yaml", False),
    "paper-XL": ("paper-XL.yaml", False),
    "chinese-code": ("chinese-code.yaml", False),
    "dna": ("dna.yaml", False),
}


class ProgressLog:
    """The sweep runner's log lines, plus runs finished / to run, elapsed time and an ETA."""

    def __init__(self, t0: float) -> None:
        self.t0, self.total, self.done = t0, 0, 0

    def __call__(self, line: str) -> None:
        m = re.match(r"sweep \S+: \d+ runs, (\d+) to run", line)
        if m:
            self.total = int(m.group(1))
        print(line, flush=True)
        if line.split(" ", 1)[0] in ("completed", "failed", "cancelled", "locked") and self.total:
            self.done += 1
            spent = time.perf_counter() - self.t0
            eta = spent / self.done * (self.total - self.done)
            print(f"[reproduce] {self.done}/{self.total} runs finished, {_mmss(spent)} elapsed, "
                  f"ETA {_mmss(eta)} (then the report)", flush=True)


def _mmss(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS),
                        help="which experiment (default: cpu, runs here in ~15 min)")
    parser.add_argument("--results", default="results", help="results root (default: results)")
    parser.add_argument("--executor", default=None,
                        help="local | submitit-local | slurm (default: local for cpu; paper "
                             "presets default to printing the plan)")
    parser.add_argument("--max-parallel", type=int, default=2,
                        help="runs at once with a local executor (default 2: one per core)")
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
    if executor == "local" and args.max_parallel > 1:
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per job: no oversubscription
    t0 = time.perf_counter()
    rc = runner.run_sweep(spec, executor=executor, max_parallel=args.max_parallel,
                          results=args.results, log=ProgressLog(t0))
    if not runner.WAITS[executor]:
        return rc
    from hnetbench.evals.report import build_report

    sweep_dir = Path(args.results) / runner.load_spec(spec).name
    report = build_report(sweep_dir)
    print(f"report: {report.report_md}  "
          f"({(time.perf_counter() - t0) / 60:.1f} min)")
    return rc
