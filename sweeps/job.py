"""One sweep job: claim the run, train (resuming from ckpt/), run the spec's evals, record state.

Every executor ends up here: `python -m hnetbench.sweeps.job RUN_DIR` (local pool) or the
submitit `SweepJob` (submitit-local, Slurm). The run directory holds `config.yaml` (the resolved
RunConfig) and `job.json` (sweep name, label, evals, match info), written by the runner.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from hnetbench.sweeps.state import (
    RunLock,
    is_completed,
    now,
    read_json,
    read_status,
    update_status,
    write_json,
)

EXIT_OK, EXIT_FAILED, EXIT_ALREADY, EXIT_LOCKED, EXIT_CANCELLED = 0, 1, 3, 75, 130


class Cancelled(BaseException):
    """Raised inside a job by SIGTERM (`hnetbench sweep cancel`, scancel) outside the step loop."""


class Requeue(BaseException):
    """Raised inside a job by the preemption / time-limit signal (USR2) outside the step loop."""


_SUBMITIT_USR2: Any = None  # submitit's USR2 handler (checkpoint + `scontrol requeue` + exit)


def _on_signal(signum: int, frame: Any) -> None:
    """SIGTERM (cancel, or Slurm's requeue) and USR2 (preemption / time limit): inside the step
    loop the trainer checkpoints at the current step and returns; elsewhere stop right here."""
    # os.write: print() from a handler can hit a print in progress (reentrant-call error)
    os.write(2, f"[sweep job] got {signal.Signals(signum).name}\n".encode())
    trainer = sys.modules.get("hnetbench.train.trainer")  # not imported yet: no loop to stop
    if trainer is not None and trainer.request_stop(signum):
        return
    raise Requeue(f"signal {signum}") if signum == signal.SIGUSR2 else Cancelled(f"signal {signum}")


def install_stop_handlers() -> None:
    """Our handlers replace submitit's (its SIGTERM handler only logs "Bypassing signal", so a
    cancelled job would train on until KillWait's SIGKILL, possibly mid-write)."""
    global _SUBMITIT_USR2
    prev = signal.getsignal(signal.SIGUSR2)
    if callable(prev) and prev is not _on_signal:
        _SUBMITIT_USR2 = prev
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGUSR2, _on_signal)


