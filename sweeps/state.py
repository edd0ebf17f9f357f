"""Per-run state: `status.json` (atomic writes) and the run lock that makes a job run once.

A run directory is claimed by creating `lock` with O_CREAT|O_EXCL; the file holds the owner's
pid, host, time and Slurm job id. A lock is stale, and may be broken, when its pid is dead on this
host, when its Slurm job id is ours (we are the requeued job), or, for a lock written on another
host by a Slurm job, when Slurm says that job (or that launch of it) is over. Breaking happens
under an flock'ed guard file so two breakers can never both win.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from hnetbench.config import atomic_write_text

STATES = ("pending", "running", "completed", "failed", "cancelled")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when missing or unreadable (e.g. half written)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")


def read_status(run_dir: Path) -> dict[str, Any]:
    st = read_json(run_dir / "status.json") or {}
    st.setdefault("state", "pending")
    st.setdefault("attempts", 0)
    return st


def update_status(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Read-modify-write status.json; only the lock holder (or a cancel under the lock) calls it."""
    st = read_status(run_dir)
    st.update(fields)
    write_json(run_dir / "status.json", st)
    return st


def is_completed(run_dir: Path) -> bool:
    return read_status(run_dir)["state"] == "completed" and (run_dir / "summary.json").is_file()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0); look at /proc when we can
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    return True


def _slurm_launch_over(job_id: str, restart: Any) -> bool:
    """Slurm says the job that wrote a lock has ended, or was requeued since (a later launch);
    False when Slurm cannot be asked (then only a person can tell)."""
    from hnetbench.sweeps.slurm import ACTIVE, controller_forgot, job_records

    rec = job_records([job_id]).get(job_id)
    if rec is None:
        return controller_forgot(job_id)
    if rec["state"] not in ACTIVE:
        return True
    return int(rec.get("restarts") or 0) > int(restart or 0)


class RunLock:
    """Exclusive claim of one run directory by one process."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / "lock"
        self.held = False

    def owner(self) -> dict[str, Any] | None:
        return read_json(self.path)

    def is_stale(self, info: dict[str, Any] | None) -> bool:
        if info is None:  # empty/garbled: the creator died between create and write
            try:
                return time.time() - self.path.stat().st_mtime > 30
            except FileNotFoundError:
                return False
        job = os.environ.get("SLURM_JOB_ID")
        if job and info.get("slurm_job_id") == job:
            return True  # our own job, requeued after preemption: the old process is gone
        if info.get("host") == socket.gethostname():
            return not _pid_alive(int(info.get("pid", 0)))
        if info.get("slurm_job_id"):
            return _slurm_launch_over(str(info["slurm_job_id"]), info.get("slurm_restart"))
        return False  # another host, no Slurm job: cannot tell; delete the lock by hand

    def acquire(self) -> bool:
        """Try once (breaking a stale lock if needed); True when this process now owns the run."""
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._break_if_stale():
                    return False
                continue
            info = {"pid": os.getpid(), "host": socket.gethostname(), "time": now(),
                    "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                    "slurm_restart": int(os.environ.get("SLURM_RESTART_COUNT") or 0)}
            with os.fdopen(fd, "w") as f:
                json.dump(info, f)
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return True
        return False

    def _break_if_stale(self) -> bool:
        guard = self.path.with_name("lock.guard")
        with open(guard, "a") as g:
            fcntl.flock(g, fcntl.LOCK_EX)
            try:
                if not self.path.exists():
                    return True
                info = self.owner()
                if not self.is_stale(info):
                    return False
                self.path.unlink(missing_ok=True)
                return True
            finally:
                fcntl.flock(g, fcntl.LOCK_UN)

    def release(self) -> None:
        if self.held:
            info = self.owner()
            if info is None or info.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def live_owner(run_dir: Path) -> dict[str, Any] | None:
    """The lock's owner when the run is (apparently) being worked on right now, else None."""
    lock = RunLock(run_dir)
    if not lock.path.exists():
        return None
    info = lock.owner()
    return None if lock.is_stale(info) else (info or {})
