"""Local sweep jobs forked from one preloaded process instead of started afresh.

`python -m hnetbench.sweeps.job RUN_DIR` spends ~6 s of every job importing torch, dynamo (the
optimizer pulls it in), lm-eval and our modules before any work, and the cpu preset runs ~20
jobs on two cores. The zygote imports them once and forks one child per job. A child is the same
job as the subprocess was: the same entry (`job.main`), log file, exit statuses and stop signals
(`sweep cancel` signals the pid the job records). It dies with the zygote, which dies with the
runner (PR_SET_PDEATHSIG), as subprocess jobs die with the runner.

Protocol, one JSON object per line: the runner writes {"run_dir", "log", "env"}; the zygote
answers {"pid": n} once forked and {"pid": n, "rc": status} when the child exits (status as
`subprocess.Popen.returncode`: negative for a signal).

Nothing here runs a torch op before forking: the threads of torch's pool start in each child,
with the thread count the runner gives that job.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

from hnetbench.sweeps.executors import die_with_parent

PRELOAD = ("torch", "torch._dynamo", "torch.optim", "lm_eval.tasks", "lm_eval.evaluator",
           "scipy.special", "hnetbench.train.trainer", "hnetbench.evals.commands",
           "hnetbench.sweeps.job")


def _child(req: dict[str, Any], parent: int) -> None:
    """In the forked child: become the job (never returns)."""
    rc = 1
    try:
        die_with_parent()
        if os.getppid() != parent:  # the zygote died between fork and prctl
            os._exit(1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(req["env"])
        fd = os.open(req["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        import torch

        n = os.environ.get("OMP_NUM_THREADS", "")
        if n.isdigit() and int(n) > 0:
            torch.set_num_threads(int(n))
        from hnetbench.sweeps import job

        rc = job.main([req["run_dir"]])
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported in the job's log, status 1
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(rc)


def serve() -> None:
    """The zygote's loop: preload, then fork a child per request and report exits."""
    die_with_parent()
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional room (lm-eval) missing: the job reports it itself
            pass
    me, buf, children = os.getpid(), b"", set()
    out = sys.stdout

    def send(msg: dict[str, Any]) -> None:
        out.write(json.dumps(msg) + "\n")
        out.flush()

    send({"ready": True})
    while True:
        ready, _, _ = select.select([0], [], [], 0.1)
        if ready:
            chunk = os.read(0, 65536)
            if not chunk:  # the runner closed our stdin: done (children go with us)
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _child(req, me)
                children.add(pid)
                send({"pid": pid})
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            children.discard(pid)
            send({"pid": pid, "rc": os.waitstatus_to_exitcode(status)})


class Zygote:
    """The runner's side: start the zygote, fork jobs through it, poll their exits."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from hnetbench.sweeps.zygote import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=die_with_parent)
        self.exits: dict[int, int] = {}
        self._buf = b""
        if self._read(timeout=300).get("ready") is not True:
            raise RuntimeError("the job zygote did not start")

    def _read(self, timeout: float | None) -> dict[str, Any]:
        """The next message (None timeout: block); {} when none arrived in time."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                return {}
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError("the job zygote exited")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def start(self, run_dir: Path, log: Path, env: dict[str, str]) -> ZygoteJob:
        self.proc.stdin.write((json.dumps({"run_dir": str(run_dir), "log": str(log),
                                           "env": env}) + "\n").encode())
        self.proc.stdin.flush()
        while True:
            msg = self._read(timeout=60)
            if not msg:
                raise RuntimeError("the job zygote did not fork")
            if "rc" in msg:
                self.exits[msg["pid"]] = msg["rc"]
            elif "pid" in msg:
                return ZygoteJob(self, msg["pid"])

    def poll(self) -> None:
        """Collect the exits reported so far (non-blocking)."""
        while True:
            msg = self._read(timeout=0)
            if not msg:
                return
            if "rc" in msg:
                self.exits[msg["pid"]] = msg["rc"]

    def close(self) -> None:
        if self.proc.stdout.closed:
            return
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


class ZygoteJob:
    """A forked job, with the part of `subprocess.Popen` the local pool uses."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self.zygote, self.pid = zygote, pid

    def poll(self) -> int | None:
        self.zygote.poll()
        return self.zygote.exits.get(self.pid)


_SHARED: Zygote | None = None


def shared_zygote() -> Zygote:
    """One zygote per runner process, kept for its later phases (reproduce's branches start
    without another ~6 s of preloading) and closed at exit."""
    global _SHARED
    if _SHARED is None or _SHARED.proc.poll() is not None:
        _SHARED = Zygote()
        atexit.register(_SHARED.close)
    return _SHARED


def close_shared_zygote() -> None:
    """Close the runner's zygote now (reproduce: so that its CPU, and its jobs', is counted in
    the runner's children before it adds them up); the next local sweep starts a new one."""
    global _SHARED
    if _SHARED is not None:
        _SHARED.close()
        _SHARED = None
