"""`hnetbench reproduce --spec`: a real tiny sweep (the selected runs' jobs run their robustness
eval), its cool-down branch phase, the robustness catch-up phase, then the report, all through
the local executor; a rerun has nothing left to do, or only the robustness a run lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hnetbench import cli
from hnetbench.reports import report as R
from hnetbench.sweeps.cost import code_commit

pytestmark = pytest.mark.slow

SPEC = """\
name: tiny-repro
base:
  data: {seq_len: 64, batch_size: 2}
  train: {steps: 8, warmup_frac: 0.125, decay_frac: 0.25, ckpt_every: 3, keep_last: 0,
          eval_every: 0, eval_batches: 1, log_every: 4, device: cpu}
  eval: {bpb_max_bytes: 512}
axes:
  zip:
    - preset: [transformer-bpe@cpu-tiny, hnet-1stage@cpu-tiny]
match: null
eval: {bpb: true, splits: [test], tasks: [], robustness: false}
robustness: {domains: [en], seeds: [0], limit: 3}
branch: {fractions: [0.5], domains: [en], seeds: [0]}
"""


def test_reproduce_runs_branches_robustness_and_report(tmp_path: Path, capsys):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(SPEC)
    argv = ["reproduce", "--spec", str(spec), "--results", str(tmp_path / "res")]
    assert cli.main(argv) == 0
    sweep = tmp_path / "res" / "tiny-repro"
    runs = R.load_sweep(sweep, print)
    assert len(runs) == 4 and all(r.state == "completed" for r in runs)
    branches = [r for r in runs if (r.path / "branch.json").is_file()]
    assert len(branches) == 2
    for b in branches:
        info = json.loads((b.path / "branch.json").read_text())
        assert info["fraction"] == 0.5 and info["from_step"] == 3 and info["total_steps"] == 4
        assert b.summary["steps"] == 4 and "bpb" in b.eval  # evaluated like any run
    for r in runs:
        if r not in branches:
            assert "robustness" in r.eval, r.name  # English seed 0: done by the run's job
            assert "| AntSpeak |" in (r.path / "job.log").read_text(), r.name
    md = (sweep / "report.md").read_text()
    assert md.index("Claims of the paper") < md.index("Held-out BPB with 95% intervals")
    bpb = R.build_report(sweep, tmp_path / "out", warn=lambda m: None).tables["bpb"]
    for model in ("Transformer", "H-Net 1-stage"):  # the branch's budget and the full one
        budgets = sorted(bpb.value(i, "train bytes") for i in bpb.find(model=model))
        # (a BPE step holds whole tokens: its bytes are within ~10% of nominal at this size)
        assert budgets == [pytest.approx(4 * 128.0, rel=0.1), pytest.approx(8 * 128.0, rel=0.1)]
    out = capsys.readouterr().out
    assert "tiny-repro/branches: 2 runs, 2 to run" in out
    assert "tiny-repro/robustness: 0 runs to evaluate" in out  # the jobs did it
    # what it cost: each job's training leg and evals, adding up to cost.json
    [cost] = json.loads((sweep / "cost.json").read_text())["invocations"]
    assert f"cost: {cost['cpu_s']:,.0f} CPU-s" in out
    legs = {r.name: json.loads((r.path / "status.json").read_text()) for r in runs}
    for r in runs:
        st = legs[r.name]
        # a branch trains only its steps after the checkpoint it starts from (1 of its 4)
        assert st["leg_bytes"] == (r.summary["bytes_seen"] if r not in branches
                                   else pytest.approx(r.summary["bytes_seen"] / 4, rel=0.3))
        assert 0 < st["train_cpu_s"] < st["job_cpu_s"]
        assert set(st["eval_cpu_s"]) == ({"bpb/test"} if r in branches
                                         else {"bpb/test", "robustness"})
    assert cost["jobs"] == 4 and cost["scope"] == "process tree"
    assert cost["commit"] == code_commit()
    assert cost["bytes_trained"] == sum(st["leg_bytes"] for st in legs.values())
    assert cost["training_cpu_s"] == pytest.approx(
        sum(st["train_cpu_s"] for st in legs.values()), abs=0.1)
    assert cost["outside_jobs_cpu_s"] > 0  # the runner, the zygote, the report
    assert cost["cpu_s"] > cost["training_cpu_s"] + sum(cost["eval_cpu_s"].values())
    # a rerun: every run, branch and eval is already there
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "2 runs, 0 to run" in out and "tiny-repro/robustness: 0 runs to evaluate" in out
    first, again = json.loads((sweep / "cost.json").read_text())["invocations"]
    assert first == cost and again["jobs"] == 0 and again["bytes_trained"] == 0
    # a run whose robustness eval is missing (a failed eval, an older run) is caught up
    lost = next(r for r in runs if r not in branches)
    ev = json.loads((lost.path / "eval.json").read_text())
    del ev["robustness"]
    (lost.path / "eval.json").write_text(json.dumps(ev))
    assert cli.main(argv) == 0
    assert "tiny-repro/robustness: 1 runs to evaluate" in capsys.readouterr().out
    assert "robustness" in json.loads((lost.path / "eval.json").read_text())


def test_cost_falls_back_to_the_jobs_records_when_they_exceed_the_process_tree():
    """Jobs an executor ran outside this process's waited-for children (submitit's daemons,
    Slurm) are not in getrusage: the total is then the jobs' own records, never less."""
    from hnetbench.sweeps.cost import summarize

    jobs = [{"job_cpu_s": 10.0, "train_cpu_s": 8.0, "leg_bytes": 4000,
             "eval_cpu_s": {"bpb/test": 1.5}},
            {"job_cpu_s": 5.0, "train_cpu_s": 4.0, "leg_bytes": 1000, "eval_cpu_s": {}}]
    tree = summarize(jobs, 20.0, 1.0)
    assert tree["scope"] == "process tree" and tree["cpu_s"] == 20.0
    assert tree["outside_jobs_cpu_s"] == 5.0 and tree["jobs_other_cpu_s"] == 1.5
    assert tree["us_per_trained_byte"] == 20.0 / 5000 * 1e6
    low = summarize(jobs, 3.0, 1.0)
    assert low["scope"] == "jobs' own records" and low["cpu_s"] == 15.0
    assert low["outside_jobs_cpu_s"] is None


def test_cost_names_the_commit_of_this_checkout():
    import subprocess

    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    if head.returncode:
        pytest.skip("not a git checkout")
    commit = code_commit()
    assert commit is not None and head.stdout.startswith(commit.removesuffix("+changes"))
    assert len(commit.removesuffix("+changes")) == 12
