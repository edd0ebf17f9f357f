"""Report from run directories in the documented format (docs/INTERFACES.md "Run directory").

Run dirs here are written by hand with known numbers, so every table cell and figure series can
be checked exactly; tests/test_report_real.py builds a report from real trained runs.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.colors
import pytest
from hnetbench.config import resolve, save_config
from hnetbench.reports import figures as F
from hnetbench.reports import report as R

PAPER_MD = Path("/work/shared/docs/PAPER.md")


def make_run(
    root: Path,
    run_id: str,
    preset: str,
    domain: str = "en",
    *,
    summary: dict | None = None,
    metrics: list[dict] | None = None,
    eval_: dict | None = None,
    status: dict | None = None,
    name: str | None = None,
) -> Path:
    d = root / run_id
    d.mkdir(parents=True)
    cfg = resolve(base={"preset": preset, "name": name or run_id, "data": {"domain": domain}})
    save_config(cfg, d / "config.yaml")
    if summary is not None:
        (d / "summary.json").write_text(
            json.dumps({"status": "completed", "domain": domain, **summary})
        )
    if metrics is not None:
        (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    if eval_ is not None:
        (d / "eval.json").write_text(json.dumps(eval_))
    (d / "status.json").write_text(json.dumps(status or {"state": "completed", "attempts": 1}))
    return d


def curve(
    bpbs: list[float],
    step_bytes: float = 1e5,
    flops_per_byte: float = 1e6,
    chunk: list[float] | None = None,
) -> list[dict]:
    out = []
    for i, b in enumerate(bpbs, 1):
        line = {
            "step": i * 10,
            "loss": b,
            "bytes_seen": i * step_bytes,
            "flops_seen": 3 * flops_per_byte * i * step_bytes,
        }
        if chunk is not None:
            line["stage0/bytes_per_chunk"] = chunk[i - 1]
        out += [line, {"step": i * 10, "split": "val", "val_bpb": b, "bytes_seen": i * step_bytes}]
    return out


def power_law_bpb(c: float) -> float:
    return 2.0 * c**-0.05


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    root.mkdir()
    (root / "spec.yaml").write_text("name: demo\naxes: {grid: {preset: [a, b]}}\n")
    # Two transformer budgets + two H-Net budgets whose final BPB follows 2 * C^-0.05 exactly.
    for i, (preset, flops) in enumerate(
        [
            ("transformer-bpe@cpu-tiny", 1e12),
            ("transformer-bpe@cpu-tiny", 4e12),
            ("hnet-1stage@cpu-tiny", 1e12),
            ("hnet-1stage@cpu-tiny", 8e12),
        ]
    ):
        bpb = power_law_bpb(flops)
        tasks = {
            "hellaswag": {
                "acc,none": 0.30 + i / 100,
                "acc_norm,none": 0.31 + i / 100,
                "acc_stderr,none": 0.01,
            }
        }
        if i != 1:  # run 1 lacks piqa: a blank cell with a footnote, no zero
            tasks["piqa"] = {"acc": 0.55 + i / 100}
        rob = None
        if preset.startswith("hnet"):
            rob = {
                "hellaswag": {
                    "clean": 0.40,
                    "antspeak": 0.30,
                    "drop": 0.28,
                    "random_case": 0.33,
                    "repeat": 0.29,
                    "uppercase": 0.35,
                    "score": 37.5 + i,
                }
            }
        ev = {"bpb": {"en/val": bpb}, "tasks": tasks}
        if rob:
            ev["robustness"] = rob
        if preset.startswith("hnet"):
            ev["bytes_per_chunk"] = {"stage0": 5.5 + i}
        make_run(
            root,
            f"run{i}",
            preset,
            name=f"{preset.split('@')[0]}-{int(flops):d}",
            summary={
                "steps": 40,
                "bytes_seen": 4e5,
                "flops_seen": flops,
                "params": 3e5 + i,
                "flops_per_byte": 2.5e6 * (i + 1),
                "final_val_bpb": bpb + 0.1,
                "wall_s": 12.0,
                "family": preset.split("@")[0],
            },
            metrics=curve([3.0, 2.5, 2.2, bpb], chunk=[2.0, 3.0, 4.0, 5.0] if i >= 2 else None),
            eval_=ev,
        )
    make_run(
        root,
        "runL",
        "hnet-1stage@paper-L",
        summary={
            "steps": 1,
            "bytes_seen": 1e3,
            "flops_seen": 5e15,
            "flops_per_byte": 4.3e8,
            "final_val_bpb": 1.5,
        },
        eval_={"bpb": {"en/val": 1.4}, "tasks": {"hellaswag": {"acc_norm": 0.26}}},
        status={"state": "failed", "error": "OOM\nTraceback..."},
    )
    make_run(
        root,
        "runzh",
        "hnet-2stage@cpu-tiny",
        domain="zh",
        summary={"final_val_bpb": 1.9},
        metrics=curve([2.5, 2.0], chunk=[3.0, 4.0]),
        eval_={
            "bpb": {"zh/val": 1.8},
            "bytes_per_chunk": {"stage0": 3.1, "stage1": 8.2},
            "tasks": {"xwinograd_zh": {"acc": 0.52}, "hellaswag": {"acc": 0.3}},
        },
    )
    make_run(
        root,
        "runcode",
        "transformer-bpe@cpu-tiny",
        domain="code",
        summary={"final_val_bpb": 1.2},
        metrics=curve([2.0, 1.3]),
    )
    make_run(
        root,
        "rundna",
        "hnet-dna@cpu-tiny",
        domain="dna",
        summary={"params": 1e5},
        eval_={"bpb": {"dna/val": 1.9}, "ppl_per_bp": {"dna/val": 3.7}},
        metrics=curve([2.0, 1.95]),
    )
    return root


def rows_of(t: R.Table, **match) -> list[int]:
    return t.find(**match)


def notes_of(t: R.Table, row: int, col: str) -> list[str]:
    cell = t.rows[row][t.columns.index(col)]
    return [t.notes[i - 1] for i in getattr(cell, "notes", ())]


def test_paper_numbers_match_paper_md():
    """Every number of Tables 2 and 3 in the JSON equals PAPER.md's (transcription check)."""
    if not PAPER_MD.is_file():
        pytest.skip("PAPER.md not on this machine")
    text = PAPER_MD.read_text()
    p = R.paper_numbers()
    labels = {v["label"]: k for k, v in p["families"].items()}
    labels.update({"LlamaByte (W1024)": "llamabyte"})
    checked = 0
    for table, keys in (
        (
            "## Table 2",
            [
                "gflops_per_byte",
                "bpb",
                "lambada",
                "hellaswag",
                "piqa",
                "arc_easy",
                "arc_challenge",
                "winogrande",
                "openbookqa",
                "avg",
            ],
        ),
        ("## Table 3", ["antspeak", "drop", "randomcase", "repeat", "uppercase", "avg", "score"]),
    ):
        block = text.split(table, 1)[1].split("\n## ", 1)[0]
        for line in block.splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) < 3 or cells[0] not in ("L", "XL"):
                continue
            row = p["table" + table[-1]]["rows"][cells[0]][labels[cells[1]]]
            assert [row[k] for k in keys] == [float(c) for c in cells[2:]], line
            checked += 1
    assert checked == 15 + 14
    assert p["table4"]["rows"]["XL"]["hnet-2stage"]["zh"]["bpb"] == 0.7032
    assert p["table5"]["rows"]["DNA"]["H-Net M3T1 + M15 + M4"]["ppl"] == 2.697


