"""Sweep runner: spec errors, dry-run plan, real jobs through submitit's local cluster, a killed
runner resumed, two concurrent runners, Slurm submission (with stand-in sbatch/scancel)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hnetbench.config import ConfigError
from hnetbench.sweeps.spec import expand, load_spec
from hnetbench.sweeps.state import RunLock, read_status

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# a tiny byte Transformer: a job is a few seconds of training (plus Python/torch start-up)
TINY = {
    "preset": "llamabyte@cpu-tiny",
    "data": {"domain": "en", "seq_len": 64, "batch_size": 2},
    "train": {"steps": 4, "ckpt_every": 2, "eval_every": 0, "eval_batches": 1, "log_every": 1,
              "device": "cpu"},
    "eval": {"bpb_max_bytes": 1500},
}


def write_spec(path: Path, name: str, base: dict = TINY, **extra) -> Path:
    spec = {"name": name, "base": base, **extra}
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def sweep(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "hnetbench", "sweep", *args], cwd=cwd, env=ENV,
                         capture_output=True, text=True, timeout=600)
    if check:
        assert res.returncode == 0, res.stdout + res.stderr
    return res


def run_dirs(results: Path, name: str) -> list[Path]:
    return sorted(p for p in (results / name).iterdir() if (p / "config.yaml").exists())


def train_steps(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["step"] for x in lines if '"split"' not in x]


# ----------------------------------------------------------------------------- spec


@pytest.mark.parametrize("bad, needle", [
    ({"axes": {"grid": {"model.smothing": [True, False]}}}, "axes.grid.model.smothing"),
    ({"axes": {"grid": {"train.seed": 3}}}, "axes.grid.train.seed: expected a non-empty list"),
    ({"axes": {"zip": [{"train.seed": [0, 1], "data.domain": ["en"]}]}}, "axes.zip[0]: zipped"),
    ({"slurm": {"partiton": "gpu"}}, "unknown config key 'slurm.partiton'"),
    ({"slurm": {"nodes": "two"}}, "slurm.nodes: expected an integer"),
    ({"match": {"group_by": ["data.domian"]}}, "match.group_by.data.domian"),
    ({"axes": {"grid": {"model": [1]}}}, "vary single keys"),
    ({"evals": {}}, "unknown config key 'evals'"),
])
def test_malformed_spec_gives_one_line_naming_the_key(tmp_path, bad, needle):
    p = write_spec(tmp_path / "s.yaml", "bad", **bad)
    with pytest.raises(ConfigError) as e:
        load_spec(p)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg and str(p) in msg


def test_bad_axis_value_names_the_run_and_key(tmp_path):
    p = write_spec(tmp_path / "s.yaml", "bad", axes={"grid": {"model.smoothing": [True, 3]}})
    with pytest.raises(ConfigError, match=r"run smoothing=3: model.smoothing: expected true/false"):
        expand(load_spec(p))


def test_cli_reports_spec_error_in_one_line(tmp_path):
    p = write_spec(tmp_path / "s.yaml", "bad", axes={"grid": {"train.sed": [0, 1]}})
    res = sweep("run", str(p), "--dry-run", cwd=tmp_path, check=False)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "axes.grid.train.sed" in res.stderr


def test_expansion_grid_times_zip_and_stable_ids(tmp_path):
    p = write_spec(tmp_path / "s.yaml", "grid", axes={
        "grid": {"train.seed": [0, 1]},
        "zip": [{"data.seq_len": [64, 128], "train.lr": [1e-3, 2e-3]}]})
    runs = expand(load_spec(p))
    assert len(runs) == 4 and len({r.run_id for r in runs}) == 4
    assert {(r.cfg.train.seed, r.cfg.data.seq_len, r.cfg.train.lr) for r in runs} == {
        (s, n, lr) for s in (0, 1) for n, lr in ((64, 1e-3), (128, 2e-3))}
    assert [r.run_id for r in expand(load_spec(p))] == [r.run_id for r in runs]


def test_dry_run_plan_with_compute_matching(tmp_path):
    base = {"data": {"domain": "en", "seq_len": 256, "batch_size": 4},
            "train": {"train_bytes": 1_000_000}}
    p = write_spec(tmp_path / "s.yaml", "matched", base=base,
                   axes={"grid": {"preset": ["transformer-bpe@cpu-tiny", "hnet-1stage@cpu-tiny",
                                             "hnet-2stage@cpu-tiny"]}},
                   match={"group_by": ["data.domain", "scale"], "reference": "transformer-bpe",
                          "bytes_per_token": 2.0, "tolerance": 0.05})
    res = sweep("run", str(p), "--dry-run", cwd=tmp_path)
    out = res.stdout
    assert "3 runs" in out and "1MB" in out and "[reference]" in out
    assert out.count("matched to transformer-bpe@cpu-tiny") == 2
    assert not (tmp_path / "results").exists()  # a dry run writes nothing
    runs = expand(load_spec(p))
    target = runs[1].match["target_flops_per_byte"]
    for r in runs[1:]:  # the H-Nets' main depth was resized to the BPE reference's FLOPs/byte
        assert abs(r.match["flops_per_byte"] / target - 1) <= 0.05
        assert r.match["main_depth"][0] >= 1 and r.match["main_depth"][1] >= 1


# ----------------------------------------------------------------------------- locks


def test_run_lock_exclusive_and_stale(tmp_path):
    a, b = RunLock(tmp_path), RunLock(tmp_path)
    assert a.acquire() and not b.acquire()
    a.release()
    assert b.acquire()
    b.release()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "lock"
    lock.write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    assert RunLock(tmp_path).acquire()  # the owner is dead on this host: stale, broken
    lock.write_text(json.dumps({"pid": 1, "host": "other-host"}))
    assert not RunLock(tmp_path).acquire()  # another host: never broken


# ----------------------------------------------------------------------------- real jobs


@pytest.mark.slow
def test_submitit_local_jobs_land_results(tmp_path):
    p = write_spec(tmp_path / "s.yaml", "sub", axes={"grid": {"train.seed": [0, 1]}},
                   eval={"bpb": True})
    res = sweep("run", str(p), "--executor", "submitit-local", "--max-parallel", "2", cwd=tmp_path)
    assert "2 completed" in res.stdout
    results = tmp_path / "results"
    dirs = run_dirs(results, "sub")
    jobs = json.loads((results / "sub" / "jobs.json").read_text())
    assert sorted(jobs) == [d.name for d in dirs]
    for d in dirs:
        st = read_status(d)
        assert st["state"] == "completed" and st["attempts"] == 1, st
        assert st["job_id"] == jobs[d.name][0]["job_id"]  # ran inside the submitit job
        assert json.loads((d / "summary.json").read_text())["steps"] == 4
        assert st["evals"] == {"bpb/val": "ok"}
        assert json.loads((d / "eval.json").read_text())["bpb"]["en/val"] > 0
        assert not (d / "lock").exists()
    assert (results / "sub" / "spec.yaml").read_text() == p.read_text()
    plan = json.loads((results / "sub" / "plan.json").read_text())
    assert len(plan["runs"]) == 2 and plan["spec"] == "s.yaml"  # relative to the cwd
    status = sweep("status", str(p), cwd=tmp_path).stdout
    assert "2 completed" in status
    again = sweep("run", str(p), "--executor", "submitit-local", cwd=tmp_path).stdout
    assert "0 to run, 2 completed" in again


@pytest.mark.slow
def test_killed_runner_rerun_resumes_only_unfinished(tmp_path):
    base = {**TINY, "train": {**TINY["train"], "steps": 40, "ckpt_every": 2}}
    p = write_spec(tmp_path / "s.yaml", "kill", base=base,
                   axes={"zip": [{"train.seed": [0, 1], "train.steps": [4, 40]}]},
                   eval={"bpb": False})
    results = tmp_path / "results"
    runner = subprocess.Popen([sys.executable, "-m", "hnetbench", "sweep", "run", str(p)],
                              cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    first = second = None
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once run 1 is done and run 2 has a checkpoint
        time.sleep(0.5)
        if (results / "kill").is_dir() and len(run_dirs(results, "kill")) == 2:
            by_steps = {json.loads((d / "job.json").read_text())["label"]: d
                        for d in run_dirs(results, "kill")}
            first, second = by_steps["seed=0,steps=4"], by_steps["seed=1,steps=40"]
            if (first / "summary.json").exists() and (second / "metrics.jsonl").exists() \
                    and len(train_steps(second)) >= 4 and any((second / "ckpt").glob("*")):
                break
    else:
        pytest.fail("runner made no progress")
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    time.sleep(1.0)  # the job dies with its parent (PR_SET_PDEATHSIG)
    assert read_status(second)["state"] == "running" and (second / "lock").exists()
    status = sweep("status", str(p), cwd=tmp_path).stdout
    assert re.search(r"interrupted\s+1", status), status
    first_metrics = (first / "metrics.jsonl").read_text()

    res = sweep("run", str(p), cwd=tmp_path)
    assert "1 to run, 1 completed" in res.stdout
    assert (first / "metrics.jsonl").read_text() == first_metrics  # not rerun
    assert read_status(first)["attempts"] == 1
    st = read_status(second)
    assert st["state"] == "completed" and st["attempts"] == 2
    log = (second / "job.log").read_text()
    resumed = log.split("attempt 2")[1]
    first_step = int(re.search(r"step (\d+)/40", resumed).group(1))
    assert first_step > 1  # resumed from ckpt/, not from scratch
    assert train_steps(second)[-1] == 40


@pytest.mark.slow
def test_two_runners_at_once_run_each_job_once(tmp_path):
    p = write_spec(tmp_path / "s.yaml", "race", axes={"grid": {"train.seed": [0, 1, 2]}},
                   eval={"bpb": False})
    cmd = [sys.executable, "-m", "hnetbench", "sweep", "run", str(p)]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [pr.communicate(timeout=600)[0] for pr in procs]
    assert all(pr.returncode == 0 for pr in procs), outs
    both = "".join(outs)  # the runners did collide (a job found its run taken or done)
    assert "locked" in both or "already completed" in both or "running in pid" in both, outs
    dirs = run_dirs(tmp_path / "results", "race")
    assert len(dirs) == 3
    for d in dirs:
        st = read_status(d)
        assert st["state"] == "completed" and st["attempts"] == 1, (d, st, outs)
        assert train_steps(d) == [1, 2, 3, 4]  # one trajectory, no interleaved duplicates
        assert (d / "job.log").read_text().count("attempt 1") == 1
    plan = json.loads((tmp_path / "results" / "race" / "plan.json").read_text())
    assert len(plan["runs"]) == 3


# ----------------------------------------------------------------------------- slurm


FAKE_SBATCH = """#!/bin/sh
cp "$1" "{dir}/sbatch.$$.sh"
echo "Submitted batch job 4242"
"""
FAKE_SCANCEL = """#!/bin/sh
echo "$@" >> "{dir}/scancel.log"
"""
# a pending array as `scontrol show job -o` prints it: one record for the unstarted tasks
FAKE_SCONTROL = """#!/bin/sh
state=PENDING; [ -f "{dir}/scancel.log" ] && state=CANCELLED
echo "JobId=4242 ArrayJobId=4242 ArrayTaskId=0-2%3 JobName=x JobState=$state Reason=Priority \
Dependency=(null) Requeue=1 Restarts=0 ExitCode=0:0"
"""


def test_slurm_submission_and_cancel(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("scancel", FAKE_SCANCEL), ("srun", ""),
                       ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text.format(dir=tmp_path))
        (bin_dir / name).chmod(0o755)
    slurm = {"partition": "gpu", "account": "myproj", "qos": "high", "nodes": 1,
             "gpus_per_node": 4, "cpus_per_task": 12, "mem_gb": 200, "time_min": 600,
             "array_parallelism": 8, "setup": ["module load cuda"]}
    base = {**TINY, "data": {**TINY["data"], "batch_size": 4}}  # divides over the 4 ranks
    p = write_spec(tmp_path / "s.yaml", "slurmy", base=base,
                   axes={"grid": {"train.seed": [0, 1, 2]}}, slurm=slurm)
    env = {**ENV, "PATH": f"{bin_dir}:{ENV['PATH']}"}
    res = subprocess.run([sys.executable, "-m", "hnetbench", "sweep", "run", str(p), "--executor",
                          "slurm"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "check: slurmy: 3 runs, no problems found" in res.stdout  # preflight ran first
    script = next(tmp_path.glob("sbatch.*.sh")).read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=myproj", "#SBATCH --qos=high",
                 "#SBATCH --array=0-2%3", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --ntasks-per-node=4", "#SBATCH --cpus-per-task=12",
                 "#SBATCH --mem=200GB", "#SBATCH --time=600", "module load cuda"):
        assert line in script, line
    jobs = json.loads((tmp_path / "results" / "slurmy" / "jobs.json").read_text())
    assert sorted(e[0]["job_id"] for e in jobs.values()) == ["4242_0", "4242_1", "4242_2"]
    status = subprocess.run([sys.executable, "-m", "hnetbench", "sweep", "status", str(p)],
                            cwd=tmp_path, env=env, capture_output=True, text=True).stdout
    assert status.count("queued") >= 3 and "PENDING: Priority" in status, status
    again = subprocess.run([sys.executable, "-m", "hnetbench", "sweep", "run", str(p),
                            "--executor", "slurm"], cwd=tmp_path, env=env, capture_output=True,
                           text=True)
    assert "0 to run, 3 queued or running in Slurm" in again.stdout, again.stdout + again.stderr
    assert len(list(tmp_path.glob("sbatch.*.sh"))) == 1  # nothing submitted twice
    res = subprocess.run([sys.executable, "-m", "hnetbench", "sweep", "cancel", str(p)],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "scancel.log").read_text().split() == ["4242_0", "4242_1", "4242_2"]
    for d in run_dirs(tmp_path / "results", "slurmy"):
        assert read_status(d)["state"] == "cancelled"


def test_unmatchable_group_names_the_run(tmp_path):
    p = write_spec(tmp_path / "s.yaml", "unmatched", base={"data": {"seq_len": 256}},
                   axes={"grid": {"preset": ["transformer-bpe@cpu-tiny", "hnet-2stage@cpu-tiny"]}},
                   match={"bytes_per_token": 3.0, "tolerance": 0.01})
    with pytest.raises(ConfigError, match=r"match: run hnet-2stage@cpu-tiny: match_depth"):
        expand(load_spec(p))


@pytest.mark.slow
def test_cancel_stops_a_local_job_and_marks_runs(tmp_path):
    base = {**TINY, "train": {**TINY["train"], "steps": 2000, "ckpt_every": 0}}
    p = write_spec(tmp_path / "s.yaml", "stop", base=base, axes={"grid": {"train.seed": [0, 1]}},
                   eval={"bpb": False})
    runner = subprocess.Popen([sys.executable, "-m", "hnetbench", "sweep", "run", str(p)],
                              cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    results = tmp_path / "results"
    deadline = time.time() + 200
    while time.time() < deadline:
        time.sleep(0.5)
        dirs = run_dirs(results, "stop") if (results / "stop").is_dir() else []
        if any((d / "metrics.jsonl").exists() for d in dirs):
            break
    else:
        pytest.fail("the job never started training")
    res = sweep("cancel", str(p), cwd=tmp_path)
    assert "marked 2 runs cancelled" in res.stdout
    out = runner.communicate(timeout=120)[0]
    for d in dirs:
        assert read_status(d)["state"] == "cancelled" and not (d / "lock").exists(), out
    # a later run starts cancelled runs again (here: just check they are planned)
    plan = sweep("run", str(p), "--dry-run", cwd=tmp_path).stdout
    assert "2 runs" in plan


def test_checkpointable_job_releases_run_and_resubmits_itself(tmp_path):
    from hnetbench.sweeps.job import SweepJob

    lock = RunLock(tmp_path)
    assert lock.acquire()
    delayed = SweepJob().checkpoint(str(tmp_path))  # what submitit calls on SIGUSR2
    assert isinstance(delayed.function, SweepJob) and delayed.args == (str(tmp_path),)
    assert not lock.path.exists() and read_status(tmp_path)["state"] == "pending"
    assert RunLock(tmp_path).acquire()  # the requeued job can claim the run


@pytest.mark.slow
def test_failed_run_is_recorded_others_go_on_and_retry(tmp_path):
    p = write_spec(tmp_path / "s.yaml", "fail", axes={"grid": {"data.domain": ["en", "klingon"]}},
                   eval={"bpb": False})
    res = sweep("run", str(p), "--max-parallel", "2", cwd=tmp_path, check=False)
    assert res.returncode == 1 and "1 completed, 1 failed" in res.stdout, res.stdout + res.stderr
    by_domain = {json.loads((d / "job.json").read_text())["label"]: d
                 for d in run_dirs(tmp_path / "results", "fail")}
    assert read_status(by_domain["domain=en"])["state"] == "completed"
    bad = read_status(by_domain["domain=klingon"])
    assert bad["state"] == "failed" and "klingon" in bad["error"] and "\n" not in bad["error"]
    assert "Traceback" in (by_domain["domain=klingon"] / "error.log").read_text()
    again = sweep("run", str(p), cwd=tmp_path, check=False)
    assert "0 to run, 1 completed, 1 failed" in again.stdout and again.returncode == 1
    retry = sweep("run", str(p), "--retry-failed", cwd=tmp_path, check=False)
    assert "1 to run, 1 completed" in retry.stdout
    assert read_status(by_domain["domain=klingon"])["attempts"] == 2


def test_slurm_cpu_partition_spec_and_plan_assumptions(tmp_path):
    from hnetbench.sweeps.executors import tasks_per_node
    from hnetbench.sweeps.runner import throughput, throughput_basis

    cpu = load_spec(write_spec(tmp_path / "c.yaml", "cpu",
                               slurm={"gpus_per_node": 0, "signal_delay_s": 30}))
    assert cpu.slurm.signal_delay_s == 30 and tasks_per_node(cpu) == 1
    assert "CPU node" in throughput_basis(cpu, "slurm") and throughput(cpu, "slurm") == 5e10
    a100 = load_spec(write_spec(tmp_path / "g.yaml", "gpu",
                                slurm={"gpus_per_node": 4, "nodes": 2},
                                estimate={"gpu_peak_flops": 312e12, "mfu": 0.5}))
    assert tasks_per_node(a100) == 4
    assert throughput(a100, "slurm") == pytest.approx(2 * 4 * 312e12 * 0.5)
    assert "2x4 GPUs at 312TFLOP/s peak" in throughput_basis(a100, "slurm")
    with pytest.raises(ConfigError, match=r"slurm.gpus_per_node: expected an integer >= 0"):
        load_spec(write_spec(tmp_path / "b.yaml", "bad", slurm={"gpus_per_node": -1}))
