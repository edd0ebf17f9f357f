"""Robustness to text perturbations (paper Table 3, App. D.1) for any multiple-choice lm-eval task.

Each perturbation yields a variant of the task, named `<task>@<perturbation>`, whose rendered
context and answer choices (both by default; configurable) pass through evals/perturb.py. The
perturbation is a pure function of the string, so the gold answer stays aligned with its choice.
AntSpeak acts on context + continuation as one string: the seam gets the same separator as any
other pair of characters (lm-eval's target delimiter is folded into the choice).

Fairness across domains: a perturbation that changes fewer than MIN_CHANGED (1%) of a task's
characters (UpperCase on Chinese or upper-case DNA) is reported as n/a for that task and left
out of its Avg and Score -- otherwise its "accuracy" would equal the clean one and inflate both.

Robustness score, generalised from 4 choices to k: with chance c computed from the items,
    score = 100 * (perturbed acc - c) / (clean acc - c),
where perturbed acc is the mean over the applicable perturbations (the paper's "Avg" column)
and c is what a constant scorer gets under lm-eval's tie rule (first tied choice wins): the
share of items whose gold is choice 0 (= 1/k with the balanced shipped tasks). When the clean
accuracy is at or below chance the score is undefined (None, reported "undefined").
"""

from __future__ import annotations

import copy
import csv
import io
from typing import Any

from hnetbench.evals.intervals import METHOD, accuracy_interval, constant_scorer_chance
from hnetbench.evals.perturb import ALL_PERTURBATIONS, PERTURBATIONS, PerturbConfig, _apply

MIN_CHANGED = 0.01


def robustness_score(perturbed: float, clean: float, chance: float = 0.25) -> float | None:
    """100 * (perturbed - chance) / (clean - chance); None when clean <= chance."""
    if clean <= chance:
        return None
    return 100.0 * (perturbed - chance) / (clean - chance)


def _check(task: Any, name: str) -> None:
    if task.get_config("output_type") != "multiple_choice":
        raise ValueError(f"task {task.task_name}: robustness needs a multiple_choice task")
    if name not in ALL_PERTURBATIONS:
        raise ValueError(f"unknown perturbation '{name}' (expected one of {ALL_PERTURBATIONS})")


def perturbed_task(task: Any, name: str, cfg: PerturbConfig | None = None,
                   context: bool = True, choices: bool = True) -> Any:
    """A copy of a loaded multiple-choice lm-eval Task whose text goes through the perturbation."""
    _check(task, name)
    cfg = cfg or PerturbConfig()

    def f(x: Any) -> Any:
        if isinstance(x, str):
            return _apply(x, name, cfg)[0]
        if isinstance(x, list):
            return [f(v) for v in x]
        return x  # gold indices stay as they are

    new = copy.copy(task)
    new._config = copy.copy(task._config)
    new._config.task = f"{task.task_name}@{name}"
    base_text, base_choice, base_target = task.doc_to_text, task.doc_to_choice, task.doc_to_target
    delim = task.get_config("target_delimiter") or ""
    joint = name == "antspeak" and context and choices

    def g(doc: Any, x: Any) -> Any:  # a choice (or string gold) as it follows the context
        if isinstance(x, list):
            return [g(doc, v) for v in x]
        if not isinstance(x, str):
            return x
        # antspeak(ctx + delim + c) == antspeak(ctx) + " " + antspeak(delim + c) (ctx, c != "")
        seam = " " if base_text(doc) and (delim + x) else ""
        return seam + _apply(delim + x, name, cfg)[0]

    if context:
        new.doc_to_text = lambda doc, doc_to_text=None: f(base_text(doc, doc_to_text))
    if joint:
        new._config.target_delimiter = ""
        new.doc_to_choice = lambda doc, doc_to_choice=None: g(doc, base_choice(doc, doc_to_choice))
        new.doc_to_target = lambda doc, doc_to_target=None: g(doc, base_target(doc, doc_to_target))
    elif choices:
        new.doc_to_choice = lambda doc, doc_to_choice=None: f(base_choice(doc, doc_to_choice))
        # a gold given as the choice string must be perturbed the same way as the choices
        new.doc_to_target = lambda doc, doc_to_target=None: f(base_target(doc, doc_to_target))
    return new


def _docs(task: Any, limit: int | float | None) -> list[Any]:
    docs = list(task.eval_docs)
    if limit is not None:
        docs = docs[: int(limit if limit >= 1 else limit * len(docs))]
    return docs


def _gold(task: Any, doc: Any) -> int | list[int]:
    target = task.doc_to_target(doc)
    if isinstance(target, str):
        return task.doc_to_choice(doc).index(target)
    return target


def chance_level(task: Any, limit: int | float | None = None) -> float:
    """Chance accuracy of the evaluated items: what a constant scorer (every choice the same
    score) gets under lm-eval's rule that the first tied choice wins -- the share of items whose
    gold is choice 0 (an item with several golds counts if 0 is one of them)."""
    golds = []
    for d in _docs(task, limit):
        gold = _gold(task, d)
        golds.append(0 if (isinstance(gold, list) and 0 in gold) else
                     (gold[0] if isinstance(gold, list) else gold))
    return constant_scorer_chance(golds)


def changed_fraction(task: Any, name: str, cfg: PerturbConfig | None = None,
                     limit: int | float | None = None, context: bool = True,
                     choices: bool = True) -> float:
    """Share of the task's characters (grapheme clusters of the contexts and choices that would
    be perturbed) that perturbation `name` changes."""
    cfg = cfg or PerturbConfig()
    changed = total = 0
    for d in _docs(task, limit):
        texts = ([task.doc_to_text(d)] if context else []) + (
            list(task.doc_to_choice(d)) if choices else [])
        for t in texts:
            if isinstance(t, str):
                _, c, n = _apply(t, name, cfg)
                changed, total = changed + c, total + n
    return changed / total if total else 0.0