def test_table2_numbers_paper_rows_and_blanks(sweep: Path):
    warns: list[str] = []
    runs = R.load_sweep(sweep, warns.append)
    assert warns == []
    t = R.table2(runs)
    assert t is not None
    for r in (r for r in runs if r.domain == "en"):
        (i,) = rows_of(t, source="measured", run=r.name)
        ev = json.loads((r.path / "eval.json").read_text())
        sm = json.loads((r.path / "summary.json").read_text())
        assert t.value(i, "BPB") == ev["bpb"]["en/val"]
        assert t.value(i, "GFLOPs/byte") == pytest.approx(sm["flops_per_byte"] / 1e9)
        hs = ev["tasks"]["hellaswag"].get("acc_norm,none", ev["tasks"]["hellaswag"].get("acc_norm"))
        assert t.value(i, "hellaswag acc_norm (%)") == pytest.approx(100 * hs)
    # run1 has no piqa: blank + footnote, and no Avg (never a zero)
    (i,) = rows_of(t, run="transformer-bpe-4000000000000")
    assert t.value(i, "piqa acc (%)") is None
    assert notes_of(t, i, "piqa acc (%)") == ["task not evaluated for this run"]
    assert t.value(i, "Avg (%)") is None
    (i,) = rows_of(t, run="transformer-bpe-1000000000000")
    assert t.value(i, "Avg (%)") == pytest.approx((31 + 55) / 2)
    # the paper-L run: its paper row stands right after it, labelled "paper"
    (i,) = rows_of(t, run="runL")
    assert t.value(i + 1, "source") == "paper"
    assert (t.value(i + 1, "BPB"), t.value(i + 1, "hellaswag acc_norm (%)")) == (0.755, 55.5)
    assert "state: failed" in notes_of(t, i, "source")[0]
    # cpu-tiny families: one "paper (L scale)" reference row each, at the end
    ref = rows_of(t, source="paper (L scale)")
    assert [t.value(j, "model") for j in ref] == ["Transformer", "H-Net 1-stage"]
    assert ref[-1] == len(t.rows) - 1 and t.value(ref[0], "BPB") == 0.756
    # paper Avg over the 2 shown tasks, recomputed from paper numbers and footnoted
    assert t.value(ref[0], "Avg (%)") == pytest.approx((54.5 + 72.3) / 2)
    md = re.sub(r" +", " ", t.to_markdown())  # pandas pads columns to equal widths
    assert "| paper (L scale) | Transformer | L |" in md and "[1]" in md


