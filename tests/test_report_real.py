"""A report from a small real sweep: three tiny runs trained by hnetbench.train, evaluated by
`hnetbench eval`, then reported; every checked number is read back from the run files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hnetbench import cli
from hnetbench.config import config_hash, resolve
from hnetbench.evals import figures as F
from hnetbench.evals import report as R
from hnetbench.train import train

TASK = "hnb_bb_social_iqa"  # an offline multiple-choice task of the evals room
RUNS = [("hnet-1stage@cpu-tiny", 3), ("hnet-1stage@cpu-tiny", 6), ("llamabyte@cpu-tiny", 3)]


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, R.Report]:
    sweep = tmp_path_factory.mktemp("real") / "sweep"
    for i, (preset, steps) in enumerate(RUNS):
        cfg = resolve(base={
            "preset": preset, "name": f"{preset.split('@')[0]}-{steps}",
            "data": {"seq_len": 128, "batch_size": 2},
            "train": {"steps": steps, "eval_every": 2, "eval_batches": 1, "log_every": 1,
                      "ckpt_every": 0},
        })
        run = sweep / config_hash(cfg)
        train(cfg, run)
        ck = ["--checkpoint", str(run)]
        assert cli.main(["eval", "bpb", *ck, "--max-bytes", "1000"]) == 0
        if i == 1:  # one run with zero-shot tasks and robustness; the others show blanks
            assert cli.main(["eval", "lm", *ck, "--tasks", TASK, "--limit", "4"]) == 0
            assert cli.main(["eval", "robustness", *ck, "--tasks", TASK, "--limit", "4"]) == 0
    warns: list[str] = []
    rep = R.build_report(sweep, sweep.parent / "out", warn=warns.append)
    assert warns == []
    return sweep, rep


def load(run: Path, name: str) -> dict:
    return json.loads((run / name).read_text())


def test_tables_match_run_files(real_sweep):
    sweep, rep = real_sweep
    t2, t3, runs_t = rep.tables["table2"], rep.tables["table3"], rep.tables["runs"]
    assert "table4" not in rep.tables and "table5" not in rep.tables  # no zh/code/dna runs
    task_col = f"{TASK} acc_norm (%)"
    for run in sorted(p for p in sweep.iterdir() if p.is_dir()):
        sm, ev = load(run, "summary.json"), load(run, "eval.json")
        (i,) = t2.find(source="measured", run=sm["name"])
        assert t2.value(i, "BPB") == ev["bpb"]["en/val"]
        assert t2.value(i, "GFLOPs/byte") == pytest.approx(sm["flops_per_byte"] / 1e9)
        assert t2.value(i, "train bytes") == sm["bytes_seen"]
        (j,) = runs_t.find(**{"run id": run.name})
        assert runs_t.value(j, "final val BPB") == sm["final_val_bpb"]
        assert runs_t.value(j, "params") == sm["params"]
        if "tasks" in ev:
            assert t2.value(i, task_col) == pytest.approx(100 * ev["tasks"][TASK]["acc_norm"])
            rob = ev["robustness"][TASK]
            (k,) = t3.find(source="measured", run=sm["name"])
            assert t3.value(k, "clean (%)") == pytest.approx(100 * rob["clean"])
            assert t3.value(k, "Drop (%)") == pytest.approx(100 * rob["drop"])
            if rob["score"] is None:  # clean accuracy at or below chance: blank, footnoted
                assert t3.value(k, "Score") is None and t3.rows[k][-1].notes
            else:
                assert t3.value(k, "Score") == pytest.approx(rob["score"])
        else:
            assert t2.value(i, task_col) is None and t2.rows[i][t2.columns.index(task_col)].notes
            (k,) = t3.find(source="measured", run=sm["name"])
            assert t3.value(k, "clean (%)") is None
    ref = t2.find(source="paper (L scale)")
    assert [(t2.value(i, "model"), t2.value(i, "BPB")) for i in ref] == [
        ("LlamaByte", 0.859), ("H-Net 1-stage", 0.755)]
    csv_rows = (rep.out_dir / "tables" / "table2.csv").read_text().splitlines()
    assert len(csv_rows) == len(t2.rows) + 1


def test_figures_show_the_runs(real_sweep):
    sweep, rep = real_sweep
    runs = R.load_sweep(sweep, print)
    by_name = {r.name: r for r in runs}
    ax = F.bpb_vs_bytes(runs).axes[0]
    assert ax.get_xlabel() == "training data (bytes)" and ax.get_xscale() == "log"
    assert len(ax.lines) == 3
    for line in ax.lines:
        run = next(r for r in runs if r.label == line.get_label())
        vals = [m for m in map(json.loads, (run.path / "metrics.jsonl").read_text().splitlines())
                if m.get("split") == "val"]
        assert list(line.get_ydata()) == [m["val_bpb"] for m in vals]
        assert list(line.get_xdata()) == [m["bytes_seen"] for m in vals]

    (fit,) = F.scaling_fits(runs)  # H-Net has two budgets; LlamaByte one
    a, b = by_name["hnet-1stage-3"], by_name["hnet-1stage-6"]
    (c1, y1), (c2, y2) = [(load(r.path, "summary.json")["flops_seen"],
                           load(r.path, "eval.json")["bpb"]["en/val"]) for r in (a, b)]
    assert fit.family == "hnet-1stage" and fit.n == 2
    assert fit.b == pytest.approx(math.log(y2 / y1) / math.log(c2 / c1))
    ax = F.bpb_vs_flops(runs).axes[0]
    assert (ax.get_xscale(), ax.get_yscale(), ax.get_ylabel()) == ("log", "log",
                                                                  "validation BPB (bits/byte)")
    pts = sorted(tuple(p) for coll in ax.collections for p in coll.get_offsets())
    assert len(pts) == 3 and (c1, y1) in pts and (c2, y2) in pts

    ax = F.bytes_per_chunk(runs).axes[0]
    assert len(ax.lines) == 2  # the two H-Net runs, stage 0; LlamaByte has no chunks
    metrics = [json.loads(x) for x in (b.path / "metrics.jsonl").read_text().splitlines()]
    want = [m["stage0/bytes_per_chunk"] for m in metrics if "stage0/bytes_per_chunk" in m]
    line = next(ln for ln in ax.lines if ln.get_label().startswith(b.label))
    assert list(line.get_ydata()) == want

    ax = F.robustness(runs).axes[0]
    assert len(ax.containers) == 1 and len(ax.containers[0]) == 6  # clean + 5 perturbations

    text = rep.report_md.read_text()
    for name in ("bpb_vs_bytes", "bpb_vs_flops", "bytes_per_chunk", "robustness"):
        assert f"figures/{name}.png" in text and (rep.out_dir / "figures" / f"{name}.pdf").is_file()
    assert "hnet-1stage: BPB = " in text
