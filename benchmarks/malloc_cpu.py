"""Training steps with and without `train/malloc.py` (freed memory kept in the process).

    python benchmarks/malloc_cpu.py [--presets hnet-2stage@cpu-tiny ...] [--rounds 4]
                                    [--settle-steps 20] [--steps 15] [--json out.json]

An allocator setting holds for a whole process, so the two variants run in separate
processes, alternating (the order flips every round): each child builds the preset's model
(torch.manual_seed(0)), trains it `--settle-steps` steps at the preset's learning rate on its
training data (so an H-Net cuts as many chunks as a trained one), then times `--steps` steps
at learning rate 0 over 4 batches in turn (the same work each round; an H-Net's tensor sizes
change from batch to batch, as in training), one thread. Reported per step: user and system
CPU seconds (getrusage), minor page faults, and the process's peak memory; the ratio is of
the medians over rounds of CPU (user + system) per step, default allocator / kept memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, preset_training, print_table, train_step, write_json  # noqa: E402

PRESETS = ["transformer-bpe@cpu-tiny", "hnet-1stage@cpu-tiny", "hnet-2stage@cpu-tiny"]


def child(preset: str, settle_steps: int, steps: int) -> dict:
    """One process's figures (runs in the child)."""
    import torch
    from hnetbench.train.malloc import keep_freed_memory

    torch.set_num_threads(1)
    kept = keep_freed_memory()  # HNETBENCH_MALLOC=default: False
    _, model, opt, loader = preset_training(preset)

    for _ in range(settle_steps):
        train_step(model, opt, next(loader))
    for g in opt.param_groups:
        g["lr"] = 0.0
    batches = [next(loader) for _ in range(4)]  # H-Nets: chunk counts, so sizes, vary
    train_step(model, opt, batches[-1])
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for i in range(steps):
        train_step(model, opt, batches[i % len(batches)])
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"kept": kept, "user_ms": (r1.ru_utime - r0.ru_utime) / steps * 1e3,
            "sys_ms": (r1.ru_stime - r0.ru_stime) / steps * 1e3,
            "faults": (r1.ru_minflt - r0.ru_minflt) / steps, "max_rss_mb": r1.ru_maxrss / 1024}


def compare(preset: str, rounds: int, settle_steps: int, steps: int) -> dict:
    runs: dict[str, list[dict]] = {"default": [], "kept": []}
    for r in range(rounds):
        for which in ("default", "kept") if r % 2 == 0 else ("kept", "default"):
            env = dict(os.environ, OMP_NUM_THREADS="1")
            env.pop("HNETBENCH_MALLOC", None)
            if which == "default":
                env["HNETBENCH_MALLOC"] = "default"
            out = subprocess.run(
                [sys.executable, __file__, "--child", preset, "--settle-steps",
                 str(settle_steps), "--steps", str(steps)],
                env=env, capture_output=True, text=True, check=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            if res["kept"] != (which == "kept"):
                raise SystemExit(f"malloc_cpu: the {which} child reported kept={res['kept']}")
            runs[which].append(res)

    def med(which: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[which])

    cpu = {w: statistics.median(r["user_ms"] + r["sys_ms"] for r in runs[w]) for w in runs}
    row = {"preset": preset, "rounds": rounds}
    for w in runs:
        row.update({f"{w}_cpu_ms": cpu[w], f"{w}_user_ms": med(w, "user_ms"),
                    f"{w}_sys_ms": med(w, "sys_ms"), f"{w}_faults": med(w, "faults"),
                    f"{w}_max_rss_mb": med(w, "max_rss_mb")})
    row["speedup"] = cpu["default"] / cpu["kept"]
    row["runs"] = runs
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="*", default=PRESETS)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--settle-steps", type=int, default=20)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.settle_steps, args.steps)))
        return 0
    load_before, t0 = os.getloadavg(), time.time()
    rows = [compare(p, args.rounds, args.settle_steps, args.steps) for p in args.presets]
    print_table(rows, ["preset", "default_cpu_ms", "kept_cpu_ms", "speedup", "default_sys_ms",
                       "kept_sys_ms", "default_faults", "kept_faults", "default_max_rss_mb",
                       "kept_max_rss_mb"])
    write_json(args.json, {"machine": machine(), "load_before": load_before,
                           "load_after": os.getloadavg(), "wall_s": time.time() - t0,
                           "settle_steps": args.settle_steps, "steps": args.steps,
                           "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
