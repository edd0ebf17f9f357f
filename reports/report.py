"""Sweep report: tables (md, tex, csv), figures and report.md built from run directories alone.

Reading runs is `reports.runs`, the paper tables `reports.tables`, rendering `reports.render`,
the evidence (intervals, data-scaling fits, claims, boundary alignment, compute-match check)
`reports.evidence`; this module puts them together. Names of all of them are re-exported here.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hnetbench.config import atomic_write_text
from hnetbench.reports.render import Cell, Table, _si, _tex  # noqa: F401 - re-exported
from hnetbench.reports.runs import *  # noqa: F403 - re-exported
from hnetbench.reports.runs import RUN_FILES, Run, Warn, _num, load_sweep  # noqa: F401
from hnetbench.reports.tables import *  # noqa: F403 - re-exported
from hnetbench.reports.tables import (  # noqa: F401
    _pert_key,
    _robust_entries,
    build_tables,
)

# ----------------------------------------------------------------------------- the report


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, str]:
    cpu = cpu_model()
    try:
        from importlib.metadata import version

        torch_version = version("torch")
    except Exception:  # noqa: BLE001 - torch missing or unusual install
        torch_version = "not installed"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "torch": torch_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def varied_keys(runs: list[Run]) -> dict[str, list[str]]:
    """Config keys whose values differ between runs (the sweep's axes), flattened."""

    def flat(d: Any, prefix: str = "") -> dict[str, str]:
        if isinstance(d, dict):
            out: dict[str, str] = {}
            for k, v in d.items():
                out.update(flat(v, f"{prefix}{k}."))
            return out
        return {prefix[:-1]: json.dumps(d)}

    flats = [flat(r.config) for r in runs if r.config]
    keys = sorted({k for f in flats for k in f})
    varied = {k: sorted({f.get(k, "-") for f in flats}) for k in keys}
    varied = {k: v for k, v in varied.items() if len(v) > 1}
    if "preset" in varied:  # model.* and data.tokenizer follow from the preset
        varied = {k: v for k, v in varied.items() if not k.startswith("model.")}
    return varied


@dataclass
class Report:
    out_dir: Path
    report_md: Path
    tables: dict[str, Table]
    figures: dict[str, list[Path]]
    warnings: list[str]


def build_report(
    sweep_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    formats: tuple[str, ...] = ("md", "tex", "csv"),
    warn: Warn | None = None,
) -> Report:
    """Build every table, figure and report.md for the sweep in `sweep_dir`."""
    from hnetbench.reports import figures as figs  # matplotlib is only needed here

    sweep = Path(sweep_dir)
    out = Path(out_dir) if out_dir is not None else sweep
    warnings: list[str] = []

    def _warn(msg: str) -> None:
        warnings.append(msg)
        (warn or (lambda m: print(f"warning: {m}", file=sys.stderr)))(msg)

    runs = load_sweep(sweep, _warn)
    tables = build_tables(runs)
    written: dict[str, list[Path]] = {}
    for key, tab in tables.items():
        for ext in formats:
            p = out / "tables" / f"{key}.{ext}"
            text = {"md": tab.to_markdown, "tex": tab.to_latex, "csv": tab.to_csv}[ext]()
            atomic_write_text(p, text)
            written.setdefault(key, []).append(p)

    fig_paths = figs.save_all(runs, out / "figures")
    fits = figs.scaling_fits(runs)
    md = _report_markdown(sweep, out, runs, tables, written, fig_paths, fits, warnings)
    report_md = out / "report.md"
    atomic_write_text(report_md, md)
    return Report(out, report_md, tables, fig_paths, warnings)


FIGURE_TITLES = {
    "bpb_vs_bytes": "Validation BPB vs training bytes per domain and model (cf. paper Figure 3)",
    "bpb_vs_flops": "Final BPB vs training FLOPs with power-law fits",
    "bytes_per_chunk": "Bytes per chunk of each stage over training",
    "robustness": "Accuracy under each perturbation",
}


CPU_CAVEATS = """## What a CPU-scale run can and cannot say

These runs are laptop-sized: models of about 0.2-1.3M parameters, some 256 kB of training text
each (the paper: 0.7-1.6B parameters on about 100B tokens), and tasks scored on a few dozen items.
- They **can** show that the pipeline works end to end on every family: compute matching lands
  within tolerance of the reference's FLOPs per byte, training lowers the loss, dynamic chunking
  learns a compression ratio (bytes per chunk per stage), and every evaluation produces numbers.
- They **cannot** confirm or refute the paper's claims. There is one seed per model, so BPB
  differences between families are within run-to-run noise; routers are still settling; BPB is far
  from converged (about 3-4 bits per byte against the paper's 0.74-0.76), and task accuracies sit
  near chance with confidence intervals of about +-15 points at 32 items, so their differences
  (and robustness scores computed from them) are noise. Use the paper-scale presets on GPUs
  for claims.
"""


def _cpu_scale_caveats(runs: list[Run]) -> list[str]:
    """The honest-numbers section, for sweeps with runs at laptop (cpu-*) scales."""
    if not any(str(r.scale).startswith("cpu") for r in runs):
        return []
    return [*CPU_CAVEATS.splitlines(), ""]


def _report_markdown(
    sweep: Path,
    out: Path,
    runs: list[Run],
    tables: dict[str, Table],
    written: dict[str, list[Path]],
    fig_paths: dict[str, list[Path]],
    fits: list,
    warnings: list[str],
) -> str:
    def rel(p: Path) -> str:
        return os.path.relpath(p, out).replace(os.sep, "/")

    m = machine_info()
    lines = [
        f"# hnetbench report: {sweep.name}",
        "",
        f"Built from {len(runs)} run directories under `{sweep}` on {m['date']}. Rows labelled "
        "`paper` are the paper's published numbers (Hwang, Wang, Gu, arXiv 2507.07955, from "
        "`evals/paper_numbers.json`), never our measurements; `paper (L scale)` rows are reference "
        "rows for runs at scales the paper has no row for; blank cells in paper rows are "
        "numbers the paper does not report.",
        "",
        *_cpu_scale_caveats(runs),
        "## Machine (where this report was built)",
        "",
        f"- CPU: {m['cpu']} ({m['cores']} cores)",
        f"- torch {m['torch']}, Python {m['python']}",
        f"- platform: {m['platform']}",
        f"- date: {m['date']}",
        "",
        "## Sweep",
        "",
    ]
    specs = sorted(p for p in sweep.glob("*.y*ml") if p.is_file())
    for p in specs:
        lines += [
            f"Spec `{p.name}`:",
            "",
            "```yaml",
            p.read_text(encoding="utf-8", errors="replace").rstrip(),
            "```",
            "",
        ]
    if not specs:
        lines += ["No sweep spec file (`*.yaml`) in the sweep directory.", ""]
    axes = varied_keys(runs)
    if axes:
        lines += ["Config keys that differ between runs:", ""]
        lines += [f"- `{k}`: {', '.join(v)}" for k, v in axes.items()] + [""]
    lines += ["## Tables", ""]
    for key, tab in tables.items():
        links = " · ".join(f"[{p.suffix[1:]}]({rel(p)})" for p in written.get(key, []))
        lines += [
            f"### {tab.title}",
            "",
            f"Files: {links}" if links else "",
            "",
            tab.to_markdown(),
            "",
        ]
    missing = [
        f"Table {k[-1]}" for k in ("table2", "table3", "table4", "table5") if k not in tables
    ]
    if missing:
        lines += [f"Not built (no runs with data for them): {', '.join(sorted(missing))}.", ""]
    lines += ["## Figures", ""]
    for key, title in FIGURE_TITLES.items():
        paths = fig_paths.get(key)
        if not paths:
            lines += [f"- {title}: no data in these runs.", ""]
            continue
        png = [p for p in paths if p.suffix == ".png"]
        lines += [f"### {title}", "", " · ".join(f"[{p.suffix[1:]}]({rel(p)})" for p in paths), ""]
        lines += [f"![{title}]({rel(png[0])})", ""] if png else []
        if key == "bpb_vs_flops":
            if fits:
                lines += [
                    "Power-law fits (least squares in log10 space; families with >= 2 runs):",
                    "",
                ]
                lines += [
                    f"- {f.domain} / {f.family}: BPB = {f.a:.4g} * C^({f.b:.4f}) over {f.n} runs "
                    f"(R^2 = {f.r2:.3f})"
                    for f in fits
                ] + [""]
            else:
                lines += ["No power-law fit: no domain/family has runs at >= 2 FLOP budgets.", ""]
    pics = [
        (r, p)
        for r in runs
        for p in sorted((r.path / "boundaries").glob("*"))
        if p.suffix.lower() in (".png", ".svg", ".pdf", ".html", ".txt")
    ]
    lines += ["## Boundary pictures", ""]
    lines += [f"- {r.label}: [{p.name}]({rel(p)})" for r, p in pics] or [
        "No run has boundary pictures."
    ]
    lines += [""]
    if warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    return "\n".join(lines)