def test_tables_3_4_5(sweep: Path):
    runs = R.load_sweep(sweep, print)
    t3 = R.table3(runs)
    assert t3.columns[5:] == [
        "clean (%)",
        "AntSpeak (%)",
        "Drop (%)",
        "RandomCase (%)",
        "Repeat (%)",
        "UpperCase (%)",
        "Avg (%)",
        "Score",
        "chance (%)",
        "clean 95% CI (%)",
        "n",
    ]
    (i,) = rows_of(t3, source="measured", run="hnet-1stage-8000000000000")
    assert t3.value(i, "RandomCase (%)") == pytest.approx(33.0)
    assert t3.value(i, "Avg (%)") == pytest.approx((30 + 28 + 33 + 29 + 35) / 5)
    assert t3.value(i, "Score") == 40.5
    (j,) = rows_of(t3, run="transformer-bpe-1000000000000")
    assert t3.value(j, "clean (%)") is None
    assert notes_of(t3, j, "clean (%)") == ["no robustness results in eval.json"]
    (k,) = rows_of(t3, source="paper (L scale)", model="H-Net 1-stage")
    assert (t3.value(k, "UpperCase (%)"), t3.value(k, "Avg (%)"), t3.value(k, "Score")) == (
        54.1,
        36.4,
        37.2,
    )

    t4 = R.table4(runs)
    (i,) = rows_of(t4, source="measured", domain="zh")
    assert (t4.value(i, "BPIC"), t4.value(i, "BPB"), t4.value(i, "main")) == (8.2, 1.8, "T2")
    assert t4.value(i, "xwinograd_zh acc (%)") == pytest.approx(52.0)
    assert t4.value(i, "hellaswag acc (%)") == pytest.approx(30.0)  # every task the runs have
    (c,) = rows_of(t4, source="measured", domain="code")
    # no eval.json: BPB falls back to the summary (footnoted); BPE model has no BPIC -> blank
    assert t4.value(c, "BPB") == 1.2 and "final validation BPB" in notes_of(t4, c, "BPB")[0]
    assert t4.value(c, "BPIC") is None and notes_of(t4, c, "BPIC")
    assert t4.value(c, "xwinograd_zh acc (%)") is None
    assert notes_of(t4, c, "xwinograd_zh acc (%)") == ["task not evaluated for this run"]
    pz = rows_of(t4, source="paper (XL-like)", domain="zh", model="H-Net 2-stage")
    assert [t4.value(pz[0], k) for k in ("BPIC", "BPB", "xwinograd_zh acc (%)")] == [
        5.81,
        0.7032,
        66.3,
    ]

    t5 = R.table5(runs)
    (i,) = rows_of(t5, source="measured")
    assert t5.value(i, "ppl") == 3.7  # the evaluator's ppl_per_bp
    runs[-1].eval.pop("ppl_per_bp")
    t5 = R.table5(runs)
    assert t5.value(i, "ppl") == pytest.approx(2**1.9)  # else 2 ** BPB, footnoted
    assert notes_of(t5, i, "ppl") == ["ppl = 2 ** BPB (one byte per base pair)"]
    assert [t5.value(j, "model") for j in rows_of(t5, source="paper (HG38)")] == [
        "H-Net M3T1 + T15 + M4"
    ]


