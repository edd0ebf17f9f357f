"""Threads per run when runs share a machine: cores / runs side by side, at least 1.

Two unthrottled torch processes on the same cores each start one thread per core and crawl
(oversubscription); one thread per core in total keeps every core busy without it. Used by the
local and submitit-local executors (the environment of each launched run); a Slurm job entry
can call `threads_for_slurm_task()`. `HNETBENCH_THREADS` forces a number.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which honours cgroup cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def threads_per_run(parallel: int, cores: int | None = None) -> int:
    """Threads for each of `parallel` runs side by side on `cores` cores (default: ours)."""
    forced = os.environ.get("HNETBENCH_THREADS", "").strip()
    if forced.isdigit() and int(forced) > 0:
        return int(forced)
    cores = available_cores() if cores is None else cores
    return max(1, cores // max(1, parallel))


def thread_env(parallel: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `base` (default os.environ) whose thread variables give each of `parallel`
    runs its share of the cores."""
    env = dict(os.environ if base is None else base)
    n = str(threads_per_run(parallel))
    for var in THREAD_VARS:
        env[var] = n
    return env


def threads_for_slurm_task(env: Mapping[str, str] | None = None) -> int | None:
    """SLURM_CPUS_PER_TASK as an int, None outside a Slurm task (or when unset)."""
    value = (os.environ if env is None else env).get("SLURM_CPUS_PER_TASK", "")
    return int(value) if value.isdigit() and int(value) > 0 else None