def slurm_requeueing() -> bool:
    """True when Slurm itself requeues this job (`scontrol requeue`, preemption with requeue):
    its restart count is then already one above ours. scancel leaves it equal."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    from hnetbench.sweeps.slurm import job_records

    rec = job_records([job]).get(job)
    mine = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    return rec is not None and int(rec.get("restarts") or 0) > mine


def cap_threads() -> int | None:
    """torch threads = the CPUs Slurm gave each task (else torch would use every core of a shared
    node: two 1-CPU jobs crawled at 120-700 B/s)."""
    n = os.environ.get("SLURM_CPUS_PER_TASK")
    if not (n and n.isdigit() and int(n) > 0):
        return None
    os.environ["OMP_NUM_THREADS"] = n  # for subprocesses (evals) too
    import torch

    torch.set_num_threads(int(n))
    return int(n)


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}".strip()


def run_job(run_dir: str | Path, on_claimed: Any = None) -> dict[str, Any]:
    """Run one sweep job to completion; never raises for a training error (it is recorded).
    `on_claimed()` is called once the run is ours and will train (multi-task jobs: go ranks)."""
    run_dir = Path(run_dir)
    lock = RunLock(run_dir)
    if not lock.acquire():
        return {"run_dir": str(run_dir), "state": "locked", "owner": lock.owner()}
    try:
        if is_completed(run_dir):
            return {"run_dir": str(run_dir), "state": "already completed"}
        return _run_locked(run_dir, on_claimed)
    finally:
        lock.release()


def _stopped(run_dir: Path, signum: int | None, step: Any) -> dict[str, Any]:
    """Record a run stopped by a signal: requeued (pending, resumes from the checkpoint at the
    signal's step) or cancelled."""
    at = f" at step {step}" if step is not None else ""
    if signum == signal.SIGUSR2:
        update_status(run_dir, state="pending", finished=now(),
                      error=f"requeued{at} (SIGUSR2: preemption or time limit)")
        return {"run_dir": str(run_dir), "state": "requeue", "step": step}
    if slurm_requeueing():
        update_status(run_dir, state="pending", finished=now(), error=f"requeued{at} by Slurm")
        return {"run_dir": str(run_dir), "state": "requeued", "step": step}
    update_status(run_dir, state="cancelled", finished=now(), error=f"cancelled{at} (SIGTERM)")
    return {"run_dir": str(run_dir), "state": "cancelled", "step": step}


def _run_locked(run_dir: Path, on_claimed: Any = None) -> dict[str, Any]:
    from hnetbench.config import load_saved

    job = read_json(run_dir / "job.json") or {}
    st = update_status(
        run_dir, state="running", error=None, started=now(), finished=None,
        attempts=int(read_status(run_dir)["attempts"]) + 1,
        host=socket.gethostname(), pid=os.getpid(), job_id=_job_id(),
    )
    print(f"[sweep job] {run_dir.name} attempt {st['attempts']} pid {os.getpid()}", flush=True)
    t0, cpu0 = time.time(), time.process_time()
    try:
        if on_claimed is not None:
            on_claimed()
        cfg = load_saved(run_dir / "config.yaml")
        import torch
        from hnetbench.train import train  # late import: torch and the models are heavy

        update_status(run_dir, torch_threads=torch.get_num_threads())
        summary = train(cfg, run_dir)
        if (summary or {}).get("status") == "stopped":
            return _stopped(run_dir, summary.get("stop_signal"), summary.get("steps"))
        if job.get("match"):
            summary = dict(summary or read_json(run_dir / "summary.json") or {})
            summary["match"] = job["match"]
            write_json(run_dir / "summary.json", summary)
        eval_cpu: dict[str, float] = {}
        evals = run_evals(run_dir, job.get("eval") or {}, eval_cpu)
    except Requeue:
        return _stopped(run_dir, signal.SIGUSR2, None)
    except Cancelled:
        return _stopped(run_dir, signal.SIGTERM, None)
    except KeyboardInterrupt as e:
        update_status(run_dir, state="cancelled", error=_one_line(e), finished=now())
        return {"run_dir": str(run_dir), "state": "cancelled"}
    except Exception as e:  # noqa: BLE001 - a failed run is recorded; the sweep goes on
        (run_dir / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
        update_status(run_dir, state="failed", error=_one_line(e), finished=now(),
                      wall_s=round(time.time() - t0, 2))
        return {"run_dir": str(run_dir), "state": "failed", "error": _one_line(e)}
    # what this attempt cost (reproduce's cost.json adds these up): the job's CPU, the training
    # leg's share and bytes, each eval's CPU
    st = update_status(run_dir, state="completed", finished=now(), evals=evals,
                       wall_s=round(time.time() - t0, 2),
                       job_cpu_s=round(time.process_time() - cpu0, 2),
                       train_cpu_s=(summary or {}).get("cpu_s"),
                       leg_bytes=(summary or {}).get("leg_bytes"), eval_cpu_s=eval_cpu)
    return {"run_dir": str(run_dir), "state": "completed", "attempts": st["attempts"]}


def _job_id() -> str | None:
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")


# ----------------------------------------------------------------------------- evals


def _task_names(run_dir: Path, tasks: list[str]) -> list[str]:
    """Task names may say `{domain}` (e.g. hnb_cont_{domain}): filled from the run's config."""
    if not any("{domain}" in t for t in tasks):
        return list(tasks)
    from hnetbench.config import load_saved

    domain = load_saved(run_dir / "config.yaml").data.domain
    return [t.replace("{domain}", domain) for t in tasks]


def run_evals(run_dir: Path, spec: dict[str, Any],
              cpu_s: dict[str, float] | None = None) -> dict[str, str]:
    """Run the evals the spec asks for through `hnetbench eval` (which merges eval.json); each
    records ok / unavailable / error in status.json without stopping the others. `cpu_s`, if
    given, receives each eval's CPU seconds (this process)."""
    ck = ["--checkpoint", str(run_dir)]
    limit = ["--limit", str(spec["limit"])] if spec.get("limit") else []
    tasks = _task_names(run_dir, spec.get("tasks") or [])
    steps = []
    if spec.get("bpb", True):
        for split in spec.get("splits") or ["val"]:
            steps.append((f"bpb/{split}", ["bpb", *ck, "--split", split]))
    robust, rlimit = [], None
    if spec.get("robustness"):  # its own tasks and limit when a `robustness:` section chose
        robust = _task_names(run_dir, spec.get("robustness_tasks") or tasks or ["hellaswag"])
        rlimit = spec.get("robustness_limit", spec.get("limit"))
    # the same tasks at the same limit: the robustness eval's clean columns are the task eval,
    # recorded under "tasks" by it (the items are scored once, not twice)
    shared = bool(tasks) and sorted(robust) == sorted(tasks) and rlimit == spec.get("limit")
    if tasks and not shared:
        steps.append(("tasks", ["lm", *ck, "--tasks", ",".join(tasks), *limit]))
    if robust:
        steps.append(("robustness", ["robustness", *ck, "--tasks", ",".join(robust),
                                     *(["--limit", str(rlimit)] if rlimit else []),
                                     *(["--record-tasks"] if shared else [])]))
    outcome: dict[str, str] = {}
    for name, argv in steps:
        cpu0 = time.process_time()
        try:
            import argparse

            from hnetbench.evals import commands  # late import: evals are an optional room

            parser = argparse.ArgumentParser(prog="hnetbench eval")
            commands.add_arguments(parser)
            rc = commands.main(parser.parse_args(argv))
            outcome[name] = "ok" if rc == 0 else f"error: exit status {rc}"
        except ModuleNotFoundError as e:
            outcome[name] = f"unavailable: {_one_line(e)}"
        except Exception as e:  # noqa: BLE001 - one broken eval must not lose the others
            outcome[name] = f"error: {_one_line(e)}"
        if cpu_s is not None:
            cpu_s[name] = round(time.process_time() - cpu0, 2)
    if shared:
        outcome["tasks"] = outcome["robustness"]
    return outcome


# ----------------------------------------------------------------------------- submitit


try:
    import submitit

    _Checkpointable: Any = submitit.helpers.Checkpointable
except ImportError:  # submitit is the optional [slurm] extra
    submitit = None
    _Checkpointable = object


class SweepJob(_Checkpointable):
    """Submitit job: preemption/timeout requeue resubmits the same job; train() resumes.

    Several tasks (one per GPU, or `slurm.tasks_per_node` on CPUs): rank 0 claims the run and
    tells the other ranks through a gate file whether to train; they never wait for a rank 0
    that left (run locked elsewhere, already completed, failed before training)."""

    def __call__(self, run_dir: str) -> dict[str, Any]:
        install_stop_handlers()
        try:
            return self._call(Path(run_dir))
        except Cancelled:  # before the run was claimed: nothing to record (cancel marks it)
            return {"run_dir": run_dir, "state": "cancelled"}
        except Requeue:  # before the step loop: nothing to save, the requeued job starts over
            if _SUBMITIT_USR2 is not None and _rank() == 0:
                _SUBMITIT_USR2(signal.SIGUSR2, None)
            return {"run_dir": run_dir, "state": "requeue"}

    def _call(self, rd: Path) -> dict[str, Any]:
        cap_threads()
        rank = _setup_distributed()
        if rank > 0:
            return self._worker(rd, rank)
        gate = _gate_path(rd)
        opened = []

        def open_gate() -> None:
            if gate is not None:
                _write_gate(gate, "go")
                opened.append(True)

        try:
            result = run_job(rd, on_claimed=open_gate)
        finally:
            if gate is not None and not opened:
                _write_gate(gate, "stop")
        if result["state"] == "requeue" and _SUBMITIT_USR2 is not None:
            # checkpoint saved and run released: let submitit requeue the job (and exit)
            _SUBMITIT_USR2(signal.SIGUSR2, None)
        return result

    def _worker(self, rd: Path, rank: int) -> dict[str, Any]:
        gate = _gate_path(rd)
        deadline = time.time() + 600
        while gate is not None and not gate.exists():
            if time.time() > deadline:
                raise RuntimeError(f"rank {rank}: rank 0 never opened {gate}")
            time.sleep(0.2)
        if gate is not None and gate.read_text().strip() != "go":
            return {"run_dir": str(rd), "state": "worker not needed", "rank": rank}
        from hnetbench.config import load_saved
        from hnetbench.train import train

        train(load_saved(rd / "config.yaml"), rd)
        return {"run_dir": str(rd), "state": "worker", "rank": rank}

    def checkpoint(self, run_dir: str) -> Any:
        # Called by submitit on SIGUSR2 when no step loop could stop cleanly, or after ours did:
        # give the run back so the requeued job (maybe on another node) can claim it.
        lock = RunLock(Path(run_dir))
        info = lock.owner()
        if info and info.get("pid") == os.getpid():
            update_status(Path(run_dir), state="pending", error="requeued (preempted or timeout)")
            lock.path.unlink(missing_ok=True)
        return submitit.helpers.DelayedSubmission(SweepJob(), run_dir)


def _gate_path(run_dir: Path) -> Path | None:
    """Rank 0's go/stop note for this launch of a multi-task job (None for one task)."""
    ntasks = int(os.environ.get("SLURM_NTASKS", os.environ.get("SUBMITIT_LOCAL_NTASKS", "1")))
    if ntasks <= 1:
        return None
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID") or "0"
    restart = os.environ.get("SLURM_RESTART_COUNT") or "0"
    return run_dir / ".ranks" / f"{job}.{restart}"


def _write_gate(gate: Path, word: str) -> None:
    gate.parent.mkdir(exist_ok=True)
    write_text = gate.with_suffix(".tmp")
    write_text.write_text(word + "\n")
    write_text.replace(gate)


def _rank() -> int:
    return int(os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or 0)


def _setup_distributed() -> int:
    """Export MASTER_ADDR/PORT, RANK, WORLD_SIZE for a multi-task job; returns the rank."""
    ntasks = int(os.environ.get("SLURM_NTASKS", os.environ.get("SUBMITIT_LOCAL_NTASKS", "1")))
    if ntasks <= 1 or submitit is None:
        return 0
    env = submitit.helpers.TorchDistributedEnvironment().export()
    return int(env.rank)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m hnetbench.sweeps.job RUN_DIR", file=sys.stderr)
        return 2
    install_stop_handlers()
    cap_threads()
    result = run_job(argv[0])
    return {"completed": EXIT_OK, "already completed": EXIT_ALREADY, "locked": EXIT_LOCKED,
            "cancelled": EXIT_CANCELLED, "requeued": EXIT_CANCELLED,
            "requeue": EXIT_CANCELLED}.get(result["state"], EXIT_FAILED)


if __name__ == "__main__":
    sys.exit(main())
