"""Thin glue over lm-eval: find tasks (ours offline + lm-eval's own), load them, run them.

A task whose data cannot be loaded (e.g. a Hugging Face dataset with no network) is reported as
one line and skipped; the rest still run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
MAIN_METRICS = ("acc", "acc_norm", "acc_bytes", "bits_per_byte", "word_perplexity",
                "byte_perplexity", "perplexity", "exact_match")


class _QuietCustomDataset(logging.Filter):
    """Drop lm-eval's per-task hint about custom-dataset kwargs (our loader takes none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Custom kwargs can be passed" not in record.getMessage()


def _quiet() -> None:
    log = logging.getLogger("lm_eval.api.task")
    if not any(isinstance(f, _QuietCustomDataset) for f in log.filters):
        log.addFilter(_QuietCustomDataset())


def offline_tasks() -> list[str]:
    """Names of the tasks (and tags) shipped in evals/tasks/."""
    import yaml

    names: set[str] = set()
    for p in sorted(TASKS_DIR.glob("*.yaml")):
        text = p.read_text(encoding="utf-8").replace("!function", "")
        cfg = yaml.safe_load(text) or {}
        names.add(cfg["task"])
        names.update(cfg.get("tag") or [])
    return sorted(names)


def task_manager(names: list[str]):
    """TaskManager over our tasks; lm-eval's own index (slow to build) only if a name needs it."""
    from lm_eval.tasks import TaskManager

    ours = set(offline_tasks())
    need_defaults = any(n not in ours for n in names)
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=need_defaults)


def load_tasks(names: list[str], log=print) -> dict[str, Any]:
    """name -> Task for every leaf task that loads; one line per task that does not."""
    _quiet()
    tm = task_manager(names)
    known = set(tm.all_tasks)
    out: dict[str, Any] = {}
    for name in names:
        if name not in known:
            log(f"task {name}: unknown to lm-eval and not an offline hnetbench task; skipped")
            continue
        try:
            loaded = tm.load([name])["tasks"]
        except Exception as e:  # noqa: BLE001 -- datasets raise anything when offline
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            log(f"task {name}: data not available offline ({type(e).__name__}: {msg[:160]}); "
                "skipped")
            continue
        out.update(loaded)
    return out


def run_tasks(lm, tasks: dict[str, Any], limit: int | float | None = None,
              batch_size: int | None = None) -> dict[str, dict[str, float]]:
    """Evaluate loaded Task objects zero-shot; returns {task: {metric: value}}."""
    import lm_eval

    if not tasks:
        return {}
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    res = lm_eval.simple_evaluate(
        model=lm, tasks=list(tasks.values()), limit=limit, bootstrap_iters=0,
        log_samples=False, task_manager=task_manager([]), batch_size=batch_size,
    )
    out: dict[str, dict[str, float]] = {}
    for name, metrics in (res or {}).get("results", {}).items():
        row = {}
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")
            if metric in MAIN_METRICS and isinstance(value, (int, float)):
                row[metric] = float(value)
        if row:
            out[name] = row
    return out
