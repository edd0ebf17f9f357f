"""The report's tables built from runs: paper Tables 2-5 beside measured rows, and the runs table.

A missing piece is a blank cell with a footnote; the paper's published numbers are always in rows
labelled "paper", never mixed in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from hnetbench.reports.render import Cell, Table
from hnetbench.reports.runs import (
    MEASURED,
    Run,
    _norm,
    _num,
    family_label,
    paper_numbers,
    paper_scale,
)


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


def _pct_interval(lo_hi: Sequence[float]) -> str:
    """An eval.json `ci95` pair of fractions as "[lo, hi]" in percent."""
    return f"[{100 * lo_hi[0]:.1f}, {100 * lo_hi[1]:.1f}]"


def _bpb_cell(t: Table, r: Run) -> Cell:
    """The run's held-out BPB, footnoted with its 95% interval over the test documents."""
    bpb, note = r.bpb()
    cell = _val(t, bpb, "no BPB in eval.json or summary.json", note)
    ci = r.bpb_interval() if note is None else None
    if bpb is not None and ci:
        lo, hi = ci["bpb"]
        cell = Cell(bpb, (t.note(f"{r.name}, BPB: 95% CI [{lo:.3f}, {hi:.3f}] over "
                                 f"n={ci.get('n')} test documents ({ci.get('method', '')}); "
                                 "seeds vary it too: see the BPB table"),))
    return cell


def _task_cells(t: Table, r: Run, tcols: list[tuple[str, str, str]]) -> dict[str, Cell]:
    """The run's value for each task column (accuracies in percent), blank + footnote if absent."""
    cells = {}
    for task, metric, col in tcols:
        res = (r.eval.get("tasks") or {}).get(task)
        v = _metrics(res).get(metric)
        v = v * 100.0 if v is not None and _is_pct(metric) else v
        cells[col] = _val(t, v, "task not evaluated for this run")
        ci = (res or {}).get("ci95") if isinstance(res, dict) else None
        lo_hi = ci.get(metric) if isinstance(ci, dict) else None
        if v is not None and _is_pct(metric) and isinstance(lo_hi, (list, tuple)) \
                and len(lo_hi) == 2:  # every accuracy carries its 95% interval (eval.json)
            note = t.note(f"{r.name}, {task} {metric}: 95% CI {_pct_interval(lo_hi)}, "
                          f"n={ci.get('n')} ({ci.get('method', '')})")
            cells[col] = Cell(v, (note,))
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
            "BPB": _bpb_cell(t, r),
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
    cols += ["Avg (%)", "Score", "chance (%)", "clean 95% CI (%)", "n"]
    t = Table(
        "table3",
        "Table 3: robustness to perturbations (cf. paper Table 3)",
        cols,
        fmt={**{c: ".1f" for c in cols[5:]}, "n": ".0f"},
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
    na = set(d.get("na") or [])  # changes < 1% of the task's characters: not a perturbation here
    vals = []
    for key, lab in perts:
        v = by_key.get(key)
        if key in na:
            cells[f"{lab} (%)"] = _blank(
                t, "n/a: the perturbation changes < 1% of this task's characters (docs/EVALS.md)")
            continue
        cells[f"{lab} (%)"] = _val(
            t, None if v is None else 100.0 * v, "perturbation not evaluated"
        )
        lo_hi = (d.get("ci95") or {}).get(key)
        if v is not None and isinstance(lo_hi, (list, tuple)) and len(lo_hi) == 2:
            note = t.note(f"{r.name}, {task} {lab}: 95% CI {_pct_interval(lo_hi)}, "
                          f"n={(d.get('ci95') or {}).get('n')}")
            cells[f"{lab} (%)"] = Cell(100.0 * v, (note,))
        if v is not None:
            vals.append(100.0 * v)
    avg = _num(d.get("avg"))  # eval.json's, over the applicable perturbations
    if avg is not None:
        cells["Avg (%)"] = 100.0 * avg
    elif vals and len(vals) == len(perts) - len(na & {k for k, _ in perts}):
        cells["Avg (%)"] = sum(vals) / len(vals)
    else:
        cells["Avg (%)"] = _blank(t, "Avg needs every applicable perturbation column")
    chance = _num(d.get("chance"))
    cells["chance (%)"] = None if chance is None else 100.0 * chance
    ci = d.get("ci95") or {}
    lo_hi = ci.get("clean")
    if isinstance(lo_hi, (list, tuple)) and len(lo_hi) == 2:
        cells["clean 95% CI (%)"] = _pct_interval(lo_hi)
    cells["n"] = _num(ci.get("n"))
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
        cells = {
            "source": Cell(MEASURED, _state_note(t, r)),
            "model": family_label(r.family),
            "scale": r.scale,
            "run": r.name,
            "domain": r.domain,
            "BPIC": _val(t, bpic, "no bytes_per_chunk in eval.json or metrics.jsonl", bpic_note),
            "main": r.main_layout(),
            "BPB": _bpb_cell(t, r),
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
            BPB=_bpb_cell(t, r),
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

