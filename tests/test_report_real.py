"""A report from a small real sweep: five tiny runs (English, Chinese, DNA) trained and evaluated
by the sweep runner's local executor, one extra task on one run, then `hnetbench report`; every
checked number is read back from the run files the trainer and `hnetbench eval` wrote."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
from hnetbench import cli
from hnetbench.evals.perturb import PERTURBATIONS
from hnetbench.reports import figures as F
from hnetbench.reports import report as R
from hnetbench.sweeps.runner import run_sweep

pytestmark = pytest.mark.slow

SPEC = """\
name: tiny-real
base:
  data: {seq_len: 64, batch_size: 4}
  train: {steps: 6, eval_every: 3, eval_batches: 1, log_every: 1, ckpt_every: 0, device: cpu}
  eval: {bpb_max_bytes: 1000}
axes:
  zip:
    - data.domain: [en, en, en, zh, dna]
      preset: [transformer-bpe@cpu-tiny, hnet-1stage@cpu-tiny, hnet-1stage@cpu-tiny,
               hnet-2stage@cpu-tiny, hnet-dna@cpu-tiny]
      train.steps: [6, 3, 6, 6, 6]
match: null
eval:
  bpb: true
  splits: [val]
  tasks: ["hnb_cont_{domain}"]
  robustness: true
  limit: 8
