"""Issue 21's yardstick: what `make reproduce` costs at two commits, on this machine, in turn.

    python benchmarks/reproduce_cost.py [--commits f301408 HEAD] [--spec-from 51de901]
                                        [--repo .] [--json out.json]

For each commit, one after the other: a fresh clone checked out at it, the same sweep spec put
in place (`sweeps/specs/cpu.yaml` as it was at `--spec-from`: the preset the issue's
122-125 us per byte were measured with; f301408, the code issue 21 started from, predates it),
then `make setup` and `.venv/bin/hnetbench reproduce`, each in an empty home (as a newcomer
runs them), timed by the CPU of their process trees (`sweeps.cost.process_tree_cpu_s`: user +
system of this process, idle meanwhile, and of the children it waited for). Trained bytes are
summed from the runs' `summary.json` (`trained_bytes`: `leg_bytes` where the code records it,
else `bytes_seen`, of which a cool-down branch trained only its decay). Prints one line per
commit and the ratio within each pair of commits as listed (2nd / 1st, 4th / 3rd, ...: list
`A B B A` for two pairs in both orders); the JSON is rewritten after each commit.

CPU-bound and two workers wide: run nothing else beside it. One pair takes ~30 minutes here.
Machines of the same name differ by 10-20% and drift within hours, so only the ratio of a
pair measured together means anything.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402
from hnetbench.sweeps.cost import process_tree_cpu_s  # noqa: E402


def _timed(cmd: list[str], cwd: Path, env: dict, log: Path) -> tuple[float, float]:
    """(CPU seconds of the command's process tree, wall seconds); raises on failure."""
    cpu0, wall0 = process_tree_cpu_s(), time.perf_counter()
    with open(log, "a", encoding="utf-8") as f:
        rc = subprocess.call(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if rc:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd} (exit {rc}); see {log}")
    return process_tree_cpu_s() - cpu0, time.perf_counter() - wall0


def trained_bytes(sweep_dir: Path) -> int:
    """Bytes the runs under `sweep_dir` trained in this invocation: `leg_bytes` where the code
    records it; else a run's `bytes_seen`, of which a WSD cool-down branch trained only its
    decay (it starts from its parent's checkpoint where the decay begins)."""
    import yaml

    total = 0
    for p in sweep_dir.glob("*/summary.json"):
        s = json.loads(p.read_text())
        if "leg_bytes" in s:
            total += int(s["leg_bytes"])
        elif ",cooldown=" in s["name"]:
            cfg = yaml.safe_load((p.parent / "config.yaml").read_text())
            total += round(s["bytes_seen"] * float(cfg["train"]["decay_frac"]))
        else:
            total += int(s["bytes_seen"])
    return total


def _git(args: list[str], cwd: Path) -> str:
    r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"git {' '.join(args)} in {cwd}: {r.stderr.strip() or 'failed'}")
    return r.stdout.strip()


def measure(repo: Path, commit: str, spec_text: str, work: Path, i: int) -> dict:
    """The i-th measurement (its own clone and home: a commit may be listed more than once)."""
    clone = work / f"clone-{i}-{commit[:12]}"
    home = work / f"home-{i}-{commit[:12]}"
    home.mkdir()
    _git(["clone", "-q", str(repo), str(clone)], work)
    _git(["checkout", "-q", commit], clone)
    sha = _git(["rev-parse", "HEAD"], clone)
    (clone / "sweeps/specs/cpu.yaml").write_text(spec_text)
    env = {**os.environ, "HOME": str(home)}
    log = work / f"{i}-{commit[:12]}.log"
    setup_cpu, setup_wall = _timed(["make", "setup"], clone, env, log)
    rep_cpu, rep_wall = _timed([".venv/bin/hnetbench", "reproduce"], clone, env, log)
    n = trained_bytes(clone / "results/cpu")
    return {"commit": sha[:12], "setup_cpu_s": round(setup_cpu, 1),
            "setup_wall_s": round(setup_wall, 1), "reproduce_cpu_s": round(rep_cpu, 1),
            "reproduce_wall_s": round(rep_wall, 1), "bytes_trained": n,
            "us_per_trained_byte": round(rep_cpu / n * 1e6, 1),
            "make_reproduce_cpu_s": round(setup_cpu + rep_cpu, 1),
            "load_after": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commits", nargs="+", default=["f301408", "HEAD"])
    ap.add_argument("--spec-from", default="51de901",
                    help="the commit whose sweeps/specs/cpu.yaml every commit runs")
    ap.add_argument("--repo", default=".")
    ap.add_argument("--keep", action="store_true",
                    help="keep the clones and logs (a failed run always keeps them)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    repo = Path(args.repo).resolve()
    spec = _git(["show", f"{args.spec_from}:sweeps/specs/cpu.yaml"], repo) + "\n"
    work = Path(tempfile.mkdtemp(prefix="reproduce_cost-"))
    rows = []
    for i, c in enumerate(args.commits):  # a failure exits with the log's path, clones kept
        print(f"{c}: clone, make setup, hnetbench reproduce (logs in {work}) ...", flush=True)
        rows.append(measure(repo, c, spec, work, i))
        r = rows[-1]
        print(f"{r['commit']}: setup {r['setup_cpu_s']:,.0f} CPU-s, reproduce "
              f"{r['reproduce_cpu_s']:,.0f} CPU-s ({r['reproduce_wall_s']:,.0f} s wall) for "
              f"{r['bytes_trained'] / 1e6:.1f} MB trained: {r['us_per_trained_byte']} us/byte",
              flush=True)
        # after each commit, so that a failure later keeps what was measured
        write_json(args.json, {"spec_from": args.spec_from, "cpus": os.cpu_count(),
                               "rows": rows})
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    for a, b in zip(rows[::2], rows[1::2]):  # pairs in the order given: 2nd / 1st, 4th / 3rd
        print(f"{b['commit']} / {a['commit']}: reproduce per trained byte "
              f"{b['us_per_trained_byte'] / a['us_per_trained_byte']:.3f}x, make reproduce "
              f"{b['make_reproduce_cpu_s'] / a['make_reproduce_cpu_s']:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
