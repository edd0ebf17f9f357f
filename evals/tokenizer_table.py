"""The report's tokenizer table: per domain, each tokenizer's bytes/token, BPB and accuracy.

`tokenizer_table(runs)` takes run directories (or records: mappings with `config`, `eval`,
optional `summary` and `match`) and returns one row per run: the tokenizer a Transformer read
(its bytes per token on the training split, from summary.json, or measured on the domain's
validation split for older runs when `measure` is on), and for byte-level models the
tokenizer of the reference they were compute-matched to (from the sweep's plan.json). Standalone
so that the report can hook it in wherever its tables live.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

COLUMNS = ["domain", "tokenizer", "model", "vocab_size", "bytes_per_token", "bytes_per_chunk",
           "bpb", "accuracy", "acc_lo", "acc_hi", "n_items", "task", "matched_to",
           "reference_bytes_per_token", "run"]
ACC_METRICS = ("acc_norm", "acc", "acc_bytes", "exact_match")
DOMAIN_ORDER = ("en", "zh", "code", "dna")


def _read(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _plan_matches(run_dir: Path) -> dict[str, dict]:
    """run id -> its plan.json match entry (the sweep directory above the run)."""
    plan = _read(run_dir.parent / "plan.json")
    return {r.get("run_id"): (r.get("match") or {}) for r in plan.get("runs", [])
            if isinstance(r, dict)}


def _record(run: str | Path | Mapping) -> dict:
    if isinstance(run, Mapping):
        return {"run": str(run.get("run_id") or run.get("name") or ""), **run}
    p = Path(run)
    rec = {
        "run": p.name,
        "config": _read(p / "config.yaml"),
        "eval": _read(p / "eval.json"),
        "summary": _read(p / "summary.json"),
    }
    rec["match"] = _plan_matches(p).get(p.name) or {}
    return rec


def tokenizer_label(data: Mapping) -> str:
    """bytes | bpe2048 | sentencepiece-unigram2048 | sentencepiece-<file> | gpt2 | llama3 | hf."""
    kind = str(data.get("tokenizer") or "bytes")
    vocab = data.get("bpe_vocab_size", 2048)
    if kind == "bpe":
        return f"bpe{vocab}"
    if kind == "sentencepiece":
        path = data.get("tokenizer_path")
        return (f"sentencepiece-{Path(path).stem}" if path
                else f"sentencepiece-{data.get('sp_model_type', 'unigram')}{vocab}")
    return kind


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(float(v)):
        return None
    return float(v)


def _bpb(ev: Mapping, domain: str) -> float | None:
    table = ev.get("bpb") if isinstance(ev.get("bpb"), dict) else {}
    for key in (f"{domain}/test", f"{domain}/val"):
        if _num(table.get(key)) is not None:
            return float(table[key])
    return next((float(v) for k, v in sorted(table.items())
                 if k.split("/")[0] == domain and _num(v) is not None), None)


def _accuracy(ev: Mapping) -> tuple[float | None, str | None, list | None, int | None]:
    """(accuracy, "task:metric", its 95% interval [lo, hi] from eval.json, items)."""
    tasks = ev.get("tasks") if isinstance(ev.get("tasks"), dict) else {}
    for task in sorted(tasks):
        metrics = {str(k).split(",")[0]: v for k, v in (tasks[task] or {}).items()
                   if "stderr" not in str(k) and _num(v) is not None}
        for m in ACC_METRICS:
            if m in metrics:
                ci = (tasks[task] or {}).get("ci95")
                ci = ci if isinstance(ci, dict) else {}
                lo_hi = ci.get(m) if isinstance(ci.get(m), (list, tuple)) else None
                return float(metrics[m]), f"{task}:{m}", lo_hi, ci.get("n")
    return None, None, None, None


_BPT: dict[str, float | None] = {}


def measured_bytes_per_token(data: Mapping) -> float | None:
    """Bytes per token of a run's tokenizer on its domain's validation split (embedded corpora;
    tokenizers come from the cache they were trained into); None where it cannot be measured."""
    from hnetbench.config import ConfigError, DataConfig, from_dict
    from hnetbench.data import corpus_documents, get_tokenizer
    from hnetbench.data.tokenizers import bytes_per_token

    key = json.dumps(dict(data), sort_keys=True, default=str)
    if key not in _BPT:
        try:
            cfg = from_dict(DataConfig, dict(data))
            if cfg.source != "embedded":
                _BPT[key] = None
            else:
                _BPT[key] = round(bytes_per_token(get_tokenizer(cfg),
                                                  corpus_documents(cfg, "val")), 4)
        except (ConfigError, ImportError):
            _BPT[key] = None
    return _BPT[key]


def tokenizer_table(runs: Iterable[str | Path | Mapping], measure: bool = True) -> pd.DataFrame:
    """One row per run (columns COLUMNS), sorted by domain, tokenizer, model. Byte-level runs
    show the tokenizer of the reference they were matched to as `matched_to`, their own
    bytes/token as 1 and their bytes per innermost chunk; `measure=False` skips measuring
    bytes/token (takes summary.json's `bytes_per_token` only)."""
    rows = []
    for run in runs:
        rec = _record(run)
        cfg, ev = rec.get("config") or {}, rec.get("eval") or {}
        summary, match = rec.get("summary") or {}, rec.get("match") or {}
        data, model = cfg.get("data") or {}, cfg.get("model") or {}
        domain = str(data.get("domain") or summary.get("domain") or "unknown")
        label = tokenizer_label(data)
        bpt = 1.0 if label == "bytes" else _num(summary.get("bytes_per_token"))
        if bpt is None and measure:
            bpt = measured_bytes_per_token(data)
        chunks = ev.get("bytes_per_chunk") if isinstance(ev.get("bytes_per_chunk"), dict) else {}
        stages = sorted((int(k[5:]), v) for k, v in chunks.items()
                        if k.startswith("stage") and k[5:].isdigit() and _num(v) is not None)
        acc, task, acc_ci, n_items = _accuracy(ev)
        matched = match.get("reference") if match.get("is_reference") is False else None
        rows.append({
            "domain": domain,
            "tokenizer": label,
            "model": str(cfg.get("preset") or model.get("arch") or "?"),
            "vocab_size": model.get("vocab_size"),
            "bytes_per_token": bpt,
            "bytes_per_chunk": float(stages[-1][1]) if stages else None,
            "bpb": _bpb(ev, domain),
            "accuracy": acc,
            "acc_lo": acc_ci[0] if acc_ci else None,
            "acc_hi": acc_ci[1] if acc_ci else None,
            "n_items": n_items,
            "task": task,
            "matched_to": matched,
            "reference_bytes_per_token": _num(match.get("ref_bytes_per_token")) if matched
            else None,
            "run": rec.get("run", ""),
        })
    df = pd.DataFrame(rows, columns=COLUMNS)
    if df.empty:
        return df
    order = {d: i for i, d in enumerate(DOMAIN_ORDER)}
    df["_d"] = df["domain"].map(lambda d: order.get(d, len(order)))
    df["_b"] = df["tokenizer"].eq("bytes")
    df = df.sort_values(["_d", "domain", "_b", "tokenizer", "matched_to", "model", "run"],
                        kind="stable", na_position="first")
    return df.drop(columns=["_d", "_b"]).reset_index(drop=True)
