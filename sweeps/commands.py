"""`hnetbench sweep run|status|cancel SPEC`."""

from __future__ import annotations

import argparse

from hnetbench.sweeps.executors import EXECUTORS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sweep_command", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="run (or resume) every unfinished run of a sweep spec")
    run.add_argument("spec", help="sweep spec YAML (see docs/SWEEPS.md)")
    run.add_argument("--executor", default="local", choices=sorted(EXECUTORS),
                     help="local: subprocess pool here; submitit-local; slurm: job array")
    run.add_argument("--max-parallel", type=int, default=0,
                     help="jobs at once (local executors: default 1); caps the Slurm array "
                          "parallelism (default: slurm.array_parallelism)")
    run.add_argument("--dry-run", action="store_true",
                     help="print the plan (runs, FLOPs/byte, bytes, time estimate) and exit")
    run.add_argument("--retry-failed", action="store_true", help="rerun runs that failed")
    run.add_argument("--check", action="store_true",
                     help="preflight: report (one line each) what would fail inside a job "
                          "(data not prepared or too small, tokenizer file, Slurm options); "
                          "exit 2 on any problem. Runs by itself before any Slurm submission")
    run.add_argument("--results", default="results", help="results root (default: results)")
    for name, text in (("status", "show the state of every run of a sweep"),
                       ("cancel", "cancel submitted jobs and mark unfinished runs cancelled")):
        p = sub.add_parser(name, help=text)
        p.add_argument("spec", help="sweep spec YAML")
        p.add_argument("--results", default="results", help="results root (default: results)")


def main(args: argparse.Namespace) -> int:
    from hnetbench.sweeps import runner

    if args.sweep_command == "run":
        return runner.run_sweep(args.spec, executor=args.executor, max_parallel=args.max_parallel,
                                dry_run=args.dry_run, retry_failed=args.retry_failed,
                                results=args.results, log=lambda s: print(s, flush=True),
                                check=args.check)
    if args.sweep_command == "status":
        runner.sweep_status(args.spec, results=args.results)
        return 0
    return runner.cancel_sweep(args.spec, results=args.results)
