"""Executors: how sweep jobs are started. A small registry: local, submitit-local, slurm.

Each executor gets the run directories that need work and returns {run_dir: outcome}. local and
submitit-local wait for their jobs, and give each run threads = cores / runs side by side
(sweeps/threads.py); slurm submits a job array and returns (jobs are tracked in
results/<sweep>/jobs.json and by each run's status.json).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hnetbench.config import ConfigError
from hnetbench.sweeps.spec import SweepSpec
from hnetbench.sweeps.state import now, read_json, write_json
from hnetbench.sweeps.threads import thread_env

Log = Callable[[str], None]
ExecutorFn = Callable[[SweepSpec, Path, list[Path], int, Log], dict[str, str]]
EXECUTORS: dict[str, ExecutorFn] = {}
WAITS = {"local": True, "submitit-local": True, "slurm": False}


def register_executor(name: str) -> Callable[[ExecutorFn], ExecutorFn]:
    def deco(fn: ExecutorFn) -> ExecutorFn:
        EXECUTORS[name] = fn
        return fn

    return deco


def get_executor(name: str) -> ExecutorFn:
    if name not in EXECUTORS:
        raise ConfigError(f"--executor: unknown executor '{name}' (valid: {', '.join(EXECUTORS)})")
    return EXECUTORS[name]


def check_available(name: str) -> None:
    """One-line error before anything is written when an executor cannot work here."""
    if name in ("slurm", "submitit-local"):
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise ConfigError(f"--executor {name}: submitit is not installed "
                              "(pip install 'hnetbench[slurm]')") from None
    if name == "slurm" and not (shutil.which("sbatch") and shutil.which("srun")):
        raise ConfigError("--executor slurm: sbatch/srun not found on PATH "
                          "(run the sweep from a Slurm login node)")


def record_jobs(sweep_dir: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Merge job records into jobs.json under an flock (two runners may submit at once)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / "jobs.lock", "a") as g:
        fcntl.flock(g, fcntl.LOCK_EX)
        jobs = read_json(sweep_dir / "jobs.json") or {}
        for run_id, entry in entries.items():
            jobs.setdefault(run_id, []).append(entry)
        write_json(sweep_dir / "jobs.json", jobs)
        fcntl.flock(g, fcntl.LOCK_UN)


def cancelled_since(rd: Path, t0: str) -> bool:
    """True when `sweep cancel` marked the run after this runner started (so don't start it)."""
    st = read_json(rd / "status.json") or {}
    return st.get("state") == "cancelled" and str(st.get("finished") or "") >= t0


_OUTCOME = {0: "completed", 1: "failed", 3: "already completed", 75: "locked", 130: "cancelled"}


def die_with_parent() -> None:
    # Local jobs are children of the runner (or of its zygote, itself the runner's child): if
    # the parent is killed, so are they (their lock then goes stale and a rerun resumes them
    # from ckpt/), instead of orphans holding locks.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_slots(todo: list[Path], running: dict[str, Any], max_parallel: int, t0: str,
               out: dict[str, str]) -> Iterator[tuple[Path, int]]:
    """The next runs to start while fewer than max_parallel run, with how many will run side by
    side (their thread share); runs `sweep cancel` marked since t0 are skipped (recorded in
    `out`). The caller adds each started run to `running` before asking for the next."""
    while todo and len(running) < max(1, max_parallel):
        rd = todo.pop(0)
        if cancelled_since(rd, t0):
            out[str(rd)] = "cancelled"
            continue
        yield rd, min(max(1, max_parallel), len(running) + len(todo) + 1)


def _use_zygote() -> bool:
    """Fork local jobs from a preloaded process (sweeps/zygote.py) unless HNETBENCH_ZYGOTE=0
    (then each job is a fresh `python -m hnetbench.sweeps.job`)."""
    return os.environ.get("HNETBENCH_ZYGOTE", "1").strip() != "0"


