"""`hnetbench report results/<sweep> [--out DIR] [--formats md,tex,csv]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hnetbench.cli import CLIError

FORMATS = ("md", "tex", "csv")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sweep", help="sweep directory holding one directory per run (results/<sweep>)"
    )
    parser.add_argument(
        "--out", default=None, help="output directory (default: the sweep directory)"
    )
    parser.add_argument(
        "--formats",
        default="md,tex,csv",
        help="comma-separated table formats among md, tex, csv (default: all)",
    )


def parse_formats(text: str) -> tuple[str, ...]:
    fmts = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    bad = [f for f in fmts if f not in FORMATS]
    if bad or not fmts:
        raise CLIError(
            f"--formats: unknown format '{bad[0] if bad else text}' (expected some of md,tex,csv)"
        )
    return fmts


def main(args: argparse.Namespace) -> int:
    from hnetbench.reports.report import RUN_FILES, build_report

    sweep = Path(args.sweep)
    formats = parse_formats(args.formats)
    if not sweep.is_dir():
        raise CLIError(f"{sweep}: sweep directory not found")
    if not any(p.is_dir() and any((p / f).is_file() for f in RUN_FILES) for p in sweep.iterdir()):
        raise CLIError(
            f"{sweep}: no run directories (expected <run_id>/ holding {', '.join(RUN_FILES)})"
        )
    rep = build_report(
        sweep,
        args.out,
        formats,
        warn=lambda m: print(f"hnetbench report: warning: {m}", file=sys.stderr),
    )
    n_fig = sum(1 for paths in rep.figures.values() for p in paths if p.suffix == ".png")
    print(
        f"{rep.report_md}  ({len(rep.tables)} tables, {n_fig} figures, "
        f"{len(rep.warnings)} warnings)"
    )
    return 0
