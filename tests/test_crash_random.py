"""Randomized crash test: a tiny sweep (two tiny models: train, checkpoints, evals, report) is
SIGKILLed at seeded random moments, at least 20 times, and rerun after every kill (each attempt
is a real process, forked from a server that imported everything once, so reruns skip start-up).
Every final artefact must be bitwise equal to an uninterrupted run's, and no temp file or stale
lock may be left. Kill moments are spread over the phases by aiming each kill at the k-th entry
into a chosen phase (train step, checkpoint write, evaluation, report writing; or any moment)
plus a random fraction of that phase's measured duration; where each kill actually landed is
read back from a trace the victim writes, and the distribution is printed and saved as
kill_points.json."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("HNETBENCH_CRASH_SEED", "24"))
MIN_KILLS = 20
# kills aimed at each phase (22 in all); `any` is a uniform moment of a whole rerun
QUOTA = {"train": 6, "ckpt": 5, "eval": 4, "report": 4, "any": 3}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}

SPEC = """\
name: crash
base:
  data: {domain: en, seq_len: 64, batch_size: 2}
  train: {steps: 8, ckpt_every: 2, keep_last: 2, eval_every: 4, eval_batches: 1, log_every: 1,
          device: cpu}
  eval: {bpb_max_bytes: 600}
axes:
  grid:
    preset: [llamabyte@cpu-tiny, hnet-1stage@cpu-tiny]
eval:
  bpb: true
  splits: [val]