def test_csv_and_latex_round_trip(sweep: Path):
    t = R.table2(R.load_sweep(sweep, print))
    rows = list(csv.DictReader(io.StringIO(t.to_csv())))
    assert len(rows) == len(t.rows)
    r0 = rows[0]
    assert float(r0["BPB"]) == t.value(0, "BPB")  # full precision, not the rounded display
    blank = next(r for r in rows if r["run"] == "transformer-bpe-4000000000000")
    assert blank["piqa acc (%)"] == "" and "task not evaluated" in blank["notes"]
    tex = t.to_latex()
    assert "\\begin{tabular}" in tex and "acc\\_norm (\\%)" in tex and "$^{" in tex
    assert R._tex("a_b{c}\\%") == "a\\_b\\{c\\}\\textbackslash{}\\%"


def test_corrupt_files_warn_once_and_report_goes_on(sweep: Path, tmp_path: Path):
    (sweep / "run0" / "eval.json").write_text('{"bpb": {"en/val": 1.')  # killed mid-write
    with open(sweep / "run2" / "metrics.jsonl", "a") as f:
        f.write('{"step": 99, "val_b\n')
    (sweep / "runL" / "config.yaml").write_text("preset: [unclosed\n")
    warns: list[str] = []
    rep = R.build_report(sweep, tmp_path / "out", warn=warns.append)
    assert len(warns) == 3 and all("\n" not in w for w in warns)
    assert any(str(sweep / "run0" / "eval.json") in w and "corrupt JSON" in w for w in warns)
    assert any("metrics.jsonl: 1 corrupt line(s) (first: line 9)" in w for w in warns)
    assert any("config.yaml: corrupt YAML" in w for w in warns)
    t = rep.tables["table2"]
    (i,) = t.find(run="transformer-bpe-1000000000000")
    sm = json.loads((sweep / "run0" / "summary.json").read_text())
    assert t.value(i, "BPB") == sm["final_val_bpb"]  # fell back, with a footnote
    assert t.value(i, "hellaswag acc_norm (%)") is None
    text = rep.report_md.read_text()
    assert "## Warnings" in text and "corrupt JSON" in text


