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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hnetbench.config import atomic_write_text
from hnetbench.machine import cpu_model, machine_label
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


def _trained_on(runs: list[Run]) -> list[str]:
    """Report lines naming the machines the runs trained on (their summaries' `machine`), and a
    warning when their vector ISAs differ: float32 results then differ in the last bits."""
    known = [m for m in (r.summary.get("machine") for r in runs) if isinstance(m, dict)]
    labels = Counter(machine_label(m) for m in known)
    isas = {m.get("cpu_capability") for m in known}
    unknown = len(runs) - len(known)
    lines = [f"- runs trained on: {label} ({n} run{'s' * (n != 1)})"
             for label, n in sorted(labels.items())]
    if unknown and labels:
        lines.append(f"- {unknown} of the runs do not record their machine (older code)")
    if len(isas) > 1:
        lines.append("- the runs' CPUs ran torch's kernels for different vector ISAs ("
                     + ", ".join(sorted(map(str, isas))) + "): float32 training on one does not "
                     "repeat to the last digit on another (`machine.py`)")
    return lines


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
    evidence, pictures, flagged = build_evidence(runs, sweep, out, _warn)
    tables = {**evidence, **build_tables(runs)}
    written: dict[str, list[Path]] = {}
    for key, tab in tables.items():
        for ext in formats:
            p = out / "tables" / f"{key}.{ext}"
            text = {"md": tab.to_markdown, "tex": tab.to_latex, "csv": tab.to_csv}[ext]()
            atomic_write_text(p, text)
            written.setdefault(key, []).append(p)
    # a table an earlier build wrote (a rerun after a kill, runs since removed) but this one did
    # not is stale: the tables/ folder always says what report.md says
    for p in sorted((out / "tables").glob("*")) if (out / "tables").is_dir() else []:
        if p.is_file() and p.suffix.lstrip(".") in formats and p.stem not in tables:
            p.unlink(missing_ok=True)

    fig_paths = figs.save_all(runs, out / "figures")
    fits = figs.scaling_fits(runs)
    md = _report_markdown(sweep, out, runs, tables, written, fig_paths, fits, warnings,
                          Evidence(list(evidence), pictures, flagged))
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

These runs are laptop-sized: models of about 0.2-1.3M parameters trained on 0.5-2 MB of text
each (the paper: 0.7-1.6B parameters on about 100B tokens), tasks scored on up to 200 items.
BPB is far from the paper's 0.74-0.76, so absolute numbers are not comparable with the paper's;
what can be compared is the direction of a difference between matched models, and the claims
table above calls a difference one only when its 95% interval excludes zero. Single-seed
comparisons (zh, code, DNA) have no interval and stay "inconclusive" by construction; the
English top-budget runs have two seeds. Boundary claims likewise: a Wilson interval over one
model's boundaries leaves out training randomness (the two English seeds of one model can land
on opposite sides of chance), so they are decided only when every seed agrees. Use the
paper-scale presets on GPUs for the paper's numbers.
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
    evidence: Evidence | None = None,
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
        *_evidence_markdown(evidence, tables, written, rel),
        *_cpu_scale_caveats(runs),
        "## Machine (where this report was built)",
        "",
        f"- CPU: {m['cpu']} ({m['cores']} cores)",
        f"- torch {m['torch']}, Python {m['python']}",
        f"- platform: {m['platform']}",
        f"- date: {m['date']}",
        *_trained_on(runs),
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
        if evidence is not None and key in evidence.keys:
            continue  # shown above
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


# ----------------------------------------------------------------------------- evidence

EVIDENCE_KEYS = ("claims", "bpb", "scaling", "compute_match", "boundaries", "accuracy")
EVIDENCE_TEXT = {
    "claims": "Each row is derived from the tables below: *supported* when the 95% interval of "
              "the measured difference lies wholly on the claim's side of zero, *contradicted* "
              "when wholly on the other side, *inconclusive* otherwise (or with one seed).",
    "bpb": "Mean held-out BPB over seeds with its 95% t interval; cool-down branches "
           "(train/branch.py) are the smaller English budgets.",
    "scaling": "Power law fitted per model to final BPB at every data budget (full runs and "
               "WSD cool-down branches of the same run, Hägele et al. 2024); the exponent's "
               "interval is the fit's t interval. The figure `bpb_vs_flops` below draws the "
               "same points.",
    "compute_match": "Realised forward FLOPs per byte (from each run's summary) against its "
                     "group's reference run.",
    "boundaries": "Stage-0 chunk starts of each H-Net on held-out test text, every seed at "
                  "the top budget. Chance precision is the share of byte positions that are "
                  "targets (a boundary placed at random). A claim about boundaries is decided "
                  "only when every seed's interval lies on the same side of chance: one "
                  "model's interval does not cover training randomness.",
    "accuracy": "Per run; items = the eval's limit.",
}


