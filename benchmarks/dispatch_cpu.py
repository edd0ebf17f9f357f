"""What calling the C kernels costs besides the C code, and the C EMA, in one process.

    python benchmarks/dispatch_cpu.py [--runs 0 2 4] [--rounds 8] [--settle-steps 10]
                                      [--json out.json]

1. Per call: a chain of 50 plain RMSNorms on one row of 64 (the C work is nil), forward +
   backward and without autograd, through the registered torch ops (what the models called
   before kernels/cpu_ops.py; what torch.compile traces) and through the eager twin.
2. Steps: the English models of `hnetbench reproduce` (the cpu spec's runs `--runs`, their
   matched configs), one thread. Each trains `--settle-steps` steps, then its training steps
   and evaluation forwards (no autograd, the batch with targets) over 4 batches in turn are
   timed in CPU seconds, the variants alternating in rotated order every round:
     ops       the kernels through their torch ops, the EMA through the torch blocked scan
     twin      the eager twins, the torch EMA
     twin+ema  the eager twins and the C EMA (today's default)
   Steps update the weights, so rounds see slightly different models; every variant sees
   the same ones. Reported: medians per step and the ratios ops/twin, twin/twin+ema and
   ops/twin+ema.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, run_training, train_step, write_json  # noqa: E402

VARIANTS = ("ops", "twin", "twin+ema")


def per_call(reps: int = 20) -> list[dict]:
    from hnetbench.kernels import cpu_ops, norm_cpu

    assert norm_cpu.available(), norm_cpu.LIBRARY.why_not
    real = cpu_ops.tracing
    x0 = torch.randn(1, 64, requires_grad=True)
    w = torch.ones(64, requires_grad=True)

    def with_grad() -> None:
        h = x0
        for _ in range(50):
            h = norm_cpu.rms_norm_cpu(h, w, 1e-5)
        h.sum().backward()

    def no_grad() -> None:
        with torch.no_grad():
            h = x0
            for _ in range(50):
                h = norm_cpu.rms_norm_cpu(h, w, 1e-5)

    rows = []
    for name, fn in (("forward+backward", with_grad), ("no autograd", no_grad)):
        us: dict[str, list[float]] = {"ops": [], "twin": []}
        for _ in range(3):
            for variant in ("ops", "twin"):
                cpu_ops.tracing = (lambda: True) if variant == "ops" else real
                fn()
                t0 = time.process_time()
                for _ in range(reps):
                    fn()
                us[variant].append((time.process_time() - t0) / reps / 50 * 1e6)
        cpu_ops.tracing = real
        ops, twin = statistics.median(us["ops"]), statistics.median(us["twin"])
        rows.append({"call": name, "ops_us": round(ops, 1), "twin_us": round(twin, 1),
                     "saved_us": round(ops - twin, 1)})
    return rows


def _use(variant: str, real_tracing, real_ema) -> None:  # noqa: ANN001
    from hnetbench.kernels import cpu_ops, ema_cpu

    cpu_ops.tracing = (lambda: True) if variant == "ops" else real_tracing
    ema_cpu.available = real_ema if variant == "twin+ema" else (lambda: False)


def steps(run_index: int, rounds: int, settle: int) -> list[dict]:
    from hnetbench.kernels import cpu_ops, ema_cpu
    from hnetbench.sweeps.spec import expand, load_spec
    from hnetbench.train.malloc import keep_freed_memory

    keep_freed_memory()  # as the trainer does
    spec = Path(__file__).resolve().parents[1] / "sweeps/specs/cpu.yaml"
    run = expand(load_spec(spec))[run_index]
    model, opt, loader = run_training(run.cfg)
    batches = [next(loader) for _ in range(4)]

    def train(b: dict) -> None:
        train_step(model, opt, b)

    def evaluate(b: dict) -> None:
        with torch.no_grad():
            model(b["input_ids"], targets=b["targets"], doc_start=b["doc_start"])

    real_tracing, real_ema = cpu_ops.tracing, ema_cpu.available
    for i in range(settle):
        train(batches[i % 4])
    rows = []
    label = run.label.split(",")[1]
    try:
        for what, fn in (("train step", train), ("eval forward", evaluate)):
            ms: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for r in range(rounds):
                for k in range(len(VARIANTS)):
                    variant = VARIANTS[(r + k) % len(VARIANTS)]
                    _use(variant, real_tracing, real_ema)
                    t0 = time.process_time()
                    for b in batches:
                        fn(b)
                    ms[variant].append((time.process_time() - t0) / len(batches) * 1e3)
            med = {v: statistics.median(ms[v]) for v in VARIANTS}
            rows.append({"model": label, "what": what,
                         **{f"{v}_ms": round(med[v], 2) for v in VARIANTS},
                         "ops/twin": round(med["ops"] / med["twin"], 3),
                         "twin/twin+ema": round(med["twin"] / med["twin+ema"], 3),
                         "ops/twin+ema": round(med["ops"] / med["twin+ema"], 3)})
    finally:
        _use("twin+ema", real_tracing, real_ema)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, nargs="+", default=[0, 2, 4],
                    help="indices into the cpu spec's runs (0 2-stage, 2 1-stage, 4 BPE)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--settle-steps", type=int, default=10)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    calls = per_call()
    print_table(calls, ["call", "ops_us", "twin_us", "saved_us"])
    rows = []
    for i in args.runs:
        rows += steps(i, args.rounds, args.settle_steps)
        print_table(rows[-2:], list(rows[-1]))
    write_json(args.json, {"machine": machine(), "per_call": calls, "steps": rows,
                           "rounds": args.rounds, "settle_steps": args.settle_steps})


if __name__ == "__main__":
    main()