def test_figures_axes_and_series(sweep: Path):
    runs = R.load_sweep(sweep, print)
    fig = F.bpb_vs_bytes(runs)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == [
        "domain: en",
        "domain: zh",
        "domain: code",
        "domain: dna",
    ]
    en = axes[0]
    assert en.get_xscale() == "log"
    assert (
        en.get_xlabel() == "training data (bytes)"
        and en.get_ylabel() == "validation BPB (bits/byte)"
    )
    en_runs = [r for r in runs if r.domain == "en" and r.val_points()]
    assert len(en.lines) == len(en_runs) == 4
    for line, r in zip(en.lines, en_runs):
        assert list(line.get_xdata()) == [p[0] for p in r.val_points()]
        assert list(line.get_ydata()) == [p[1] for p in r.val_points()]
        assert line.get_color() == F.family_color(r.family)

    fits = F.scaling_fits(runs)
    assert [(f.domain, f.family, f.n) for f in fits] == [
        ("en", "hnet-1stage", 2),
        ("en", "transformer-bpe", 2),
    ]
    for f in fits:
        assert f.b == pytest.approx(-0.05) and f.a == pytest.approx(2.0)
    fig = F.bpb_vs_flops(runs)
    ax = fig.axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert ax.get_xlabel() == "training compute (FLOPs)"
    assert len(ax.lines) == 2  # one fitted line per family with >= 2 budgets
    xs, ys = ax.lines[0].get_data()
    assert ys == pytest.approx([power_law_bpb(x) for x in xs])
    pts = sorted(tuple(p) for coll in ax.collections for p in coll.get_offsets())
    # the failed paper-L run (5e15 FLOPs) is left out: its FLOPs are not a finished budget
    assert pts == sorted(
        [
            (1e12, power_law_bpb(1e12)),
            (4e12, power_law_bpb(4e12)),
            (1e12, power_law_bpb(1e12)),
            (8e12, power_law_bpb(8e12)),
        ]
    )

    fig = F.bytes_per_chunk(runs)
    ax = fig.axes[0]
    assert (
        ax.get_ylabel() == "bytes per chunk (bytes)" and ax.get_xlabel() == "training data (bytes)"
    )
    labels = [ln.get_label() for ln in ax.lines]
    assert labels == [
        "hnet-1stage@cpu-tiny (hnet-1stage-1000000000000) stage 0",
        "hnet-1stage@cpu-tiny (hnet-1stage-8000000000000) stage 0",
        "hnet-2stage@cpu-tiny [zh] stage 0",
    ]
    assert list(ax.lines[0].get_ydata()) == [2.0, 3.0, 4.0, 5.0]

    fig = F.robustness(runs)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "accuracy (%)"
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "clean",
        "AntSpeak",
        "Drop",
        "RandomCase",
        "Repeat",
        "UpperCase",
    ]
    assert len(ax.containers) == 2  # one bar group per run with robustness
    assert [b.get_height() for b in ax.containers[0]] == pytest.approx([40, 30, 28, 33, 29, 35])
    hnet_rgb = matplotlib.colors.to_rgb(F.family_color("hnet-1stage"))
    for bars in ax.containers:  # both runs are H-Net 1-stage: same colour, the second hatched
        assert bars[0].get_facecolor()[:3] == pytest.approx(hnet_rgb)
    assert [bars[0].get_hatch() for bars in ax.containers] == [None, "//"]


