"""What Slurm says about a sweep's jobs: `scontrol show job -o` (jobs the controller still holds,
MinJobAge after they end), else `sacct` where accounting is on. Used by status (runs without a
live lock), by `sweep run` (never resubmit a queued or running job), by cancel, and to tell
whether a lock left by a job on another host is stale."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable

ACTIVE = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "CONFIGURING",
          "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING", "STAGE_OUT",
          "SPECIAL_EXIT"}
FAILED = {"FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
_FIELD = re.compile(r"(\w+)=(.*?)(?= \w+=|$)")


def _run(argv: list[str]) -> subprocess.CompletedProcess | None:
    if not shutil.which(argv[0]):
        return None
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _task_ids(spec: str) -> list[str]:
    """'0-3%2' or '1,4-5' (a pending array's tasks) -> ['0', '1', ...]."""
    out: list[str] = []
    for part in spec.split("%", 1)[0].split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            if a.isdigit() and b.isdigit():
                out.extend(str(i) for i in range(int(a), int(b) + 1))
        elif part.isdigit():
            out.append(part)
    return out


def _from_scontrol(base: str) -> dict[str, dict[str, str]] | None:
    """Records of one job (or job array) keyed by every id it answers to; None if unreachable."""
    res = _run(["scontrol", "show", "job", "-o", base])
    if res is None:
        return None
    if res.returncode != 0:  # "Invalid job id specified": the controller forgot the job
        return {} if "invalid job id" in (res.stderr + res.stdout).lower() else None
    out: dict[str, dict[str, str]] = {}
    for line in res.stdout.splitlines():
        f = dict(_FIELD.findall(line.strip()))
        if "JobId" not in f:
            continue
        rec = {"state": f.get("JobState", "?"), "reason": f.get("Reason", ""),
               "exit_code": f.get("ExitCode", ""), "restarts": f.get("Restarts", "0"),
               "job_id": f["JobId"]}
        out[f["JobId"]] = rec
        array, task = f.get("ArrayJobId"), f.get("ArrayTaskId")
        if array and task:
            for t in _task_ids(task):
                out[f"{array}_{t}"] = rec
    return out


def _from_sacct(ids: list[str]) -> dict[str, dict[str, str]]:
    res = _run(["sacct", "-n", "-P", "-X", "-j", ",".join(ids), "-o", "JobID,State,ExitCode"])
    out: dict[str, dict[str, str]] = {}
    if res is None or res.returncode != 0:
        return out
    for line in res.stdout.splitlines():
        parts = line.split("|")
        if len(parts) == 3:
            state = parts[1].split()[0] if parts[1] else "?"  # "CANCELLED by 0"
            out[parts[0]] = {"state": state, "reason": "", "exit_code": parts[2],
                             "restarts": "0", "job_id": parts[0]}
    return out


def job_records(ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """{job id: record} for the ids Slurm knows ('123' or array task '123_4'); record keys:
    state (JobState), reason, exit_code, restarts, job_id. Unknown or unreachable: absent."""
    ids = sorted({str(i) for i in ids if i})
    out: dict[str, dict[str, str]] = {}
    for base in sorted({i.split("_", 1)[0] for i in ids}):
        recs = _from_scontrol(base)
        if recs:
            out.update({i: recs[i] for i in ids if i in recs})
    missing = [i for i in ids if i not in out]
    if missing:
        out.update({i: r for i, r in _from_sacct(missing).items() if i in missing})
    return out


def controller_forgot(job_id: str) -> bool:
    """True when the controller answers and does not know the job (it ended MinJobAge ago)."""
    return _from_scontrol(str(job_id).split("_", 1)[0]) == {}


def describe(rec: dict[str, str]) -> str:
    """One line: 'Slurm job 12_3 FAILED (NonZeroExitCode, exit code 3:0)'."""
    bits = [b for b in (rec.get("reason") if rec.get("reason") not in ("None", "") else None,
                        f"exit code {rec['exit_code']}" if rec.get("exit_code") else None) if b]
    return f"Slurm job {rec['job_id']} {rec['state']}" + (f" ({', '.join(bits)})" if bits else "")


def cancel(ids: list[str]) -> str:
    """scancel the jobs; returns one line for the log."""
    res = _run(["scancel", *ids])
    if res is None:
        return "scancel not found on PATH"
    if res.returncode != 0:
        first = (res.stderr.strip() or res.stdout.strip() or f"exit status {res.returncode}")
        return f"scancel {' '.join(ids)}: {first.splitlines()[0]}"
    return f"scancel {' '.join(ids)}"