def run_robustness(
    lm: Any,
    tasks: dict[str, Any],
    perturbations: tuple[str, ...] | list[str] = PERTURBATIONS,
    cfg: PerturbConfig | None = None,
    limit: int | float | None = None,
    metric: str = "acc",
    context: bool = True,
    choices: bool = True,
    clean_results: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """{task: {"clean": acc, <perturbation>: acc | None (n/a), "avg", "chance", "score",
    "ci95": {"n": items, <col>: [lo, hi]}, "na": [...], "changed": {p: share changed}}}.

    `clean_results`, if given, receives each unperturbed task's full results (every metric and
    its interval, as `harness.run_tasks` gives them for the task alone)."""
    from hnetbench.evals.harness import run_tasks

    cfg = cfg or PerturbConfig()
    variants: dict[str, Any] = {}
    changed: dict[str, dict[str, float]] = {}
    for name, task in tasks.items():
        if task.get_config("output_type") != "multiple_choice":
            print(f"task {name}: not multiple-choice; skipped for robustness")
            if clean_results is not None:  # its clean results are still asked for
                variants[name] = task
            continue
        variants[name] = task
        changed[name] = {}
        for p in perturbations:
            _check(task, p)
            changed[name][p] = changed_fraction(task, p, cfg, limit, context, choices)
            if changed[name][p] >= MIN_CHANGED:
                v = perturbed_task(task, p, cfg, context, choices)
                variants[v.task_name] = v
    results = run_tasks(lm, variants, limit=limit)
    if clean_results is not None:
        clean_results.update({n: results[n] for n in tasks if n in results})
    out: dict[str, dict[str, Any]] = {}
    for name, task in tasks.items():
        if name not in changed or name not in results or metric not in results[name]:
            continue
        n = (results[name].get("ci95") or {}).get("n")
        row: dict[str, Any] = {"clean": results[name][metric], "changed": changed[name],
                               "na": []}
        ci: dict[str, Any] = {"n": n, "method": METHOD}
        for p in perturbations:
            row[p] = results.get(f"{name}@{p}", {}).get(metric)
            if changed[name][p] < MIN_CHANGED:
                row["na"].append(p)
        accs = [row[p] for p in perturbations if row[p] is not None]
        row["avg"] = sum(accs) / len(accs) if accs else None
        for col in ("clean", *perturbations, "avg"):
            if row[col] is not None and n:
                # Avg: mean of per-item means over the same n items; its interval treats the
                # average as one accuracy over n items (conservative for correlated columns)
                ci[col] = list(accuracy_interval(row[col], n))
        row["ci95"] = ci
        row["chance"] = chance_level(task, limit)
        row["score"] = (robustness_score(row["avg"], row["clean"], row["chance"])
                        if row["avg"] is not None else None)
        out[name] = row
    return out


HEADERS = {"clean": "Clean", "antspeak": "AntSpeak", "drop": "Drop", "randomcase": "RandomCase",
           "randomcase_blt": "RandomCase (BLT)", "repeat": "Repeat", "uppercase": "UpperCase",
           "avg": "Avg", "chance": "Chance", "score": "Score"}


def _fmt(v: Any, ci: list[float] | None = None, na: bool = False) -> str:
    if na:
        return "n/a"
    if v is None:
        return "undefined"
    if ci:
        return f"{100 * v:.1f} ±{100 * (ci[1] - ci[0]) / 2:.1f}"
    return f"{100 * v:.1f}"


def table(results: dict[str, dict[str, Any]], perturbations=PERTURBATIONS,
          label: str = "") -> tuple[str, str]:
    """(CSV, markdown) in Table 3's layout: accuracies in %, Avg, chance, robustness Score.

    Markdown cells carry the 95% interval's half-width (Wilson score over n items, n in
    its own column); the CSV has <col>_lo/<col>_hi columns. n/a: the perturbation changes < 1%
    of the task's characters and is left out of Avg and Score."""
    acc_cols = ["clean", *perturbations, "avg"]
    cols = ["model", "task", "n", *acc_cols, "chance", "score"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols + [f"{c}_{e}" for c in acc_cols for e in ("lo", "hi")])
    md = ["| " + " | ".join(HEADERS.get(c, c) for c in cols) + " |",
          "|" + "---|" * len(cols)]
    for task, row in results.items():
        na = set(row.get("na") or [])
        vals = [None if c in na else row.get(c) for c in acc_cols]
        score, chance = row.get("score"), row.get("chance")
        n = (row.get("ci95") or {}).get("n")
        cis = [(row.get("ci95") or {}).get(c) for c in acc_cols]
        bounds = [("" if not ci else f"{ci[i]:.6f}") for ci in cis for i in (0, 1)]
        w.writerow([label, task, "" if n is None else n,
                    *(("n/a" if c in na else "") if v is None else f"{v:.6f}"
                      for c, v in zip(acc_cols, vals)),
                    "" if chance is None else f"{chance:.6f}",
                    "undefined" if score is None else f"{score:.4f}", *bounds])
        cells = [_fmt(v, ci, c in na) for c, v, ci in zip(acc_cols, vals, cis)]
        md.append("| " + " | ".join([label, task, "" if n is None else str(n), *cells,
                                     "" if chance is None else f"{100 * chance:.1f}",
                                     "undefined" if score is None else f"{score:.1f}"]) + " |")
    return buf.getvalue(), "\n".join(md) + "\n"
