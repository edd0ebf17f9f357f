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
    """Raised inside a job by SIGTERM (`hnetbench sweep cancel`, scancel)."""


def _raise_cancelled(signum: int, frame: Any) -> None:
    raise Cancelled(f"signal {signum}")


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}".strip()


def run_job(run_dir: str | Path) -> dict[str, Any]:
    """Run one sweep job to completion; never raises for a training error (it is recorded)."""
    run_dir = Path(run_dir)
    lock = RunLock(run_dir)
    if not lock.acquire():
        return {"run_dir": str(run_dir), "state": "locked", "owner": lock.owner()}
    try:
        if is_completed(run_dir):
            return {"run_dir": str(run_dir), "state": "already completed"}
        return _run_locked(run_dir)
    finally:
        lock.release()


def _run_locked(run_dir: Path) -> dict[str, Any]:
    from hnetbench.config import load_saved

    job = read_json(run_dir / "job.json") or {}
    st = update_status(
        run_dir, state="running", error=None, started=now(), finished=None,
        attempts=int(read_status(run_dir)["attempts"]) + 1,
        host=socket.gethostname(), pid=os.getpid(), job_id=_job_id(),
    )
    print(f"[sweep job] {run_dir.name} attempt {st['attempts']} pid {os.getpid()}", flush=True)
    t0 = time.time()
    try:
        cfg = load_saved(run_dir / "config.yaml")
        from hnetbench.train import train  # late import: torch and the models are heavy

        summary = train(cfg, run_dir)
        if job.get("match"):
            summary = dict(summary or read_json(run_dir / "summary.json") or {})
            summary["match"] = job["match"]
            write_json(run_dir / "summary.json", summary)
        evals = run_evals(run_dir, job.get("eval") or {})
    except (Cancelled, KeyboardInterrupt) as e:
        update_status(run_dir, state="cancelled", error=_one_line(e), finished=now())
        return {"run_dir": str(run_dir), "state": "cancelled"}
    except Exception as e:  # noqa: BLE001 - a failed run is recorded; the sweep goes on
        (run_dir / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
        update_status(run_dir, state="failed", error=_one_line(e), finished=now(),
                      wall_s=round(time.time() - t0, 2))
        return {"run_dir": str(run_dir), "state": "failed", "error": _one_line(e)}
    st = update_status(run_dir, state="completed", finished=now(), evals=evals,
                       wall_s=round(time.time() - t0, 2))
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


def run_evals(run_dir: Path, spec: dict[str, Any]) -> dict[str, str]:
    """Run the evals the spec asks for through `hnetbench eval` (which merges eval.json); each
    records ok / unavailable / error in status.json without stopping the others."""
    ck = ["--checkpoint", str(run_dir)]
    limit = ["--limit", str(spec["limit"])] if spec.get("limit") else []
    tasks = _task_names(run_dir, spec.get("tasks") or [])
    steps = []
    if spec.get("bpb", True):
        for split in spec.get("splits") or ["val"]:
            steps.append((f"bpb/{split}", ["bpb", *ck, "--split", split]))
    if tasks:
        steps.append(("tasks", ["lm", *ck, "--tasks", ",".join(tasks), *limit]))
    if spec.get("robustness"):
        robust = ",".join(tasks or ["hellaswag"])
        steps.append(("robustness", ["robustness", *ck, "--tasks", robust, *limit]))
    outcome: dict[str, str] = {}
    for name, argv in steps:
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
    return outcome


# ----------------------------------------------------------------------------- submitit


try:
    import submitit

    _Checkpointable: Any = submitit.helpers.Checkpointable
except ImportError:  # submitit is the optional [slurm] extra
    submitit = None
    _Checkpointable = object


class SweepJob(_Checkpointable):
    """Submitit job: preemption/timeout requeue resubmits the same job; train() resumes."""

    def __call__(self, run_dir: str) -> dict[str, Any]:
        rank = _setup_distributed()
        if rank > 0:  # only rank 0 owns the run directory's lock and status
            if is_completed(Path(run_dir)):
                return {"run_dir": run_dir, "state": "already completed", "rank": rank}
            from hnetbench.config import load_saved
            from hnetbench.train import train

            train(load_saved(Path(run_dir) / "config.yaml"), Path(run_dir))
            return {"run_dir": run_dir, "state": "worker", "rank": rank}
        return run_job(run_dir)

    def checkpoint(self, run_dir: str) -> Any:
        # Called in the job on SIGUSR2 before requeue: give the run back so the requeued job
        # (maybe on another node) can claim it; the last ckpt/ is where it resumes.
        lock = RunLock(Path(run_dir))
        info = lock.owner()
        if info and info.get("pid") == os.getpid():
            update_status(Path(run_dir), state="pending", error="requeued (preempted or timeout)")
            lock.path.unlink(missing_ok=True)
        return submitit.helpers.DelayedSubmission(SweepJob(), run_dir)


def _setup_distributed() -> int:
    """Export MASTER_ADDR/PORT, RANK, WORLD_SIZE from Slurm for multi-GPU jobs; returns the rank."""
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
    signal.signal(signal.SIGTERM, _raise_cancelled)
    result = run_job(argv[0])
    return {"completed": EXIT_OK, "already completed": EXIT_ALREADY, "locked": EXIT_LOCKED,
            "cancelled": EXIT_CANCELLED}.get(result["state"], EXIT_FAILED)


if __name__ == "__main__":
    sys.exit(main())
