"""Sweeps on a real single-node Slurm cluster (sweeps/slurm_cluster.sh starts it; skipped with the
script's reason where it cannot: not root, no apt, no Debian packages).

Tiny CPU runs (`slurm.gpus_per_node: 0`) check: completion, status, threads from
SLURM_CPUS_PER_TASK, a 2-task gloo job launched like a multi-GPU job matching one process,
`scontrol requeue` mid-training resuming to bitwise the weights of an uninterrupted run, the
time-limit signal (USR2) saving a checkpoint at its step, `sweep cancel` ending running jobs in
seconds, a rerun submitting nothing while jobs are queued or running, a job failing in Slurm
shown `failed` with Slurm's reason, sbatch's refusal as one line, stale locks of other hosts.
Several sweeps share the cluster at once to keep the module short.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import hnetbench
import pytest
import yaml
from hnetbench.sweeps.state import read_status

pytestmark = pytest.mark.slow
SCRIPT = Path(hnetbench.__file__).parent / "sweeps" / "slurm_cluster.sh"
# "endless" runs below train 50000 x 2 x 64 B = 6.4 MB < the en train split, so --check passes
TINY = {
    "preset": "llamabyte@cpu-tiny",
    "data": {"domain": "en", "seq_len": 64, "batch_size": 2},
    "train": {"steps": 6, "ckpt_every": 3, "eval_every": 0, "eval_batches": 1, "log_every": 1,
              "device": "cpu"},
    "eval": {"bpb_max_bytes": 1500},
}
CPU_SLURM = {"gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 2, "time_min": 10}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """SLURM_CONF of a running test cluster; stops the daemons this fixture started."""
    if not sys.platform.startswith("linux"):
        pytest.skip("Slurm test cluster: Linux only")
    res = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=900)
    if res.returncode == 2:
        pytest.skip(res.stderr.strip().splitlines()[-1])
    assert res.returncode == 0, f"{SCRIPT} up failed:\n{res.stdout}\n{res.stderr}"
    out = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
    yield out["SLURM_CONF"]
    if out.get("STARTED"):
        subprocess.run(["bash", str(SCRIPT), "down", out["STARTED"]], capture_output=True,
                       timeout=120)


@pytest.fixture()
def env(cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", cluster)  # in-process status/cancel ask this cluster
    return {**os.environ, "SLURM_CONF": cluster, "OMP_NUM_THREADS": "1"}


def spec(tmp: Path, name: str, base: dict | None = None, **extra) -> Path:
    path = tmp / f"{name}.yaml"
    data = {"name": name, "base": base or TINY, "eval": {"bpb": False},
            "slurm": {**CPU_SLURM, **extra.pop("slurm", {})}, **extra}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def sweep(env: dict, tmp: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "hnetbench", "sweep", *args], cwd=tmp, env=env,
                         capture_output=True, text=True, timeout=300)
    if check:
        assert res.returncode == 0, res.stdout + res.stderr
    return res


def submit(tmp: Path, path: Path) -> str:
    """`sweep run --executor slurm`, in this process (a CLI start-up costs seconds here)."""
    from hnetbench.sweeps.runner import run_sweep

    lines: list[str] = []
    rc = run_sweep(path, executor="slurm", results=tmp / "results", log=lines.append)
    assert rc == 0, lines
    return "\n".join(lines)


def status(tmp: Path, path: Path) -> str:
    from hnetbench.sweeps.runner import sweep_status

    lines: list[str] = []
    sweep_status(path, results=tmp / "results", log=lines.append)
    return "\n".join(lines)


def run_dirs(tmp: Path, name: str) -> list[Path]:
    root = tmp / "results" / name
    return sorted(p for p in root.iterdir() if (p / "config.yaml").exists())


def slurm(env: dict, *argv: str) -> str:
    return subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=60).stdout


def job_state(env: dict, job: str) -> str:
    line = slurm(env, "scontrol", "show", "job", "-o", job)
    return next((w.split("=", 1)[1] for w in line.split() if w.startswith("JobState=")), "GONE")


def wait_for(cond, timeout: float, what: str, tmp: Path, env: dict):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}\n{slurm(env, 'squeue')}\n{job_logs(tmp)}")


def job_logs(tmp: Path) -> str:
    return "\n".join(f"--- {p}\n{p.read_text()[-1500:]}"
                     for p in sorted(tmp.glob("results/*/submitit/*.err")))


def steps_logged(rd: Path) -> list[int]:
    if not (rd / "metrics.jsonl").exists():
        return []
    recs = [json.loads(x) for x in (rd / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in recs if "loss" in r]


def ckpt_steps(rd: Path) -> list[int]:
    from hnetbench.train.checkpoint import list_checkpoints

    return [step for step, _ in list_checkpoints(rd / "ckpt")]


def ckpt_dir(rd: Path, step: int) -> Path:
    from hnetbench.train.checkpoint import list_checkpoints

    return dict(list_checkpoints(rd / "ckpt"))[step]


def weights(ckpt_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(ckpt_dir / "model.safetensors"))


def job_of(rd: Path) -> str:
    jobs = json.loads((rd.parent / "jobs.json").read_text())
    return str(jobs[rd.name][-1]["job_id"])


def test_completion_status_threads_and_two_task_job(env, tmp_path):
    one = spec(tmp_path, "one", slurm={"cpus_per_task": 2})
    two = spec(tmp_path, "two", slurm={"tasks_per_node": 2})
    for p in (one, two):
        out = submit(tmp_path, p)
        assert "submitted 1 jobs" in out, out
    rd1, rd2 = run_dirs(tmp_path, "one")[0], run_dirs(tmp_path, "two")[0]
    wait_for(lambda: read_status(rd1)["state"] == read_status(rd2)["state"] == "completed", 240,
             "both sweeps to complete", tmp_path, env)
    status = sweep(env, tmp_path, "status", str(one)).stdout
    assert "1 completed" in status and job_of(rd1) in status, status
    assert read_status(rd1)["torch_threads"] == 2  # SLURM_CPUS_PER_TASK
    assert read_status(rd2)["torch_threads"] == 1
    s1 = json.loads((rd1 / "summary.json").read_text())
    s2 = json.loads((rd2 / "summary.json").read_text())
    assert s1["world_size"] == 1 and s2["world_size"] == 2 and s1["steps"] == s2["steps"] == 6
    assert s2["final_val_bpb"] == pytest.approx(s1["final_val_bpb"], rel=1e-4)
    w1, w2 = weights(ckpt_dir(rd1, 6)), weights(ckpt_dir(rd2, 6))
    for k in w1:  # gradients summed over 2 ranks: equal up to float summation order
        assert (w1[k] - w2[k]).abs().max() < 1e-4, k
    assert not list((rd2 / ".ranks").glob("*.tmp"))  # rank 0 opened the gate for rank 1


def test_requeue_resumes_bitwise_and_time_limit_signal_saves_at_its_step(env, tmp_path):
    from hnetbench.config import load_saved
    from hnetbench.sweeps.runner import cancel_sweep
    from hnetbench.train import train

    long = {**TINY, "train": {**TINY["train"], "steps": 300, "ckpt_every": 1000}}
    req = spec(tmp_path, "requeue", base=long)
    endless = {**TINY, "train": {**TINY["train"], "steps": 50000, "ckpt_every": 1000}}
    # two tasks: the ranks must agree on the step the signal stops at
    tl = spec(tmp_path, "timelimit", base=endless,
              slurm={"time_min": 3, "signal_delay_s": 110, "tasks_per_node": 2})
    for p in (req, tl):
        submit(tmp_path, p)
    rd, rd_tl = run_dirs(tmp_path, "requeue")[0], run_dirs(tmp_path, "timelimit")[0]

    # scontrol requeue mid-training: SIGTERM; the job sees Slurm requeue it and saves its step
    job = job_of(rd)
    wait_for(lambda: len(steps_logged(rd)) >= 2, 180, "the requeue run to train", tmp_path, env)
    slurm(env, "scontrol", "requeue", job)
    wait_for(lambda: read_status(rd)["state"] == "pending" and job_state(env, job) == "PENDING",
             60, "the requeued job to be pending", tmp_path, env)
    stopped = ckpt_steps(rd)[-1]
    assert f"requeued at step {stopped} by Slurm" in read_status(rd)["error"]
    assert steps_logged(rd)[-1] == stopped and 0 < stopped < 300  # no step lost
    shown = status(tmp_path, req)
    assert "queued" in shown and "BeginTime" in shown, shown
    slurm(env, "scontrol", "update", f"JobId={job}", "StartTime=now")  # skip the ~120 s delay

    # meanwhile: the uninterrupted reference, here, in this process
    ref = tmp_path / "reference"
    train(load_saved(rd / "config.yaml"), ref)

    # time limit: USR2 `signal_delay_s` before it; the loop saves at that step and requeues
    wait_for(lambda: "SIGUSR2" in str(read_status(rd_tl).get("error")), 200,
             "the time-limit signal", tmp_path, env)
    assert ckpt_steps(rd_tl), (f"USR2 came before training started (machine too loaded?): "
                               f"{read_status(rd_tl)}\n{job_logs(tmp_path)}")
    at = ckpt_steps(rd_tl)[-1]
    assert f"requeued at step {at} (SIGUSR2" in read_status(rd_tl)["error"]
    assert steps_logged(rd_tl)[-1] == at > 0  # zero steps lost
    wait_for(lambda: job_state(env, job_of(rd_tl)) == "PENDING", 60,
             "submitit to requeue the timed-out job", tmp_path, env)
    cancel_sweep(tl, results=tmp_path / "results", log=lambda s: None)
    assert read_status(rd_tl)["state"] == "cancelled"

    wait_for(lambda: read_status(rd)["state"] == "completed", 240, "the requeued run to finish",
             tmp_path, env)
    assert read_status(rd)["attempts"] == 2
    steps = steps_logged(rd)
    assert steps == list(range(1, 301)), steps  # resumed at stopped + 1, nothing twice
    got, want = weights(ckpt_dir(rd, 300)), weights(ckpt_dir(ref, 300))
    assert got.keys() == want.keys() and all(got[k].equal(want[k]) for k in want)


def test_queued_running_cancel_and_slurm_failures(env, tmp_path):
    from hnetbench.sweeps.runner import cancel_sweep, sweep_status
    from hnetbench.sweeps.state import live_owner

    endless = {**TINY, "train": {**TINY["train"], "steps": 50000, "ckpt_every": 1000}}
    busy = spec(tmp_path, "busy", base=endless, axes={"grid": {"train.seed": [0, 1]}},
                slurm={"array_parallelism": 1})
    broken = spec(tmp_path, "broken", slurm={"setup": ["exit 3"]})
    for p in (busy, broken):
        submit(tmp_path, p)

    # sbatch's refusal is one line
    nowhere = spec(tmp_path, "nowhere", slurm={"partition": "nowhere"})
    res = sweep(env, tmp_path, "run", str(nowhere), "--executor", "slurm", check=False)
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "sbatch" in res.stderr and "partition" in res.stderr.lower(), res.stderr

    # a job that fails in Slurm (its setup exits 3): failed, with Slurm's reason; not resubmitted
    rd_bad = run_dirs(tmp_path, "broken")[0]
    wait_for(lambda: job_state(env, job_of(rd_bad)) == "FAILED", 120, "the broken job to fail",
             tmp_path, env)
    shown = status(tmp_path, broken)
    assert "failed" in shown and "NonZeroExitCode" in shown and "3:0" in shown, shown
    from hnetbench.sweeps.runner import run_sweep

    lines: list[str] = []
    assert run_sweep(broken, executor="slurm", results=tmp_path / "results", log=lines.append) == 1
    assert "0 to run, 1 failed" in lines[-1], lines

    # one run trains, the other waits (array parallelism 1): a rerun submits nothing
    rds = run_dirs(tmp_path, "busy")
    wait_for(lambda: any(steps_logged(d) for d in rds), 180, "a busy run to train", tmp_path, env)
    n_jobs = sum(len(v) for v in json.loads((rds[0].parent / "jobs.json").read_text()).values())
    again = submit(tmp_path, busy)
    assert "0 to run, 1 running elsewhere, 1 queued or running in Slurm" in again, again
    n_after = sum(len(v) for v in json.loads((rds[0].parent / "jobs.json").read_text()).values())
    assert n_after == n_jobs, again
    assert "submitted" not in again.replace("0 to run", ""), again
    states = sorted(r["state"] for r in sweep_status(busy, results=tmp_path / "results",
                                                     log=lambda s: None))
    assert states in (["queued", "running"], ["queued", "starting"]), states

    # cancel: ends the running job within seconds (it checkpoints its step), marks both
    pids = [read_status(d).get("pid") for d in rds if read_status(d)["state"] == "running"]
    t0 = time.time()
    cancel_sweep(busy, results=tmp_path / "results", log=lambda s: None)
    took = time.time() - t0
    print(f"sweep cancel: running job ended and both runs marked in {took:.1f} s")
    assert took < 20, took
    for d in rds:
        assert read_status(d)["state"] == "cancelled" and not (d / "lock").exists()
        assert job_state(env, job_of(d)) in ("CANCELLED", "GONE")
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)
    trained = next(d for d in rds if steps_logged(d))
    assert ckpt_steps(trained)[-1] == steps_logged(trained)[-1]  # saved at the signal's step

    # a lock left on another host by a Slurm job that has ended is stale; without a job, not
    lock = trained / "lock"
    lock.write_text(json.dumps({"pid": 1, "host": "node-gone",
                                "slurm_job_id": _raw_id(env, job_of(trained))}))
    assert live_owner(trained) is None
    lock.write_text(json.dumps({"pid": 1, "host": "node-gone"}))
    assert live_owner(trained) is not None
    lock.unlink()


def _raw_id(env: dict, job: str) -> str:
    line = slurm(env, "scontrol", "show", "job", "-o", job)
    return next(w.split("=", 1)[1] for w in line.split() if w.startswith("JobId="))