@dataclass
class Evidence:
    keys: list[str]
    pictures: dict[str, list[Path]]
    flagged: list[str]  # runs outside the compute-match tolerance


# where other report sections plug in: name -> builder(runs) returning a Table or None.
# (The tokenizer table "tokenizer: bytes/token, BPB, accuracy" of the tokenizers work goes here.)
EXTRA_TABLES: dict[str, Any] = {}


def tokenizer_axis_table(runs: list[Run]) -> Table | None:
    """"tokenizer: bytes/token, BPB, accuracy" per domain, when the sweep varies the tokenizer."""
    kinds = {
        (str((r.config.get("data") or {}).get("tokenizer")),
         (r.config.get("data") or {}).get("bpe_vocab_size"))
        for r in runs if (r.config.get("data") or {}).get("tokenizer", "bytes") != "bytes"
    }
    if len(kinds) < 2:
        return None
    from hnetbench.evals.tokenizer_table import tokenizer_table

    df = tokenizer_table([r.path for r in runs], measure=False)
    table = Table("tokenizers", "Tokenizer axis: bytes/token, BPB, accuracy (ours)",
                  list(df.columns), fmt={"bytes_per_token": ".3f", "bytes_per_chunk": ".2f",
                                         "bpb": ".3f", "accuracy": ".3f", "acc_lo": ".3f",
                                         "acc_hi": ".3f",
                                         "reference_bytes_per_token": ".3f"})
    for rec in df.to_dict("records"):
        table.add(**{k: (None if isinstance(v, float) and v != v else v) for k, v in rec.items()})
    return table


EXTRA_TABLES["tokenizers"] = tokenizer_axis_table


def build_evidence(runs: list[Run], sweep: Path, out: Path,
                   warn: Warn) -> tuple[dict[str, Table], dict[str, list[Path]], list[str]]:
    """The evidence tables (claims first), boundary pictures and compute-match flags."""
    from hnetbench.reports import evidence as ev

    fits = ev.scaling_fits(runs)
    match = ev.compute_match_table(runs, ev.tolerance_of(sweep))
    bounds, pictures, align = ev.boundary_evidence(runs, out, warn)
    tables = {"claims": ev.claims_table(runs, fits, align), "bpb": ev.bpb_table(runs),
              "scaling": ev.scaling_table(fits), "compute_match": match,
              "boundaries": bounds, "accuracy": ev.accuracy_table(runs)}
    for key, builder in EXTRA_TABLES.items():
        tables[key] = builder(runs)
    return ({k: v for k, v in tables.items() if v is not None}, pictures,
            ev.outside_tolerance(match))


def _evidence_markdown(evidence: Evidence | None, tables: dict[str, Table],
                       written: dict[str, list[Path]], rel: Any) -> list[str]:
    if evidence is None:
        return []
    lines: list[str] = []
    for key in evidence.keys:
        tab = tables[key]
        links = " · ".join(f"[{p.suffix[1:]}]({rel(p)})" for p in written.get(key, []))
        lines += [f"## {tab.title}", "", EVIDENCE_TEXT.get(key, ""), "",
                  f"Files: {links}" if links else "", "", tab.to_markdown(), ""]
        if key == "compute_match":
            if evidence.flagged:
                lines += ["**Outside tolerance:** " + "; ".join(evidence.flagged), ""]
            else:
                lines += ["Every matched run is within tolerance of its reference.", ""]
        if key == "boundaries" and evidence.pictures:
            lines += ["Boundary pictures (first ~240 characters of the held-out sample; "
                      "every stage's chunks):", ""]
            for name, paths in sorted(evidence.pictures.items()):
                lines += [f"![boundaries {name}]({rel(paths[0])})", ""]
    return lines
