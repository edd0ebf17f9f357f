"""Local jobs forked from the preloaded zygote (sweeps/zygote.py) behave as fresh processes:
bit-identical training, the runner's thread share, their own pid, and a dead zygote costs only
the jobs it carried (later jobs start afresh, a rerun resumes the lost one)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hnetbench.sweeps.state import read_status

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY = {  # a tiny byte Transformer (as in test_sweeps.py): a job is a few seconds of training
    "preset": "llamabyte@cpu-tiny",
    "data": {"domain": "en", "seq_len": 64, "batch_size": 2},
    "train": {"steps": 4, "ckpt_every": 2, "eval_every": 0, "eval_batches": 1, "log_every": 1,
              "device": "cpu"},
}


def write_spec(path: Path, name: str, base: dict = TINY, **extra) -> Path:
    path.write_text(yaml.safe_dump({"name": name, "base": base, **extra}), encoding="utf-8")
    return path


def run_dirs(results: Path, name: str) -> list[Path]:
    return sorted(p for p in (results / name).iterdir() if (p / "config.yaml").exists())


def sweep(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hnetbench", "sweep", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=600)


def _losses(run_dir: Path) -> list[float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r and "split" not in r]


@pytest.mark.slow
def test_forked_jobs_train_exactly_as_fresh_processes(tmp_path):
    spec = dict(axes={"grid": {"train.seed": [0, 1]}}, eval={"bpb": False})
    got = {}
    for mode in ("1", "0"):
        d = tmp_path / mode
        d.mkdir()
        p = write_spec(d / "s.yaml", "z", **spec)
        env = {**ENV, "HNETBENCH_ZYGOTE": mode}
        res = subprocess.run([sys.executable, "-m", "hnetbench", "sweep", "run", str(p),
                              "--max-parallel", "2"], cwd=d, env=env, capture_output=True,
                             text=True, timeout=600)
        assert res.returncode == 0, res.stdout + res.stderr
        runs = run_dirs(d / "results", "z")
        for rd in runs:
            st = read_status(rd)
            assert st["state"] == "completed" and st["torch_threads"] == max(
                1, len(os.sched_getaffinity(0)) // 2), st
            assert "step 4/4" in (rd / "job.log").read_text()
        pids = {read_status(rd)["pid"] for rd in runs}
        how = ", forked" if mode == "1" else ""
        assert len(pids) == 2 and all(f"(pid {pid}{how})" in res.stdout for pid in pids), res.stdout
        got[mode] = {json.loads((rd / "job.json").read_text())["label"]: _losses(rd)
                     for rd in runs}
    assert got["1"] == got["0"] and all(len(v) == 4 for v in got["1"].values())


def _zygote_pid(runner: int) -> int | None:
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(runner)], capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        pid, args = line.strip().split(None, 1)
        if "zygote" in args:
            return int(pid)
    return None


@pytest.mark.slow
def test_dead_zygote_loses_its_jobs_only(tmp_path):
    base = {**TINY, "train": {**TINY["train"], "steps": 2000, "ckpt_every": 2}}
    p = write_spec(tmp_path / "s.yaml", "dz", base=base, eval={"bpb": False},
                   axes={"zip": [{"train.seed": [0, 1], "train.steps": [2000, 4]}]})
    runner = subprocess.Popen([sys.executable, "-m", "hnetbench", "sweep", "run", str(p),
                               "--max-parallel", "1"], cwd=tmp_path, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    results = tmp_path / "results"
    deadline = time.time() + 200
    while time.time() < deadline:  # the long run is training and has a checkpoint
        time.sleep(0.5)
        dirs = run_dirs(results, "dz") if (results / "dz").is_dir() else []
        if any(any((d / "ckpt").glob("step_*")) for d in dirs):
            break
    else:
        runner.kill()
        pytest.fail("the job never started training")
    zygote = _zygote_pid(runner.pid)
    assert zygote is not None
    job_pid = next(read_status(d)["pid"] for d in dirs if any((d / "ckpt").glob("step_*")))
    os.kill(zygote, signal.SIGKILL)
    out = runner.communicate(timeout=300)[0]
    assert runner.returncode == 1, out  # the lost job counts as failed
    assert "zygote exited" in out and "later jobs start afresh" in out, out
    with pytest.raises(ProcessLookupError):
        os.kill(job_pid, 0)  # died with the zygote (PR_SET_PDEATHSIG)
    by_label = {json.loads((d / "job.json").read_text())["label"]: d
                for d in run_dirs(results, "dz")}
    assert read_status(by_label["seed=1,steps=4"])["state"] == "completed"  # started afresh
    lost = by_label["seed=0,steps=2000"]
    assert read_status(lost)["state"] == "running"  # stale: `sweep run` resumes it
    res = sweep("status", str(p), cwd=tmp_path)
    assert "interrupted" in res.stdout