@register_executor("local")
def run_local(spec: SweepSpec, sweep_dir: Path, run_dirs: list[Path], max_parallel: int,
              log: Log) -> dict[str, str]:
    """A pool of jobs, max_parallel at a time: each forked from a zygote that has the heavy
    imports done (sweeps/zygote.py), or a `python -m hnetbench.sweeps.job RUN_DIR` subprocess
    when the zygote is off or cannot start."""
    todo = list(run_dirs)
    running: dict[str, Any] = {}
    out: dict[str, str] = {}
    t0 = now()
    zygote = None
    if _use_zygote() and len(todo) > 1:
        from hnetbench.sweeps.zygote import shared_zygote

        try:
            zygote = shared_zygote()
        except (OSError, RuntimeError) as e:
            log(f"job zygote unavailable ({e}); starting each job afresh")
    try:
        while todo or running:
            for rd, side_by_side in free_slots(todo, running, max_parallel, t0, out):
                env = thread_env(side_by_side)
                if zygote is not None:
                    running[str(rd)] = zygote.start(rd, rd / "job.log", env)
                else:
                    with open(rd / "job.log", "ab") as f:
                        running[str(rd)] = subprocess.Popen(
                            [sys.executable, "-m", "hnetbench.sweeps.job", str(rd)],
                            stdout=f, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
                            env=env,
                        )
                how = ", forked" if zygote is not None else ""
                log(f"started {rd.name} (pid {running[str(rd)].pid}{how})")
            time.sleep(0.2)
            for key, proc in list(running.items()):
                try:
                    rc = proc.poll()
                except RuntimeError as e:  # the zygote died, and its jobs with it
                    log(f"{e}: {Path(key).name} lost; later jobs start afresh")
                    zygote, rc = None, -signal.SIGKILL
                if rc is not None:
                    out[key] = _OUTCOME.get(rc, "failed")
                    log(f"{out[key]:9s} {Path(key).name}")
                    del running[key]
    finally:
        if zygote is not None and running:  # interrupted: its jobs go with it
            zygote.close()
    return out


def tasks_per_node(spec: SweepSpec) -> int:
    """Processes per node: slurm.tasks_per_node, else one per GPU, else one."""
    s = spec.slurm
    return s.tasks_per_node or max(1, s.gpus_per_node)

@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _submitit_executor(spec: SweepSpec, sweep_dir: Path, cluster: str, max_parallel: int) -> Any:
    import submitit

    check_available("slurm" if cluster == "slurm" else "submitit-local")
    s = spec.slurm
    ex = submitit.AutoExecutor(folder=str(sweep_dir / "submitit"), cluster=cluster,
                               **({"slurm_max_num_timeout": s.max_requeue}
                                  if cluster == "slurm" else {}))
    params: dict[str, Any] = {"timeout_min": s.time_min, "name": f"hnetbench-{spec.name}"}
    if cluster == "slurm":
        cap = s.array_parallelism
        parallel = min(cap, max_parallel) if max_parallel > 0 else cap
        params.update(
            nodes=s.nodes, tasks_per_node=tasks_per_node(spec), cpus_per_task=s.cpus_per_task,
            mem_gb=s.mem_gb, slurm_array_parallelism=parallel,
            slurm_signal_delay_s=s.signal_delay_s, slurm_setup=list(s.setup),
            slurm_additional_parameters=dict(s.additional),
        )
        if s.gpus_per_node > 0:  # 0: a CPU partition; --gpus-per-node=0 is refused without GRES
            params["gpus_per_node"] = s.gpus_per_node
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(s, key):
                params[f"slurm_{key}"] = getattr(s, key)
    ex.update_parameters(**params)
    return ex