"""

# The victim: the sweep runner with an in-process executor (each run's job — lock, status,
# train, evals — runs in the victim, so one SIGKILL hits whatever it is doing), then the report.
# Victims are forked from a server that imported torch, hnetbench and matplotlib once, so a rerun
# costs no start-up; each is a real process, killed with SIGKILL. Entry and exit of each phase
# are appended to the attempt's trace file, one unbuffered write per mark.
FORK_SERVER = textwrap.dedent("""\
    import ctypes, os, signal, sys, time, traceback
    from pathlib import Path
    fd = -1

    def die_with_parent():  # PR_SET_PDEATHSIG: no orphan if the test (or server) is killed
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)

    die_with_parent()

    def mark(label):
        os.write(fd, f"{time.monotonic():.6f} {label}\\n".encode())

    def traced(owner, name, label):
        fn = getattr(owner, name)

        def wrapper(*a, **k):
            mark(label + "+")
            try:
                return fn(*a, **k)
            finally:
                mark(label + "-")
        setattr(owner, name, wrapper)

    import torch._dynamo  # noqa: F401 (the sweep planner's meta-device models import it)
    from hnetbench.evals import commands, figures, report  # noqa: F401 (imported once, here)
    from hnetbench.sweeps import executors, job, runner
    from hnetbench.train import checkpoint, trainer
    traced(trainer.Trainer, "train_step", "train")
    traced(trainer.Trainer, "_eval", "val")
    traced(checkpoint, "save_checkpoint", "ckpt")
    traced(commands, "main", "eval")
    traced(report, "build_report", "report")

    def inproc(spec, sweep_dir, run_dirs, max_parallel, log):
        return {str(rd): job.run_job(rd)["state"] for rd in run_dirs}

    executors.register_executor("inproc")(inproc)
    executors.WAITS["inproc"] = True

    def victim(spec, results, trace):
        global fd
        fd = os.open(trace, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        mark("start")
        rc = runner.run_sweep(spec, executor="inproc", results=results, log=lambda m: None)
        report.build_report(Path(results) / "crash", warn=lambda m: None)
        mark("done")
        return rc

    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            die_with_parent()
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stdout is the server's channel
            try:
                rc = victim(*line.split())
            except BaseException:
                traceback.print_exc()
                rc = 1
            sys.stderr.flush()
            os._exit(rc)
        sys.stdout.write(f"{pid}\\n")
        sys.stdout.flush()
        sys.stdout.write(f"{os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}\\n")
        sys.stdout.flush()
""")


class ForkServer:
    """Starts victims (`start` -> pid) and reports how each ended (`poll`: exit status, -9 for a
    SIGKILL, or None while it runs)."""

    def __init__(self, tmp: Path) -> None:
        self.err = tmp / "victims.err"
        self.proc = subprocess.Popen([sys.executable, "-c", FORK_SERVER], env=ENV, bufsize=0,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err.open("wb"))
        self.buf = b""

    def _line(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            wait = deadline - time.monotonic()
            if wait < 0 or not select.select([self.proc.stdout], [], [], wait)[0]:
                return None
            data = os.read(self.proc.stdout.fileno(), 4096)
            assert data, f"fork server died: {self.stderr()}"
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def start(self, *args: str | Path) -> int:
        self.proc.stdin.write((" ".join(map(str, args)) + "\n").encode())
        return int(self._line(600))

    def poll(self, timeout: float = 0.0) -> int | None:
        line = self._line(timeout)
        return None if line is None else int(line)

    def wait(self) -> int:
        rc = self.poll(600)
        assert rc is not None, "a victim ran for more than 10 minutes"
        return rc

    def stderr(self) -> str:
        return self.err.read_text()[-3000:]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)

    def kill(self) -> None:
        """The server, and with it (PR_SET_PDEATHSIG) a victim still running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# wall-clock and per-process measurements, not results (the first metrics line of each process
# records the peak, load and threads it ran with: a killed run has more processes; the summary's
# CPU seconds and bytes are the last training leg's)
TIMING_KEYS = {"bytes_per_s", "mfu", "mfu_refused", "wall_s", "cpu_s", "loadavg_start",
               "peak_flops", "peak_source", "threads", "compile_s", "compile_shapes",
               "leg_bytes"}
TIMING_COLUMNS = ("wall (s)", "CPU (s)", "load at start")


def _marks(trace: Path) -> list[tuple[float, str]]:
    if not trace.exists():
        return []
    out = []
    for line in trace.read_text().splitlines():
        t, label = line.split()
        out.append((float(t), label))
    return out


def _landed(marks: list[tuple[float, str]]) -> str:
    """The innermost phase open when the trace stops (`other`: between phases, or start-up)."""
    stack: list[str] = []
    for _, label in marks:
        if label.endswith("+"):
            stack.append(label[:-1])
        elif label.endswith("-") and stack:
            stack.pop()
    return stack[-1] if stack else "other"


def _durations(marks: list[tuple[float, str]]) -> dict[str, float]:
    """Median duration of each phase in an uninterrupted run's trace."""
    open_at: dict[str, float] = {}
    spans: dict[str, list[float]] = collections.defaultdict(list)
    for t, label in marks:
        if label.endswith("+"):
            open_at[label[:-1]] = t
        elif label.endswith("-"):
            spans[label[:-1]].append(t - open_at.pop(label[:-1]))
    return {k: sorted(v)[len(v) // 2] for k, v in spans.items()}


def _drop_wall_column(text: str) -> str:
    """The runs table with its timing columns emptied (md, tex, csv: cells split on | & ,)."""
    lines = text.splitlines()
    header = next(line for line in lines if "wall (s)" in line)
    sep = next(c for c in "|&," if c in header)
    head = header.split(sep)
    cols = {i for i, c in enumerate(head) if c.strip().startswith(TIMING_COLUMNS)}

    def blank(cell: str) -> str:  # keep a LaTeX row end
        return "\\\\" if cell.rstrip().endswith("\\\\") else ""

    return "\n".join(sep.join(blank(c) if i in cols else c for i, c in enumerate(cells))
                     if len(cells := line.split(sep)) == len(head) else line for line in lines)


def _artefacts(sweep: Path) -> dict[str, bytes]:
    """Every final result file as bytes: weights, metrics, summaries, eval JSON, report tables.
    Wall-clock measurements are dropped (throughput and MFU in metrics.jsonl, wall time in
    summary.json and the runs table: a killed run rightly counts more seconds); every loss, BPB,
    count and every other table cell stays."""
    out: dict[str, bytes] = {}
    for p in sorted(sweep.rglob("*")):
        rel = str(p.relative_to(sweep))
        if not p.is_file():
            continue
        if rel.startswith("tables/runs."):
            out[rel] = _drop_wall_column(p.read_text()).encode()
        elif p.name in ("model.safetensors", "state.safetensors", "eval.json", "config.yaml") \
                or rel.startswith("tables/"):
            out[rel] = p.read_bytes()
        elif p.name == "metrics.jsonl":
            recs = [json.loads(x) for x in p.read_text().splitlines()]
            out[rel] = json.dumps([{k: v for k, v in r.items() if k not in TIMING_KEYS}
                                   for r in recs]).encode()
        elif p.name == "summary.json":
            s = json.loads(p.read_text())
            out[rel] = json.dumps({k: v for k, v in s.items() if k not in TIMING_KEYS}).encode()
    return out


def _file_set(sweep: Path) -> set[str]:
    return {str(p.relative_to(sweep)) for p in sweep.rglob("*") if p.is_file()}


def test_random_sigkills_leave_results_bitwise_equal(tmp_path):
    rng = random.Random(SEED)
    (tmp_path / "crash.yaml").write_text(SPEC)

    t0 = time.monotonic()
    server = ForkServer(tmp_path)
    try:
        _crash_loop(tmp_path, server, rng, t0)
    finally:
        server.kill()


def _crash_loop(tmp_path: Path, server: ForkServer, rng: random.Random, t0: float) -> None:
    spec = tmp_path / "crash.yaml"
    ref_results, ref_trace = tmp_path / "ref", tmp_path / "ref.trace"
    server.start(spec, ref_results, ref_trace)
    assert server.wait() == 0, server.stderr()
    ref_marks = _marks(ref_trace)
    dur = _durations(ref_marks)
    total = ref_marks[-1][0] - ref_marks[0][0]
    # a rerun with nothing left to train: the sweep's checks, then the report
    rerun_s = dur["report"] + 0.5
    ref_sweep = ref_results / "crash"
    assert (ref_sweep / "report.md").is_file()

    results = tmp_path / "victim"
    sweep = results / "crash"
    left = dict(QUOTA)
    kills: list[dict] = []
    training = True  # training-time phases lie ahead only until both runs are trained
    attempt = 0
    while True:
        attempt += 1
        assert attempt < 80, f"too many attempts; kills so far: {kills}"
        trace = tmp_path / f"attempt{attempt}.trace"
        # aim at a phase still owed kills, in pipeline order: training and checkpoint writes
        # (mixed), evaluations, then report writing and any moment (both always ahead)
        aims = [p for p in ("train", "ckpt") if left[p] > 0 and training]
        if not aims:
            aims = [p for p in ("eval",) if left[p] > 0] or \
                [p for p in ("report", "any") if left[p] > 0]
        if not aims and len(kills) < MIN_KILLS:
            aims = ["report", "any"]
        pid = server.start(spec, results, trace)
        t_launch = time.monotonic()
        if not aims:  # quotas met: the final, uninterrupted rerun
            assert server.wait() == 0, server.stderr()
            break
        aim = rng.choice(aims)
        nth = rng.randint(1, 3) if aim == "train" else rng.randint(1, 2) if aim == "ckpt" else 1
        if "ckpt" in aims and not any(k["landed"] == "ckpt" for k in kills):
            # checkpoint writes are short and end with training: land one in them first,
            # at the next write, while training lasts
            aim, nth = "ckpt", 1
        fire_at = t_launch + rng.uniform(0.0, rerun_s) if aim == "any" else None
        size, rc = 0, None
        while rc is None:
            if fire_at is None and trace.exists() and trace.stat().st_size != size:
                size = trace.stat().st_size
                marks = _marks(trace)
                entries = [t for t, label in marks if label == aim + "+"]
                if len(entries) >= nth:
                    # evaluations are short on a quiet machine (~0.4 s) and each runs once:
                    # fire early in one so the kill lands inside it
                    share = 0.3 if aim == "eval" else 1.0
                    fire_at = time.monotonic() + rng.uniform(0.0, share * dur.get(aim, 0.05))
                elif aim in ("train", "ckpt") and any(lb == "eval+" for _, lb in marks):
                    # training ended before the nth mark: kill inside the first evaluation
                    # rather than let this process finish every eval (they run once each)
                    training = False
                    fire_at = time.monotonic() + rng.uniform(0.0, 0.3 * dur.get("eval", 0.05))
            if fire_at is not None and time.monotonic() >= fire_at:
                with contextlib.suppress(ProcessLookupError):  # it may have just ended
                    os.kill(pid, signal.SIGKILL)
                rc = server.wait()
                break
            rc = server.poll(0.002)
        if rc == -signal.SIGKILL:
            landed = _landed(_marks(trace))
            kills.append({"attempt": attempt, "aim": aim, "nth": nth, "landed": landed})
            # a short phase (a checkpoint write) may end before the kill: aim at it again
            # until one kill has landed inside it
            if aim == "any" or landed == aim or any(k["landed"] == aim for k in kills):
                left[aim] -= 1
        else:  # the phase did not come again (training or evals done): nothing was killed
            assert rc == 0, server.stderr()
            if aim in ("train", "ckpt"):
                training = False
            if aim == "eval":
                left["eval"] = 0

    landed = collections.Counter(k["landed"] for k in kills)
    record = {"seed": SEED, "kills": len(kills), "attempts": attempt,
              "landed": dict(sorted(landed.items())), "each": kills,
              "reference_s": round(total, 2), "rerun_s": round(rerun_s, 2),
              "phase_median_s": {k: round(v, 4) for k, v in dur.items()},
              "wall_s": round(time.monotonic() - t0, 1), "loadavg": os.getloadavg()}
    server.close()
    (tmp_path / "kill_points.json").write_text(json.dumps(record, indent=1))
    print("\nkill points:", json.dumps(record["landed"]), f"({len(kills)} kills,"
          f" {attempt} processes, seed {SEED})")
    assert len(kills) >= MIN_KILLS, record
    for phase in ("train", "ckpt", "eval", "report"):
        assert landed[phase] >= 1, f"no kill landed in {phase}: {record}"

    got, want = _artefacts(sweep), _artefacts(ref_sweep)
    assert sorted(got) == sorted(want)
    assert [k for k in want if got[k] != want[k]] == []
    assert any(k.endswith("model.safetensors") for k in want)
    assert sum(k.startswith("tables/") for k in want) >= 3
    # no temp file, no half-deleted checkpoint, no stale lock: the same files as the reference
    # (besides lock.guard, the flock file a rerun opens to break a dead owner's lock)
    assert _file_set(sweep) - {str(p) for p in _file_set(sweep) if p.endswith("lock.guard")} \
        == _file_set(ref_sweep)
    for p in sweep.rglob("*"):
        assert ".tmp" not in p.name and p.name != "lock", p
    for rd in (d for d in sweep.iterdir() if (d / "config.yaml").is_file()):
        st = json.loads((rd / "status.json").read_text())
        assert st["state"] == "completed" and st["evals"] == {"bpb/val": "ok"}, st