def test_cli_writes_linked_report(sweep: Path, tmp_path: Path):
    out = tmp_path / "rep"
    bnd = sweep / "run2" / "boundaries"
    bnd.mkdir()
    (bnd / "stage0.png").write_bytes(b"\x89PNG fake")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "hnetbench",
            "report",
            str(sweep),
            "--out",
            str(out),
            "--formats",
            "md,csv",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    text = (out / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert links and all((out / link).is_file() for link in links)
    for key in ("runs", "table2", "table3", "table4", "table5"):
        assert f"tables/{key}.md" in links and f"tables/{key}.csv" in links
        assert not (out / "tables" / f"{key}.tex").exists()
    for fig in ("bpb_vs_bytes", "bpb_vs_flops", "bytes_per_chunk", "robustness"):
        assert f"figures/{fig}.png" in links and f"figures/{fig}.pdf" in links
        assert (out / "figures" / f"{fig}.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / "figures" / f"{fig}.pdf").read_bytes()[:4] == b"%PDF"
    assert "../sweep/run2/boundaries/stage0.png" in links
    assert "name: demo" in text  # the sweep spec
    assert "torch" in text and "cores" in text
    assert "BPB = 2 * C^(-0.0500)" in text


@pytest.mark.parametrize(
    "args,needle",
    [
        (["nope"], "sweep directory not found"),
        (["{empty}"], "no run directories"),
        (["{empty}", "--formats", "md,html"], "unknown format 'html'"),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, args: list[str], needle: str):
    (tmp_path / "empty").mkdir()
    args = [
        a.replace("{empty}", str(tmp_path / "empty")).replace("nope", str(tmp_path / "nope"))
        for a in args
    ]
    p = subprocess.run(
        [sys.executable, "-m", "hnetbench", "report", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and needle in p.stderr


def test_table3_uses_eval_avg_na_chance_and_interval(tmp_path: Path):
    from hnetbench.reports.runs import Run

    rob = {"clean": 0.6, "antspeak": 0.4, "drop": 0.5, "randomcase": None, "repeat": 0.45,
           "uppercase": None, "na": ["randomcase", "uppercase"], "avg": 0.45, "chance": 0.25,
           "score": 0.571, "ci95": {"n": 200, "method": "normal approximation",
                                    "clean": [0.532, 0.668]}}
    run = Run(run_id="r1", path=tmp_path / "r1", config={"name": "zhrun"},
              eval={"robustness": {"hnb_cont_zh": rob}}, family="hnet-1stage",
              scale="cpu-tiny", domain="zh", label="zhrun")
    en = Run(run_id="r2", path=tmp_path / "r2", config={"name": "enrun"},
             eval={"robustness": {"hnb_cont_en": {
                 "clean": 0.6, "antspeak": 0.4, "drop": 0.5, "randomcase": 0.3, "repeat": 0.45,
                 "uppercase": 0.35, "na": [], "avg": 0.4, "chance": 0.25, "score": 0.4}}},
             family="hnet-1stage", scale="cpu-tiny", domain="en", label="enrun")
    assert "RandomCase (%)" not in R.table3([run]).columns  # n/a everywhere: no column
    t3 = R.table3([run, en])
    (i,) = rows_of(t3, source="measured", run="zhrun")
    assert t3.value(i, "Avg (%)") == pytest.approx(45.0)  # eval.json's, n/a excluded
    assert t3.value(i, "RandomCase (%)") is None
    assert "n/a" in notes_of(t3, i, "RandomCase (%)")[0]
    assert t3.value(i, "chance (%)") == pytest.approx(25.0) and t3.value(i, "n") == 200
    assert t3.value(i, "clean 95% CI (%)") == "[53.2, 66.8]"
    rob["ci95"]["drop"] = [0.431, 0.569]  # each perturbed accuracy carries its interval too
    t3 = R.table3([run, en])
    (i,) = rows_of(t3, source="measured", run="zhrun")
    assert notes_of(t3, i, "Drop (%)") == ["zhrun, hnb_cont_zh Drop: 95% CI [43.1, 56.9], n=200"]


def test_task_accuracy_cells_carry_their_95_interval(tmp_path: Path):
    from hnetbench.reports.runs import Run

    ev = {"tasks": {"hnb_cont_en": {"acc": 0.6, "ci95": {"n": 200, "method": "normal",
                                                         "acc": [0.532, 0.668]}}}}
    run = Run(run_id="r1", path=tmp_path / "r1", config={"name": "enrun"}, eval=ev,
              family="hnet-1stage", scale="cpu-tiny", domain="en", label="enrun")
    t2 = R.table2([run])
    (i,) = rows_of(t2, source="measured")
    col = next(c for c in t2.columns if c.startswith("hnb_cont_en"))
    assert t2.value(i, col) == pytest.approx(60.0)
    assert notes_of(t2, i, col) == ["enrun, hnb_cont_en acc: 95% CI [53.2, 66.8], n=200 (normal)"]


def test_bpb_cells_carry_their_interval_over_test_documents(tmp_path: Path):
    from hnetbench.reports.runs import Run

    ev = {"bpb": {"zh/test": 2.5}, "bpb_ci95": {"zh/test": {"bpb": [2.41, 2.59], "n": 9,
                                                            "method": "t"}}}
    cfg = {"name": "zhrun", "eval": {"bpb_split": "test"}}
    run = Run(run_id="r1", path=tmp_path / "r1", config=cfg, eval=ev, family="hnet-1stage",
              scale="cpu-tiny", domain="zh", label="zhrun")
    t4 = R.table4([run])
    (i,) = rows_of(t4, source="measured")
    assert t4.value(i, "BPB") == pytest.approx(2.5)
    assert notes_of(t4, i, "BPB") == [
        "zhrun, BPB: 95% CI [2.410, 2.590] over n=9 test documents (t); seeds vary it too: see "
        "the BPB table"]
    # an eval.json from before the interval existed: the value, no footnote, nothing invented
    del ev["bpb_ci95"]
    t4 = R.table4([run])
    (i,) = rows_of(t4, source="measured")
    assert t4.value(i, "BPB") == pytest.approx(2.5) and notes_of(t4, i, "BPB") == []