"""
EXTRA = "hnb_bb_social_iqa"  # evaluated on one English run only: the others show a blank cell


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """(sweep dir with the CLI's report, its tables rebuilt as objects, run id -> Run)."""
    tmp = tmp_path_factory.mktemp("real")
    spec = tmp / "tiny-real.yaml"
    spec.write_text(SPEC)
    assert run_sweep(spec, executor="local", results=tmp / "results", log=print) == 0
    sweep = tmp / "results" / "tiny-real"
    runs = {r.name: r for r in R.load_sweep(sweep, print)}
    assert len(runs) == 5 and all(r.state == "completed" for r in runs.values())
    one = next(r for r in runs.values() if r.family == "hnet-1stage" and r.summary["steps"] == 6)
    argv = ["eval", "lm", "--checkpoint", str(one.path), "--tasks", EXTRA, "--limit", "4"]
    assert cli.main(argv) == 0
    assert cli.main(["report", str(sweep)]) == 0
    warns: list[str] = []
    runs = {r.run_id: r for r in R.load_sweep(sweep, warns.append)}
    assert warns == []
    return sweep, R.build_tables(list(runs.values())), runs


def load(run: Path, name: str) -> dict:
    return json.loads((run / name).read_text())


def cell_notes(t: R.Table, row: int, col: str) -> list[str]:
    c = t.rows[row][t.columns.index(col)]
    return [t.notes[n - 1] for n in c.notes] if isinstance(c, R.Cell) else []


def test_runs_and_table2_match_run_files(real_sweep):
    sweep, tables, runs = real_sweep
    t2, runs_t = tables["table2"], tables["runs"]
    assert len(runs_t.rows) == 5
    assert sorted(runs_t.value(j, "label") for j in range(5)) == [
        "hnet-1stage@cpu-tiny (steps=3)",  # twins are told apart by the axis that differs
        "hnet-1stage@cpu-tiny (steps=6)",
        "hnet-2stage@cpu-tiny [zh]",
        "hnet-dna@cpu-tiny [dna]",
        "transformer-bpe@cpu-tiny",
    ]
    for rid, r in runs.items():
        sm, ev, cfg = load(r.path, "summary.json"), load(r.path, "eval.json"), r.config
        (j,) = runs_t.find(**{"run id": rid})
        fam, scale = cfg["preset"].split("@")
        assert (runs_t.value(j, "family"), runs_t.value(j, "scale")) == (fam, scale)
        assert runs_t.value(j, "domain") == cfg["data"]["domain"]
        assert runs_t.value(j, "state") == load(r.path, "status.json")["state"] == "completed"
        for col, key in [
            ("final val BPB", "final_val_bpb"),
            ("params", "params"),
            ("steps", "steps"),
            ("train bytes", "bytes_seen"),
            ("train FLOPs", "flops_seen"),
            ("FLOPs/byte", "flops_per_byte"),
        ]:
            assert runs_t.value(j, col) == sm[key], col
        if r.domain != "en":
            assert not t2.find(run=r.name)  # zh/dna runs belong to Tables 4 and 5
            continue
        (i,) = t2.find(source="measured", run=r.name)
        assert t2.value(i, "BPB") == ev["bpb"]["en/val"]
        assert t2.value(i, "GFLOPs/byte") == pytest.approx(sm["flops_per_byte"] / 1e9)
        assert t2.value(i, "train bytes") == sm["bytes_seen"]
        col = "hnb_cont_en acc_norm (%)"
        assert t2.value(i, col) == pytest.approx(100 * ev["tasks"]["hnb_cont_en"]["acc_norm"])
        col = f"{EXTRA} acc_norm (%)"
        if EXTRA in ev["tasks"]:
            assert t2.value(i, col) == pytest.approx(100 * ev["tasks"][EXTRA]["acc_norm"])
            accs = [100 * v["acc_norm"] for v in ev["tasks"].values()]
            assert t2.value(i, "Avg (%)") == pytest.approx(sum(accs) / len(accs))
        else:  # a piece that is missing: blank cell with a footnote saying why
            assert t2.value(i, col) is None
            assert cell_notes(t2, i, col) == ["task not evaluated for this run"]
    assert len(t2.find(source="measured")) == 3
    # paper reference rows are labelled as the paper's and carry the paper's numbers
    ref = t2.find(source="paper (L scale)")
    assert [(t2.value(i, "model"), t2.value(i, "BPB")) for i in ref] == [
        ("Transformer", 0.756),
        ("H-Net 1-stage", 0.755),
    ]
    assert all(t2.value(i, "run") is None for i in ref)
    assert cell_notes(t2, ref[0], "hnb_cont_en acc_norm (%)") == [
        "the paper reports no number for this task/metric"
    ]
    csv_rows = (sweep / "tables" / "table2.csv").read_text().splitlines()
    assert len(csv_rows) == len(t2.rows) + 1  # the CLI wrote the same table


def test_table3_robustness_matches_eval_json(real_sweep):
    _, tables, runs = real_sweep
    t3 = tables["table3"]
    for r in runs.values():
        task = f"hnb_cont_{r.domain}"
        rob = load(r.path, "eval.json")["robustness"][task]
        (k,) = t3.find(source="measured", run=r.name, task=task)
        assert t3.value(k, "clean (%)") == pytest.approx(100 * rob["clean"])
        assert t3.value(k, "Drop (%)") == pytest.approx(100 * rob["drop"])
        # perturbations changing < 1% of the task's characters are n/a (null; DNA: the case
        # ones) and left out of eval.json's avg and score (docs/EVALS.md)
        perts = [rob[p] for p in PERTURBATIONS if p not in rob["na"]]
        assert rob["avg"] == pytest.approx(sum(perts) / len(perts))
        if not rob["na"]:
            assert len(perts) == 5
            assert t3.value(k, "Avg (%)") == pytest.approx(100 * sum(perts) / 5)
        else:
            # case changes nothing in upper-case DNA and little in Chinese
            assert r.domain in ("dna", "zh") and set(rob["na"]) <= {"uppercase", "randomcase"}
            assert t3.value(k, "RandomCase (%)") is None
        if rob["score"] is None:  # clean accuracy at or below chance: blank, footnoted
            assert t3.value(k, "Score") is None and cell_notes(t3, k, "Score")
        else:
            assert t3.value(k, "Score") == pytest.approx(rob["score"])
    ref = t3.find(source="paper (L scale)")  # one per family with measured rows
    assert [t3.value(k, "model") for k in ref] == ["Transformer", "H-Net 1-stage", "H-Net 2-stage"]
    assert [t3.value(k, "Score") for k in ref[:2]] == [20.2, 37.2]


def test_tables_4_and_5_match_eval_json(real_sweep):
    _, tables, runs = real_sweep
    t4, t5 = tables["table4"], tables["table5"]
    zh = next(r for r in runs.values() if r.domain == "zh")
    ev = load(zh.path, "eval.json")
    (i,) = t4.find(source="measured", run=zh.name)
    assert t4.value(i, "BPIC") == ev["bytes_per_chunk"]["stage1"]  # innermost of two stages
    assert t4.value(i, "BPB") == ev["bpb"]["zh/val"]
    assert t4.value(i, "hnb_cont_zh acc_norm (%)") == pytest.approx(
        100 * ev["tasks"]["hnb_cont_zh"]["acc_norm"]
    )
    (p,) = t4.find(source="paper (XL-like)")
    assert (t4.value(p, "model"), t4.value(p, "BPIC"), t4.value(p, "BPB")) == (
        "H-Net 2-stage",
        5.81,
        0.7032,
    )

    dna = next(r for r in runs.values() if r.domain == "dna")
    ev = load(dna.path, "eval.json")
    (i,) = t5.find(source="measured", run=dna.name)
    assert t5.value(i, "BPB") == ev["bpb"]["dna/val"]
    assert t5.value(i, "ppl") == ev["ppl_per_bp"]["dna/val"]
    assert t5.value(i, "ppl") == pytest.approx(2 ** ev["bpb"]["dna/val"], rel=1e-6)
    assert t5.value(i, "params") == load(dna.path, "summary.json")["params"]
    paper = t5.find(source="paper (HG38)")
    assert paper and all(t5.value(k, "run") is None for k in paper)


def test_figures_show_the_runs(real_sweep):
    _, _, by_id = real_sweep
    runs = list(by_id.values())
    fig = F.bpb_vs_bytes(runs)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["domain: en", "domain: zh", "domain: dna"]
    for ax in fig.axes[:3]:
        assert ax.get_xlabel() == "training data (bytes)" and ax.get_xscale() == "log"
        assert ax.get_ylabel() == "validation BPB (bits/byte)"
    assert [len(ax.lines) for ax in fig.axes[:3]] == [3, 1, 1]
    for ax in fig.axes[:3]:
        for line in ax.lines:
            run = next(r for r in runs if r.label == line.get_label())
            vals = [
                m
                for m in map(json.loads, (run.path / "metrics.jsonl").read_text().splitlines())
                if m.get("split") == "val"
            ]
            assert list(line.get_xdata()) == [m["bytes_seen"] for m in vals]
            assert list(line.get_ydata()) == [m["val_bpb"] for m in vals]

    (fit,) = F.scaling_fits(runs)  # only the English H-Net has two budgets (3 and 6 steps)
    a, b = sorted((r for r in runs if r.family == "hnet-1stage"), key=lambda r: r.train_flops)
    (c1, y1), (c2, y2) = [
        (load(r.path, "summary.json")["flops_seen"], load(r.path, "eval.json")["bpb"]["en/val"])
        for r in (a, b)
    ]
    assert (fit.domain, fit.family, fit.n) == ("en", "hnet-1stage", 2)
    assert fit.b == pytest.approx(math.log(y2 / y1) / math.log(c2 / c1))
    ax = F.bpb_vs_flops(runs).axes[0]
    assert (ax.get_xscale(), ax.get_yscale(), ax.get_xlabel()) == (
        "log",
        "log",
        "training compute (FLOPs)",
    )
    pts = sorted(tuple(p) for coll in ax.collections for p in coll.get_offsets())
    assert len(pts) == 3 and (c1, y1) in pts and (c2, y2) in pts
    fit_line = next(ln for ln in ax.lines if ln.get_label().startswith("hnet-1stage fit"))
    assert fit_line.get_ydata()[0] == pytest.approx(y1) and fit_line.get_linestyle() == "--"

    ax = F.bytes_per_chunk(runs).axes[0]
    assert ax.get_ylabel() == "bytes per chunk (bytes)"
    labels = sorted(ln.get_label() for ln in ax.lines)
    zh = next(r for r in runs if r.domain == "zh")
    assert sum(lab.startswith(zh.label + " stage") for lab in labels) == 2  # two stages
    assert len(labels) == 5  # 2 English H-Nets + 2 stages of the zh one + the DNA H-Net
    metrics = [json.loads(x) for x in (b.path / "metrics.jsonl").read_text().splitlines()]
    line = next(ln for ln in ax.lines if ln.get_label() == f"{b.label} stage 0")
    assert list(line.get_ydata()) == [
        m["stage0/bytes_per_chunk"] for m in metrics if "stage0/bytes_per_chunk" in m
    ]

    fig = F.robustness(runs)
    assert sorted(ax.get_title() for ax in fig.axes if ax.get_title()) == [
        "task: hnb_cont_dna",
        "task: hnb_cont_en",
        "task: hnb_cont_zh",
    ]
    ax = next(ax for ax in fig.axes if ax.get_title() == "task: hnb_cont_en")
    assert ax.get_ylabel() == "accuracy (%)" and len(ax.containers) == 3
    for bars in ax.containers:
        run = next(r for r in runs if r.label == bars.get_label())
        rob = load(run.path, "eval.json")["robustness"]["hnb_cont_en"]
        heights = [bar.get_height() for bar in bars]
        assert heights[0] == pytest.approx(100 * rob["clean"])  # clean first, then perturbations
        assert sorted(heights[1:]) == pytest.approx(
            sorted(100 * rob[p] for p in PERTURBATIONS)
        )
    # each bar's 95% interval (eval.json's ci95) is a vertical line through it
    segs = [seg for coll in ax.collections for seg in coll.get_segments()]
    assert len(segs) == sum(len(bars) for bars in ax.containers)
    lows = sorted(round(float(seg[0][1]), 6) for seg in segs)
    robs = [load(r.path, "eval.json")["robustness"]["hnb_cont_en"] for r in runs
            if "hnb_cont_en" in (load(r.path, "eval.json") or {}).get("robustness", {})]
    want = sorted(round(100 * rob["ci95"][k][0], 6) for rob in robs
                  for k in ("clean", *PERTURBATIONS))
    assert lows == pytest.approx(want)


def test_report_md_links_existing_files(real_sweep):
    sweep, _, _ = real_sweep
    text = (sweep / "report.md").read_text()

    links = re.findall(r"\]\(([^)]+)\)", text)
    assert len(links) >= 5 * 3 + 4 * 3  # md/tex/csv per table, png twice + pdf per figure
    for link in links:
        assert (sweep / link).is_file(), link
    for key in ("runs", "table2", "table3", "table4", "table5"):
        assert f"tables/{key}.md" in text
    assert "hnet-1stage: BPB = " in text  # the fit's formula
    # the machine the runs trained on, from their summaries
    assert re.search(r"runs trained on: .*torch .*, \w+ \(5 runs\)", text)
    assert "different vector ISAs" not in text


def test_report_warns_when_runs_trained_on_different_isas(real_sweep, tmp_path):
    sweep, _, runs = real_sweep
    copy = tmp_path / "mixed"
    shutil.copytree(sweep, copy)

    def edit(r: R.Run, change) -> None:  # noqa: ANN001
        path = copy / r.path.relative_to(sweep) / "summary.json"
        summary = json.loads(path.read_text())
        change(summary)
        path.write_text(json.dumps(summary))

    one, older, *_ = runs.values()
    edit(one, lambda s: s["machine"].update(cpu_capability="OTHER"))
    edit(older, lambda s: s.pop("machine"))  # a run trained by code that predates the record
    assert cli.main(["report", str(copy)]) == 0
    text = (copy / "report.md").read_text()
    assert "OTHER (1 run)" in text and "(3 runs)" in text
    assert "1 of the runs do not record their machine" in text
    assert "different vector ISAs" in text
