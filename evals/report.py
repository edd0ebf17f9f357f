"""Sweep report: tables (md, tex, csv) and figures built from run directories alone.

Reads `results/<sweep>/<run_id>/{config.yaml, metrics.jsonl, summary.json, eval.json,
status.json}` (docs/INTERFACES.md). A missing piece is a blank cell with a footnote; a corrupt
file is one warning line naming it, and the report goes on without that piece. The paper's
published numbers (`paper_numbers.json`) are always in rows labelled "paper", never mixed in.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
import platform
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from hnetbench.config import atomic_write_text

RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "eval.json", "status.json")
DOMAIN_ORDER = ("en", "zh", "code", "dna")
PAPER_FILE = Path(__file__).with_name("paper_numbers.json")
MEASURED = "measured"

Warn = Callable[[str], None]


@lru_cache(maxsize=1)
def paper_numbers() -> dict:
    """The paper's published numbers (Tables 1-5), keyed by table / scale / family / metric."""
    return json.loads(PAPER_FILE.read_text(encoding="utf-8"))


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9+]", "", str(name).lower())


def canonical_family(name: str) -> str:
    """Map a family name (or alias) to the paper's family slug; unknown names pass through."""
    key = _norm(name)
    for slug, info in paper_numbers()["families"].items():
        if key == _norm(slug) or key in {_norm(a) for a in info["aliases"]}:
            return slug
    return name


def family_label(family: str) -> str:
    info = paper_numbers()["families"].get(family)
    return info["label"] if info else family


def paper_scale(scale: str) -> str | None:
    """`paper-L` / `L` -> "L"; scales the paper has no row for (cpu-*) -> None."""
    s = scale.lower().removeprefix("paper-").removeprefix("paper_")
    return {"l": "L", "xl": "XL", "dna": "DNA"}.get(s)


# ----------------------------------------------------------------------------- run loading


