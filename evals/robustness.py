"""Robustness to text perturbations (paper Table 3, App. D.1) for any multiple-choice lm-eval task.

Each perturbation yields a variant of the task, named `<task>@<perturbation>`, whose rendered
context and answer choices (both by default; configurable) pass through evals/perturb.py. The
perturbation is a pure function of the string, so the gold answer stays aligned with its choice.

Robustness score, generalised from 4 choices to k: with chance c = mean over items of 1/k_item,
    score = 100 * (perturbed acc - c) / (clean acc - c),
where perturbed acc is the mean over the perturbations (the paper's "Avg" column). When the clean
accuracy is at or below chance the score is undefined (None, reported "undefined").
"""

from __future__ import annotations

import copy
import csv
import io
from typing import Any

from hnetbench.evals.perturb import PERTURBATIONS, PerturbConfig, perturb


def robustness_score(perturbed: float, clean: float, chance: float = 0.25) -> float | None:
    """100 * (perturbed - chance) / (clean - chance); None when clean <= chance."""
    if clean <= chance:
        return None
    return 100.0 * (perturbed - chance) / (clean - chance)


def perturbed_task(task: Any, name: str, cfg: PerturbConfig | None = None,
                   context: bool = True, choices: bool = True) -> Any:
    """A copy of a loaded multiple-choice lm-eval Task whose text goes through `perturb`."""
    if task.get_config("output_type") != "multiple_choice":
        raise ValueError(f"task {task.task_name}: robustness needs a multiple_choice task")
    if name not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation '{name}' (expected one of {PERTURBATIONS})")
    cfg = cfg or PerturbConfig()

    def f(x: Any) -> Any:
        if isinstance(x, str):
            return perturb(x, name, cfg)
        if isinstance(x, list):
            return [f(v) for v in x]
        return x  # gold indices stay as they are

    new = copy.copy(task)
    new._config = copy.copy(task._config)
    new._config.task = f"{task.task_name}@{name}"
    base_text, base_choice, base_target = task.doc_to_text, task.doc_to_choice, task.doc_to_target
    if context:
        new.doc_to_text = lambda doc, doc_to_text=None: f(base_text(doc, doc_to_text))
    if choices:
        new.doc_to_choice = lambda doc, doc_to_choice=None: f(base_choice(doc, doc_to_choice))
        # a gold given as the choice string must be perturbed the same way as the choices
        new.doc_to_target = lambda doc, doc_to_target=None: f(base_target(doc, doc_to_target))
    return new


def chance_level(task: Any, limit: int | float | None = None) -> float:
    """Mean over the evaluated items of 1 / (number of choices)."""
    docs = list(task.eval_docs)
    if limit is not None:
        docs = docs[: int(limit if limit >= 1 else limit * len(docs))]
    ks = [len(task.doc_to_choice(d)) for d in docs]
    return sum(1.0 / k for k in ks) / len(ks) if ks else 0.0


def run_robustness(
    lm: Any,
    tasks: dict[str, Any],
    perturbations: tuple[str, ...] | list[str] = PERTURBATIONS,
    cfg: PerturbConfig | None = None,
    limit: int | float | None = None,
    metric: str = "acc",
    context: bool = True,
    choices: bool = True,
) -> dict[str, dict[str, Any]]:
    """{task: {"clean": acc, <perturbation>: acc, ..., "avg": mean, "chance": c, "score": x}}."""
    from hnetbench.evals.harness import run_tasks

    variants: dict[str, Any] = {}
    for name, task in tasks.items():
        if task.get_config("output_type") != "multiple_choice":
            print(f"task {name}: not multiple-choice; skipped for robustness")
            continue
        variants[name] = task
        for p in perturbations:
            v = perturbed_task(task, p, cfg, context, choices)
            variants[v.task_name] = v
    results = run_tasks(lm, variants, limit=limit)
    out: dict[str, dict[str, Any]] = {}
    for name, task in tasks.items():
        if name not in results or metric not in results[name]:
            continue
        row: dict[str, Any] = {"clean": results[name][metric]}
        for p in perturbations:
            row[p] = results.get(f"{name}@{p}", {}).get(metric)
        accs = [row[p] for p in perturbations if row[p] is not None]
        row["avg"] = sum(accs) / len(accs) if accs else None
        row["chance"] = chance_level(task, limit)
        row["score"] = (robustness_score(row["avg"], row["clean"], row["chance"])
                        if row["avg"] is not None else None)
        out[name] = row
    return out


HEADERS = {"clean": "Clean", "antspeak": "AntSpeak", "drop": "Drop", "randomcase": "RandomCase",
           "repeat": "Repeat", "uppercase": "UpperCase", "avg": "Avg", "score": "Score"}


def _fmt(v: Any) -> str:
    return "undefined" if v is None else f"{100 * v:.1f}"


def table(results: dict[str, dict[str, Any]], perturbations=PERTURBATIONS,
          label: str = "") -> tuple[str, str]:
    """(CSV, markdown) in Table 3's layout: accuracies in %, Avg, robustness Score."""
    cols = ["model", "task", "clean", *perturbations, "avg", "score"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    md = ["| " + " | ".join(HEADERS.get(c, c) for c in cols) + " |",
          "|" + "---|" * len(cols)]
    for task, row in results.items():
        vals = [row.get(c) for c in ["clean", *perturbations, "avg"]]
        score = row.get("score")
        w.writerow([label, task, *("" if v is None else f"{v:.6f}" for v in vals),
                    "undefined" if score is None else f"{score:.4f}"])
        cells = [_fmt(v) for v in vals] + ["undefined" if score is None else f"{score:.1f}"]
        md.append("| " + " | ".join([label, task, *cells]) + " |")
    return buf.getvalue(), "\n".join(md) + "\n"