@register_executor("submitit-local")
def run_submitit_local(spec: SweepSpec, sweep_dir: Path, run_dirs: list[Path], max_parallel: int,
                       log: Log) -> dict[str, str]:
    """submitit's local cluster: each job is a detached controller + subprocess; we wait."""
    from hnetbench.sweeps.job import SweepJob

    ex = _submitit_executor(spec, sweep_dir, "local", max_parallel)
    todo = list(run_dirs)
    running: dict[str, Any] = {}
    out: dict[str, str] = {}
    t0 = now()
    while todo or running:
        for rd, side_by_side in free_slots(todo, running, max_parallel, t0, out):
            with _environ(thread_env(side_by_side)):  # the local controller inherits os.environ
                job = ex.submit(SweepJob(), str(rd))
            running[str(rd)] = job
            record_jobs(sweep_dir, {rd.name: {"executor": "submitit-local", "job_id": job.job_id,
                                              "submitted": now()}})
            log(f"submitted {rd.name} (submitit local job {job.job_id})")
        time.sleep(0.3)
        for key, job in list(running.items()):
            if job.done():
                try:
                    out[key] = job.result()["state"]
                except Exception as e:  # noqa: BLE001 - the job process died; status says why
                    out[key] = "failed"
                    log(f"job {job.job_id} for {Path(key).name} died: {str(e).splitlines()[0]}")
                log(f"{out[key]:9s} {Path(key).name}")
                del running[key]
    return out


@register_executor("slurm")
def run_slurm(spec: SweepSpec, sweep_dir: Path, run_dirs: list[Path], max_parallel: int,
              log: Log) -> dict[str, str]:
    """One Slurm job array (submitit), requeued on preemption/timeout; does not wait."""
    from hnetbench.sweeps.job import SweepJob

    ex = _submitit_executor(spec, sweep_dir, "slurm", max_parallel)
    # i17's preflight (sweeps/check.py) belongs here: before anything is submitted
    with tempfile.TemporaryFile("w+") as err:
        saved = os.dup(2)  # sbatch writes its errors to our stderr: keep them for one line
        os.dup2(err.fileno(), 2)
        try:
            with ex.batch():
                jobs = [ex.submit(SweepJob(), str(rd)) for rd in run_dirs]
            failure = None
        except Exception as e:  # noqa: BLE001 - sbatch's refusal, as one line
            failure = e
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        said = err.read()
    if failure is not None:
        reason = _sbatch_error(said + "\n" + str(failure))
        raise ConfigError(f"sbatch refused the job array: {reason}") from None
    if said.strip():
        sys.stderr.write(said)  # sbatch's warnings on success
    record_jobs(sweep_dir, {rd.name: {"executor": "slurm", "job_id": job.job_id,
                                      "submitted": now()} for rd, job in zip(run_dirs, jobs)})
    for rd, job in zip(run_dirs, jobs):
        log(f"submitted {rd.name} as Slurm job {job.job_id}")
    return {str(rd): "submitted" for rd in run_dirs}


def _sbatch_error(text: str) -> str:
    """The line of sbatch's output that says why (submitit wraps it in a long message)."""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    for line in lines:
        if "sbatch: error:" in line:
            return line.split("sbatch: error:", 1)[1].strip()
    return lines[0] if lines else "no message"


def cancel_jobs(sweep_dir: Path, log: Log) -> dict[str, str]:
    """Cancel the sweep's queued/running submitit jobs. Returns {run_id: job_id} of the Slurm
    jobs that were cancelled (the caller waits for them to end); local submitit controllers get
    SIGINT and are not returned."""
    from hnetbench.sweeps import slurm

    jobs = read_json(sweep_dir / "jobs.json") or {}
    slurm_ids: dict[str, str] = {}
    for run_id, entries in jobs.items():
        for entry in entries:
            if entry.get("executor") == "slurm":
                slurm_ids[str(entry["job_id"])] = run_id
            elif entry.get("executor") == "submitit-local":
                # the job id is the controller's pid; SIGINT makes it stop its tasks
                try:
                    os.kill(int(entry["job_id"]), signal.SIGINT)
                    log(f"cancelled submitit local job {entry['job_id']} ({run_id})")
                except (ProcessLookupError, ValueError):
                    pass
    if not slurm_ids:
        return {}
    if shutil.which("scontrol"):
        recs = slurm.job_records(slurm_ids)
        live = sorted(i for i in slurm_ids if i in recs and recs[i]["state"] in slurm.ACTIVE)
    else:  # cannot ask Slurm which are still alive: cancel them all
        live = sorted(slurm_ids)
    if live:
        log(slurm.cancel(live))
    return {slurm_ids[i]: i for i in live}