@dataclass
class Run:
    run_id: str
    path: Path
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    eval: dict = field(default_factory=dict)
    status: dict = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    family: str = "unknown"
    scale: str = "unknown"
    domain: str = "unknown"
    label: str = ""

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.run_id)

    @property
    def state(self) -> str:
        return str(self.status.get("state") or self.summary.get("status") or "unknown")

    def val_points(self) -> list[tuple[float, float, float | None]]:
        """(bytes_seen, val_bpb, flops_seen) of every validation line."""
        pts = []
        for m in self.metrics:
            if m.get("split") == "val" and _num(m.get("val_bpb")) is not None:
                if _num(m.get("bytes_seen")) is not None:
                    pts.append(
                        (float(m["bytes_seen"]), float(m["val_bpb"]), _num(m.get("flops_seen")))
                    )
        return pts

    def train_lines(self) -> list[dict]:
        return [m for m in self.metrics if m.get("split", "train") != "val"]

    def last_metric(self, key: str) -> float | None:
        for m in reversed(self.metrics):
            if _num(m.get(key)) is not None:
                return float(m[key])
        return None

    def summary_num(self, key: str) -> float | None:
        return _num(self.summary.get(key))

    @property
    def train_bytes(self) -> float | None:
        v = self.summary_num("bytes_seen")
        return v if v is not None else self.last_metric("bytes_seen")

    @property
    def train_flops(self) -> float | None:
        v = self.summary_num("flops_seen")
        return v if v is not None else self.last_metric("flops_seen")

    def eval_value(self, section: str, domain: str) -> float | None:
        """eval.json[section]["<domain>/<split>"]: the configured split first, then test, val."""
        table = self.eval.get(section) if isinstance(self.eval.get(section), dict) else {}
        split = (self.config.get("eval") or {}).get("bpb_split", "val")
        for key in (f"{domain}/{split}", f"{domain}/test", f"{domain}/val"):
            if _num(table.get(key)) is not None:
                return float(table[key])
        for key, v in sorted(table.items()):
            if key.split("/")[0] == domain and _num(v) is not None:
                return float(v)
        return None

    def bpb(self, domain: str | None = None) -> tuple[float | None, str | None]:
        """Held-out BPB of `domain` (default: the run's): eval.json, else the trainer's last
        validation value. Returns (value, note saying where a fallback came from)."""
        domain = domain or self.domain
        v = self.eval_value("bpb", domain)
        if v is not None:
            return v, None
        if domain != self.domain:
            return None, None
        v = self.summary_num("final_val_bpb")
        if v is None and self.val_points():
            v = self.val_points()[-1][1]
        if v is not None:
            return v, "no eval.json BPB: the trainer's final validation BPB is shown"
        return None, None

    def bytes_per_innermost_chunk(self) -> tuple[float | None, str | None]:
        """Bytes per chunk of the last stage (cumulative over stages, the paper's BPIC)."""
        bpc = self.eval.get("bytes_per_chunk")
        if isinstance(bpc, dict):
            stages = sorted(
                (int(k[5:]), v)
                for k, v in bpc.items()
                if re.fullmatch(r"stage\d+", k) and _num(v) is not None
            )
            if stages:
                return float(stages[-1][1]), None
        keys = sorted(
            {k for m in self.metrics for k in m if re.fullmatch(r"stage\d+/bytes_per_chunk", k)},
            key=lambda k: int(k[5:].split("/")[0]),
        )
        if keys:
            v = self.last_metric(keys[-1])
            return v, "no eval.json bytes_per_chunk: the last training value is shown"
        model = self.config.get("model") or {}
        tok = (self.config.get("data") or {}).get("tokenizer", "bytes")
        if model.get("arch") == "isotropic" and tok == "bytes":
            return 1.0, None  # a byte-level isotropic model has one byte per position
        return None, None

    def main_layout(self) -> str | None:
        """Layout of the innermost (main) network, e.g. "T2" of ["m2", ["T2"], "m2"]."""
        layout = (self.config.get("model") or {}).get("layout")
        while isinstance(layout, list) and layout:
            layout = layout[len(layout) // 2] if len(layout) > 1 else layout[0]
        return str(layout) if layout else None


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return None if math.isnan(float(v)) else float(v)


def _read_mapping(path: Path, warn: Warn, kind: str) -> dict:
    """A JSON object or YAML mapping from `path`; {} (with one warning line) when unreadable."""
    if not path.is_file():
        return {}
    parse = json.loads if kind == "JSON" else yaml.safe_load
    try:
        data = parse(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as e:
        warn(f"{path}: corrupt {kind} ({e.__class__.__name__}); skipped")
        return {}
    if not isinstance(data, dict):
        expected = "a JSON object" if kind == "JSON" else "a mapping"
        warn(f"{path}: expected {expected}, got {type(data).__name__}; skipped")
        return {}
    return data


def _read_json(path: Path, warn: Warn) -> dict:
    return _read_mapping(path, warn, "JSON")


def _read_yaml(path: Path, warn: Warn) -> dict:
    return _read_mapping(path, warn, "YAML")


def _read_jsonl(path: Path, warn: Warn) -> list[dict]:
    if not path.is_file():
        return []
    rows, bad = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        warn(f"{path}: not UTF-8 text; skipped")
        return []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            bad.append(i)
            continue
        if isinstance(obj, dict):
            rows.append(obj)
        else:
            bad.append(i)
    if bad:
        warn(f"{path}: {len(bad)} corrupt line(s) (first: line {bad[0]}); skipped them")
    return rows


def load_run(path: Path, warn: Warn) -> Run:
    run = Run(run_id=path.name, path=path)
    run.config = _read_yaml(path / "config.yaml", warn)
    run.summary = _read_json(path / "summary.json", warn)
    run.eval = _read_json(path / "eval.json", warn)
    run.status = _read_json(path / "status.json", warn)
    run.metrics = _read_jsonl(path / "metrics.jsonl", warn)
    preset = str(run.config.get("preset") or "")
    fam, _, scale = preset.partition("@")
    run.family = canonical_family(fam or str(run.summary.get("family") or "unknown"))
    run.scale = scale or "unknown"
    data = run.config.get("data") or {}
    run.domain = str(data.get("domain") or run.summary.get("domain") or "unknown")
    return run


def load_sweep(sweep_dir: str | os.PathLike, warn: Warn) -> list[Run]:
    """Every run directory (one holding any of RUN_FILES) under `sweep_dir`, in a stable order."""
    root = Path(sweep_dir)
    runs = [
        load_run(p, warn)
        for p in sorted(root.iterdir())
        if p.is_dir() and any((p / f).is_file() for f in RUN_FILES)
    ]
    fam_order = list(paper_numbers()["families"])

    def order(r: Run) -> tuple:
        dom = DOMAIN_ORDER.index(r.domain) if r.domain in DOMAIN_ORDER else len(DOMAIN_ORDER)
        fam = fam_order.index(r.family) if r.family in fam_order else len(fam_order)
        return (dom, fam, r.family, r.scale, r.train_bytes or 0.0, r.run_id)

    runs.sort(key=order)
    base = {
        r.run_id: f"{r.family}@{r.scale}"
        + ("" if r.domain in ("en", "unknown") else f" [{r.domain}]")
        for r in runs
    }
    for r in runs:  # disambiguate runs sharing family, scale and domain
        twins = [o for o in runs if base[o.run_id] == base[r.run_id]]
        r.label = base[r.run_id] + ("" if len(twins) == 1 else f" ({_twin_suffix(r, twins)})")
    return runs


def _twin_suffix(r: Run, twins: list[Run]) -> str:
    """What tells `r` apart from its twins: the parts of the sweep's run names ("domain=en,
    hnet-1stage@cpu-tiny,steps=3") that differ between them, else the name, else the run id."""
    parts = {o.run_id: o.name.split(",") for o in twins}
    common = set.intersection(*(set(p) for p in parts.values()))
    diff = {k: ",".join(x for x in p if x not in common) for k, p in parts.items()}
    if all(diff.values()) and len(set(diff.values())) == len(twins):
        return diff[r.run_id]
    return r.name if len({o.name for o in twins}) == len(twins) else r.run_id[:8]


# ----------------------------------------------------------------------------- tables


@dataclass
class Cell:
    value: Any
    notes: tuple[int, ...] = ()


@dataclass
class Table:
    """A table with typed columns; `fmt` maps a column to a format spec (or "si")."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    fmt: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> int:
        if text not in self.notes:
            self.notes.append(text)
        return self.notes.index(text) + 1

    def add(self, **cells: Any) -> None:
        unknown = set(cells) - set(self.columns)
        assert not unknown, unknown
        self.rows.append([cells.get(c) for c in self.columns])

    def value(self, row: int, col: str) -> Any:
        c = self.rows[row][self.columns.index(col)]
        return c.value if isinstance(c, Cell) else c

    def find(self, **match: Any) -> list[int]:
        return [
            i for i in range(len(self.rows)) if all(self.value(i, k) == v for k, v in match.items())
        ]

    # -- rendering

    def _text(self, col: str, cell: Any, marker: Callable[[tuple[int, ...]], str]) -> str:
        val, notes = (cell.value, cell.notes) if isinstance(cell, Cell) else (cell, ())
        if val is None:
            text = ""
        elif isinstance(val, float):
            spec = self.fmt.get(col, ".4g")
            text = _si(val) if spec == "si" else format(val, spec)
        else:
            text = str(val)
        return text + (marker(notes) if notes else "")

    def to_markdown(self) -> str:
        def esc(s: str) -> str:
            return s.replace("|", "\\|")

        out = [
            f"**{esc(self.title)}**",
            "",
            "| " + " | ".join(map(esc, self.columns)) + " |",
            "|" + "|".join("---" for _ in self.columns) + "|",
        ]
        for row in self.rows:
            cells = [
                esc(self._text(c, v, lambda n: " [" + ",".join(map(str, n)) + "]"))
                for c, v in zip(self.columns, row)
            ]
            out.append("| " + " | ".join(cells) + " |")
        if self.notes:
            out.append("")
            out += [f"[{i}] {esc(t)}  " for i, t in enumerate(self.notes, 1)]
        return "\n".join(out) + "\n"

    def to_latex(self) -> str:
        align = "".join("r" if i and self._numeric(c) else "l" for i, c in enumerate(self.columns))
        out = [
            r"\begin{table}[t]",
            r"\centering",
            r"\small",
            rf"\caption{{{_tex(self.title)}}}",
            rf"\begin{{tabular}}{{{align}}}",
            r"\toprule",
            " & ".join(_tex(c) for c in self.columns) + r" \\",
            r"\midrule",
        ]
        for row in self.rows:
            out.append(" & ".join(self._tex_cell(c, v) for c, v in zip(self.columns, row)) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}"]
        if self.notes:
            out.append(r"\par\footnotesize")
            out += [rf"$^{{{i}}}$ {_tex(t)}\\" for i, t in enumerate(self.notes, 1)]
        out.append(r"\end{table}")
        return "\n".join(out) + "\n"

    def _tex_cell(self, col: str, cell: Any) -> str:
        plain = Cell(cell.value) if isinstance(cell, Cell) else cell
        text = _tex(self._text(col, plain, lambda n: ""))
        notes = cell.notes if isinstance(cell, Cell) else ()
        return text + (rf"$^{{{','.join(map(str, notes))}}}$" if notes else "")

    def _numeric(self, col: str) -> bool:
        vals = [r[self.columns.index(col)] for r in self.rows]
        vals = [v.value if isinstance(v, Cell) else v for v in vals]
        return any(isinstance(v, float) for v in vals)

    def to_csv(self) -> str:
        """Full-precision values; footnotes go to a trailing `notes` column."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns + ["notes"])
        for row in self.rows:
            vals, notes = [], []
            for cell in row:
                v, n = (cell.value, cell.notes) if isinstance(cell, Cell) else (cell, ())
                vals.append("" if v is None else repr(v) if isinstance(v, float) else v)
                notes += [self.notes[i - 1] for i in n if self.notes[i - 1] not in notes]
            w.writerow(vals + ["; ".join(notes)])
        return buf.getvalue()


def _tex(s: str) -> str:
    """Escape LaTeX specials (backslash first, via a placeholder, so braces stay escaped)."""
    s = (
        s.replace("\\", "\0")
        .replace("{", r"\{")
        .replace("}", r"\}")
        .replace("\0", r"\textbackslash{}")
    )
    for a, b in (
        ("&", r"\&"),
        ("%", r"\%"),
        ("$", r"\$"),
        ("#", r"\#"),
        ("_", r"\_"),
        ("~", r"\~{}"),
        ("^", r"\^{}"),
    ):
        s = s.replace(a, b)
    return s


def _si(v: float) -> str:
    for div, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def _blank(t: Table, why: str) -> Cell:
    return Cell(None, (t.note(why),))


def _val(t: Table, value: float | None, why_missing: str, note: str | None = None) -> Cell:
    """A measured value, or a blank cell whose footnote says why it is missing."""
    if value is None:
        return _blank(t, why_missing)
    return Cell(value, (t.note(note),) if note else ())


def _state_note(t: Table, run: Run) -> tuple[int, ...]:
    if run.state in ("completed", "unknown"):
        return ()
    return (t.note(f"run not completed (state: {run.state}); its numbers are partial"),)


def _pct(v: Any) -> float | None:
    v = _num(v)
    return None if v is None else 100.0 * v


# -- task metrics: lm-eval keys may carry a filter suffix ("acc,none")


def _metrics(d: Any) -> dict[str, float]:
    if not isinstance(d, dict):
        return {}
    out = {}
    for k, v in d.items():
        name = str(k).split(",")[0]
        if "stderr" not in name and _num(v) is not None:
            out.setdefault(name, float(v))
    return out


def paper_task(task: str) -> str | None:
    """Our task name -> the paper's Table 2 task key (e.g. "hellaswag_local" -> "hellaswag")."""
    n = _norm(task)
    aliases = {
        "lambada": ["lambada"],
        "hellaswag": ["hellaswag"],
        "piqa": ["piqa"],
        "arc_easy": ["arceasy", "arce"],
        "arc_challenge": ["arcchallenge", "arcc"],
        "winogrande": ["winogrande"],
        "openbookqa": ["openbookqa", "obqa"],
    }
    for key, names in aliases.items():
        if any(a in n for a in names):
            return key
    return None


def _is_zh_task(task: str) -> bool:
    return "xwinograd" in task.lower() or bool(re.search(r"(^|[_\-.])zh($|[_\-.])", task.lower()))


def _pick_metric(task: str, runs: list[Run]) -> str | None:
    have: set[str] = set()
    for r in runs:
        have |= set(_metrics((r.eval.get("tasks") or {}).get(task)))
    pk = paper_task(task)
    prefs = ([paper_numbers()["table2"]["task_metrics"][pk]] if pk else []) + [
        "acc_norm",
        "acc",
        "acc_bytes",
        "exact_match",
    ]
    for m in prefs:
        if m in have:
            return m
    return sorted(have)[0] if have else None


def _is_pct(metric: str) -> bool:
    return metric.startswith("acc") or metric == "exact_match"


def _task_columns(runs: list[Run], keep: Callable[[str], bool]) -> list[tuple[str, str, str]]:
    """(task, metric, column header) for every task the runs evaluated, paper order first."""
    tasks = sorted({t for r in runs for t in (r.eval.get("tasks") or {}) if keep(t)})
    order = list(paper_numbers()["table2"]["task_metrics"])
    tasks.sort(key=lambda t: (order.index(paper_task(t)) if paper_task(t) else len(order), t))
    cols = []
    for t in tasks:
        m = _pick_metric(t, runs)
        if m:
            cols.append((t, m, f"{t} {m}" + (" (%)" if _is_pct(m) else "")))
    return cols


def _task_fmt(tcols: list[tuple[str, str, str]]) -> dict[str, str]:
    return {c: ".1f" if _is_pct(m) else ".4g" for _, m, c in tcols}


def _task_cells(t: Table, r: Run, tcols: list[tuple[str, str, str]]) -> dict[str, Cell]:
    """The run's value for each task column (accuracies in percent), blank + footnote if absent."""
    cells = {}
    for task, metric, col in tcols:
        v = _metrics((r.eval.get("tasks") or {}).get(task)).get(metric)
        v = v * 100.0 if v is not None and _is_pct(metric) else v
        cells[col] = _val(t, v, "task not evaluated for this run")
    return cells


def table2(runs: list[Run]) -> Table | None:
    """Paper Table 2: GFLOPs/byte, BPB and zero-shot accuracies of the language-model runs."""
    runs = [r for r in runs if r.domain not in ("zh", "code", "dna")]
    if not runs:
        return None
    paper = paper_numbers()["table2"]
    tcols = _task_columns(runs, lambda t: not _is_zh_task(t))
    pct_cols = [c for t, m, c in tcols if _is_pct(m)]
    cols = ["source", "model", "scale", "run", "train bytes", "GFLOPs/byte", "BPB"] + [
        c for _, _, c in tcols
    ]
    cols += ["Avg (%)"] if pct_cols else []
    t = Table(
        "table2",
        "Table 2: bits per byte and zero-shot accuracy (cf. paper Table 2)",
        cols,
        fmt={
            "train bytes": "si",
            "GFLOPs/byte": ".3g",
            "BPB": ".3f",
            **{c: ".1f" for c in pct_cols},
            "Avg (%)": ".1f",
        },
    )

    def paper_row(source: str, scale: str, fam: str) -> None:
        p = paper["rows"][scale][fam]
        cells: dict[str, Any] = {
            "source": source,
            "model": family_label(fam),
            "scale": scale,
            "GFLOPs/byte": p["gflops_per_byte"],
            "BPB": p["bpb"],
        }
        for task, metric, col in tcols:
            pk = paper_task(task)
            cells[col] = (
                p[pk]
                if pk and metric == paper["task_metrics"][pk]
                else _blank(t, "the paper reports no number for this task/metric")
            )
        if pct_cols:
            vals = [cells[c] for c in pct_cols if isinstance(cells[c], float)]
            if len(vals) == len(pct_cols) == len(paper["task_metrics"]):
                cells["Avg (%)"] = p["avg"]
            elif len(vals) == len(pct_cols):
                cells["Avg (%)"] = Cell(
                    sum(vals) / len(vals),
                    (t.note("paper rows: Avg recomputed from the paper's numbers, shown tasks"),),
                )
        t.add(**cells)

    ref: list[str] = []
    for r in runs:
        bpb, bpb_note = r.bpb()
        fpb = r.summary_num("flops_per_byte")
        cells = {
            "source": Cell(MEASURED, _state_note(t, r)),
            "model": family_label(r.family),
            "scale": r.scale,
            "run": r.name,
            "train bytes": r.train_bytes,
            "GFLOPs/byte": _val(
                t, None if fpb is None else fpb / 1e9, "no summary.json flops_per_byte"
            ),
            "BPB": _val(t, bpb, "no BPB in eval.json or summary.json", bpb_note),
        }
        cells.update(_task_cells(t, r, tcols))
        acc = [cells[c].value for c in pct_cols if cells[c].value is not None]
        if pct_cols:
            cells["Avg (%)"] = (
                sum(acc) / len(acc)
                if len(acc) == len(pct_cols)
                else _blank(t, "Avg needs every task column")
            )
        t.add(**cells)
        ps = paper_scale(r.scale)
        if ps and r.family in paper["rows"].get(ps, {}):
            paper_row("paper", ps, r.family)
        elif r.family in paper["rows"]["L"] and r.family not in ref:
            ref.append(r.family)
    for fam in ref:
        paper_row("paper (L scale)", "L", fam)
    return t


def _robust_entries(runs: list[Run]) -> list[tuple[Run, str, dict]]:
    out = []
    for r in runs:
        rob = r.eval.get("robustness")
        if isinstance(rob, dict):
            for task, d in sorted(rob.items()):
                if isinstance(d, dict):
                    out.append((r, task, d))
    return out


def _pert_key(name: str) -> str:
    return _norm(name).replace("+", "")


def perturbation_columns(entries: list[tuple[Run, str, dict]]) -> list[tuple[str, str]]:
    """(raw key, display label) of every perturbation, paper order first."""
    paper = paper_numbers()["table3"]["perturbations"]
    labels = {
        "antspeak": "AntSpeak",
        "drop": "Drop",
        "randomcase": "RandomCase",
        "repeat": "Repeat",
        "uppercase": "UpperCase",
    }
    seen: dict[str, str] = {}
    for _, _, d in entries:
        for k in d:
            if (
                k not in ("clean", "score", "avg", "chance")
                and _pert_key(k) not in seen
                and _num(d[k]) is not None
            ):
                seen[_pert_key(k)] = labels.get(_pert_key(k), k)
    return sorted(
        seen.items(), key=lambda kv: (paper.index(kv[0]) if kv[0] in paper else len(paper), kv[0])
    )


def table3(runs: list[Run]) -> Table | None:
    """Paper Table 3: accuracy under perturbations, their average and the robustness score."""
    entries = _robust_entries(runs)
    if not entries:
        return None
    paper = paper_numbers()["table3"]
    perts = perturbation_columns(entries)
    cols = ["source", "model", "scale", "run", "task", "clean (%)"] + [
        f"{lab} (%)" for _, lab in perts
    ]
    cols += ["Avg (%)", "Score"]
    t = Table(
        "table3",
        "Table 3: robustness to perturbations (cf. paper Table 3)",
        cols,
        fmt={c: ".1f" for c in cols[5:]},
    )
    ref: list[str] = []

    def paper_row(source: str, scale: str, fam: str) -> None:
        p = paper["rows"][scale][fam]
        cells: dict[str, Any] = {
            "source": source,
            "model": family_label(fam),
            "scale": scale,
            "task": paper["task"],
            "Score": p["score"],
        }
        clean = paper_numbers()["table2"]["rows"].get(scale, {}).get(fam, {}).get("hellaswag")
        cells["clean (%)"] = (
            Cell(clean, (t.note("paper rows: clean = the paper's Table 2 HellaSwag"),))
            if clean is not None
            else None
        )
        vals = []
        for key, lab in perts:
            cells[f"{lab} (%)"] = (
                p.get(key) if key in p else _blank(t, "the paper has no such perturbation")
            )
            if key in p:
                vals.append(p[key])
        if [k for k, _ in perts] == paper["perturbations"]:
            cells["Avg (%)"] = p["avg"]
        elif vals and len(vals) == len(perts):
            cells["Avg (%)"] = Cell(
                sum(vals) / len(vals),
                (t.note("paper rows: Avg recomputed from the paper's numbers, shown columns"),),
            )
        t.add(**cells)

    lm_runs = {r.run_id for r in runs if r.domain not in ("zh", "code", "dna")}
    for r in runs:
        mine = [(task, d) for rr, task, d in entries if rr is r]
        if not mine and r.run_id in lm_runs:  # a language-model run without robustness
            t.add(
                source=Cell(MEASURED, _state_note(t, r)),
                model=family_label(r.family),
                scale=r.scale,
                run=r.name,
                **{"clean (%)": _blank(t, "no robustness results in eval.json")},
            )
        for task, d in mine:
            _table3_row(t, r, task, d, perts)
        ps = paper_scale(r.scale)
        if mine and ps and r.family in paper["rows"].get(ps, {}):
            paper_row("paper", ps, r.family)
        elif (
            r.family in paper["rows"]["L"] and r.family not in ref and (mine or r.run_id in lm_runs)
        ):
            ref.append(r.family)
    for fam in ref:
        paper_row("paper (L scale)", "L", fam)
    return t if t.rows else None


def _table3_row(t: Table, r: Run, task: str, d: dict, perts: list[tuple[str, str]]) -> None:
    by_key = {_pert_key(k): _num(v) for k, v in d.items()}
    cells = {
        "source": Cell(MEASURED, _state_note(t, r)),
        "model": family_label(r.family),
        "scale": r.scale,
        "run": r.name,
        "task": task,
        "clean (%)": _val(t, _pct(d.get("clean")), "no clean accuracy recorded"),
    }
    vals = []
    for key, lab in perts:
        v = by_key.get(key)
        cells[f"{lab} (%)"] = _val(
            t, None if v is None else 100.0 * v, "perturbation not evaluated"
        )
        if v is not None:
            vals.append(100.0 * v)
    cells["Avg (%)"] = (
        sum(vals) / len(vals)
        if vals and len(vals) == len(perts)
        else _blank(t, "Avg needs every perturbation column")
    )
    score = _num(d.get("score"))
    cells["Score"] = _val(
        t, score, "score undefined (clean accuracy at or below chance) or not recorded"
    )
    t.add(**cells)


def table4(runs: list[Run]) -> Table | None:
    """Paper Table 4: Chinese and code: bytes per innermost chunk, main network, BPB, tasks."""
    runs = [r for r in runs if r.domain in ("zh", "code")]
    if not runs:
        return None
    paper = paper_numbers()["table4"]
    zh_tasks = _task_columns(runs, lambda task: True)
    cols = ["source", "model", "scale", "run", "domain", "BPIC", "main", "BPB"] + [
        c for _, _, c in zh_tasks
    ]
    t = Table(
        "table4",
        "Table 4: Chinese and code (cf. paper Table 4; BPIC = bytes per innermost chunk)",
        cols,
        fmt={"BPIC": ".2f", "BPB": ".4f", **_task_fmt(zh_tasks)},
    )

    def paper_row(source: str, fam: str, domain: str) -> None:
        p = paper["rows"][paper["scale"]][fam][domain]
        cells: dict[str, Any] = {
            "source": source,
            "model": family_label(fam),
            "scale": paper["scale"],
            "domain": domain,
            "BPIC": p["bpic"],
            "main": p["main"],
            "BPB": p["bpb"],
        }
        for task, _, col in zh_tasks:
            if domain == "zh" and "xwinograd" in task.lower():
                cells[col] = Cell(p["xwinograd_zh"], (t.note("paper: XWinograd-zh accuracy"),))
        t.add(**cells)

    ref: list[tuple[str, str]] = []
    for r in runs:
        bpic, bpic_note = r.bytes_per_innermost_chunk()
        bpb, bpb_note = r.bpb()
        cells = {
            "source": Cell(MEASURED, _state_note(t, r)),
            "model": family_label(r.family),
            "scale": r.scale,
            "run": r.name,
            "domain": r.domain,
            "BPIC": _val(t, bpic, "no bytes_per_chunk in eval.json or metrics.jsonl", bpic_note),
            "main": r.main_layout(),
            "BPB": _val(t, bpb, "no BPB in eval.json or summary.json", bpb_note),
        }
        cells.update(_task_cells(t, r, zh_tasks))
        t.add(**cells)
        if r.family in paper["rows"][paper["scale"]]:
            if paper_scale(r.scale) == paper["scale"]:
                paper_row("paper", r.family, r.domain)
            elif (r.family, r.domain) not in ref:
                ref.append((r.family, r.domain))
    for fam, dom in ref:
        paper_row(f"paper ({paper['scale']}-like)", fam, dom)
    return t


def table5(runs: list[Run]) -> Table | None:
    """Paper Table 5: DNA perplexity (per base pair = 2 ** BPB, one byte per base)."""
    runs = [r for r in runs if r.domain == "dna"]
    if not runs:
        return None
    paper = paper_numbers()["table5"]
    tcols = _task_columns(runs, lambda task: True)
    t = Table(
        "table5",
        "Table 5: DNA perplexity (cf. paper Table 5)",
        ["source", "model", "scale", "run", "main", "params", "BPB", "ppl"]
        + [c for _, _, c in tcols],
        fmt={"params": "si", "BPB": ".4f", "ppl": ".3f", **_task_fmt(tcols)},
    )
    ppl_note = "ppl = 2 ** BPB (one byte per base pair)"
    shown: list[str] = []

    def paper_rows(r: Run) -> list[str]:
        rows = [k for k, p in paper["rows"]["DNA"].items() if p["family"] == r.family]
        main = (r.main_layout() or "")[:1]
        narrowed = [k for k in rows if paper["rows"]["DNA"][k]["main"][:1] == main]
        return narrowed or rows

    def add_paper_row(k: str, source: str) -> None:
        p = paper["rows"]["DNA"][k]
        t.add(source=source, model=k, scale="DNA", main=p["main"], params=p["params"],
              ppl=p["ppl"])

    beside: list[str] = []
    for r in runs:
        bpb, note = r.bpb()
        # eval.json's ppl_per_bp (from nats) when the evaluator wrote it, else from the BPB shown
        ppl = r.eval_value("ppl_per_bp", r.domain)
        if ppl is None or note is not None:
            ppl = None if bpb is None else 2.0**bpb
            ppl = _val(t, ppl, "no BPB to compute ppl from", ppl_note)
        t.add(
            source=Cell(MEASURED, _state_note(t, r)),
            model=family_label(r.family),
            scale=r.scale,
            run=r.name,
            main=r.main_layout(),
            params=_val(t, r.summary_num("params"), "no summary.json params"),
            BPB=_val(t, bpb, "no BPB in eval.json or summary.json", note),
            ppl=ppl,
            **_task_cells(t, r, tcols),
        )
        keys = paper_rows(r)
        if paper_scale(r.scale) == "DNA":
            for k in keys:
                add_paper_row(k, "paper")
                beside.append(k)
        shown += [k for k in keys if k not in shown]
    for k in shown:
        if k not in beside:
            add_paper_row(k, "paper (HG38)")
    return t


def runs_table(runs: list[Run]) -> Table:
    t = Table(
        "runs",
        "Runs of the sweep",
        [
            "run id",
            "label",
            "family",
            "scale",
            "domain",
            "state",
            "steps",
            "train bytes",
            "train FLOPs",
            "params",
            "FLOPs/byte",
            "final val BPB",
            "wall (s)",
            "CPU (s)",
            "load at start",
        ],
        fmt={
            "steps": ".0f",
            "train bytes": "si",
            "train FLOPs": "si",
            "params": "si",
            "FLOPs/byte": "si",
            "final val BPB": ".4f",
            "wall (s)": ".0f",
            "CPU (s)": ".0f",
            "load at start": ".1f",
        },
    )
    for r in runs:
        state = r.state
        if r.status.get("error"):
            state = Cell(
                state, (t.note(f"{r.run_id}: {str(r.status['error']).splitlines()[0][:200]}"),)
            )
        t.add(
            **{
                "run id": r.run_id,
                "label": r.label,
                "family": r.family,
                "scale": r.scale,
                "domain": r.domain,
                "state": state,
                "steps": r.summary_num("steps"),
                "train bytes": r.train_bytes,
                "train FLOPs": r.train_flops,
                "params": r.summary_num("params"),
                "FLOPs/byte": r.summary_num("flops_per_byte"),
                "final val BPB": r.summary_num("final_val_bpb"),
                "wall (s)": r.summary_num("wall_s"),
                "CPU (s)": r.summary_num("cpu_s"),  # wall under load says little alone
                "load at start": (r.summary.get("loadavg_start") or [None])[0],
            }
        )
    return t


def build_tables(runs: list[Run]) -> dict[str, Table]:
    tables = {"runs": runs_table(runs)}
    for fn in (table2, table3, table4, table5):
        tab = fn(runs)
        if tab is not None:
            tables[tab.key] = tab
    return tables


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
    from hnetbench.evals import figures as figs  # matplotlib is only needed here

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
