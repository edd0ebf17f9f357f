"""CPU benchmark: blocked-scan torch EMA (`ema_chunked`, the CPU default) vs the sequential
loop (`ema_reference`), forward and forward+backward, in one run; the `matmul` within-block
variant is timed alongside. Not a test.

    python3 benchmarks/kernels_cpu.py [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from functools import partial

import torch
from hnetbench.kernels.ema import ema_chunked, ema_reference


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)  # least disturbed by other processes on a shared machine


def forward(f, x: torch.Tensor, p: torch.Tensor):
    return lambda: f(x, p)


def fwd_bwd(f, x: torch.Tensor, p: torch.Tensor):
    def run() -> None:
        xg, pg = x.detach().requires_grad_(True), p.detach().requires_grad_(True)
        f(xg, pg).sum().backward()

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--B", type=int, default=4)
    ap.add_argument("--D", type=int, default=256)
    ap.add_argument("--M", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", help="write the results here (atomic)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    print(f"B={args.B} D={args.D} float32, {args.threads} thread(s), best of {args.repeats}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'M':>6} {'pass':>8} {'loop ms':>10} {'chunked ms':>11} {'speed-up':>9} "
          f"{'matmul ms':>10} {'max err':>9}")
    mm = partial(ema_chunked, method="matmul")
    for M in args.M:
        x = torch.randn(args.B, M, args.D)
        p = torch.rand(args.B, M)
        p[:, 0] = 1.0
        p[:, M // 3] = 1.0  # a document start
        err = (ema_chunked(x, p) - ema_reference(x, p)).abs().max().item()
        for name, wrap in [("fwd", forward), ("fwd+bwd", fwd_bwd)]:
            reps = max(1, args.repeats // 2) if M >= 4096 else args.repeats
            t_ref = best_time(wrap(ema_reference, x, p), reps)
            t_fast = best_time(wrap(ema_chunked, x, p), args.repeats)
            t_mm = best_time(wrap(mm, x, p), args.repeats)
            row = dict(M=M, B=args.B, D=args.D, pass_=name, loop_ms=t_ref * 1e3,
                       chunked_ms=t_fast * 1e3, speedup=t_ref / t_fast,
                       chunked_matmul_ms=t_mm * 1e3, max_abs_err=err)
            rows.append(row)
            print(f"{M:>6} {name:>8} {row['loop_ms']:>10.2f} {row['chunked_ms']:>11.2f} "
                  f"{row['speedup']:>8.1f}x {row['chunked_matmul_ms']:>10.2f} {err:>9.1e}")
    if args.json:
        clean = [{k.rstrip("_"): v for k, v in r.items()} for r in rows]
        out = dict(host=platform.node(), cpu_count=os.cpu_count(), torch=torch.__version__,
                   threads=args.threads, load_avg=os.getloadavg(), rows=clean)
        d = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(d, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=d, delete=False, suffix=".tmp") as f:
            json.dump(out, f, indent=2)
        os.replace(f.name, args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
