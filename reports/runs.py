"""Reading a sweep's run directories for reports: one `Run` per directory, never raising.

Reads `results/<sweep>/<run_id>/{config.yaml, metrics.jsonl, summary.json, eval.json,
status.json, branch.json}` (docs/INTERFACES.md). A corrupt file is one warning line naming it,
and the report goes on without that piece. The paper's published numbers
(`evals/paper_numbers.json`) are looked up here too.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "eval.json", "status.json")
DOMAIN_ORDER = ("en", "zh", "code", "dna")
PAPER_FILE = Path(__file__).resolve().parent.parent / "evals" / "paper_numbers.json"
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

    def eval_key(self, section: str, domain: str) -> str | None:
        """The eval.json[section] key of `domain` shown in the report: "<domain>/<split>" of the
        configured split first, then test, val, then any split of the domain."""
        table = self.eval.get(section) if isinstance(self.eval.get(section), dict) else {}
        split = (self.config.get("eval") or {}).get("bpb_split", "val")
        for key in (f"{domain}/{split}", f"{domain}/test", f"{domain}/val"):
            if _num(table.get(key)) is not None:
                return key
        for key, v in sorted(table.items()):
            if key.split("/")[0] == domain and _num(v) is not None:
                return key
        return None

    def eval_value(self, section: str, domain: str) -> float | None:
        """eval.json[section][eval_key(section, domain)] as a float (None when absent)."""
        key = self.eval_key(section, domain)
        return None if key is None else float(self.eval[section][key])

    def bpb_interval(self, domain: str | None = None) -> dict | None:
        """eval.json's 95% interval over test documents for the BPB `bpb()` shows:
        {"bpb": [lo, hi], "n": documents, "method"}, or None (older runs, one document)."""
        key = self.eval_key("bpb", domain or self.domain)
        cis = self.eval.get("bpb_ci95")
        ci = cis.get(key) if isinstance(cis, dict) and key else None
        ok = isinstance(ci, dict) and isinstance(ci.get("bpb"), (list, tuple)) \
            and len(ci["bpb"]) == 2 and all(_num(x) is not None for x in ci["bpb"])
        return ci if ok else None

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



# public name for other report modules
read_mapping = _read_mapping
