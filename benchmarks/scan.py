"""Mamba-2 scan: the CPU default (`models.ssd.ssd_scan`: the C recurrence of kernels/ssd_cpu.c
when it builds) against the torch scan (`models.ssd.ssd_scan_torch`), the previous chunked scan
(`mamba2.ssd_chunked`) and the naive recurrence (and mamba_ssm's torch reference where
importable), forward and forward+backward, at the cpu-tiny and cpu-small head shapes.

    python benchmarks/scan.py [--lengths 256 1024 4096] [--json out.json]

The scans are timed alternately in one process (same inputs, documents of ~200 positions), in
CPU seconds, so load hits them alike; the load average is recorded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import contended, load_average, machine, print_table, time_fn, write_json  # noqa: E402
from hnetbench.kernels import ssd_cpu  # noqa: E402
from hnetbench.models.mamba2 import ssd_chunked, ssd_naive  # noqa: E402
from hnetbench.models.ssd import ssd_scan, ssd_scan_torch  # noqa: E402

SHAPES = {"cpu-tiny": (8, 16, 16, 32), "cpu-small": (8, 32, 32, 64)}  # H, P, N, chunk


def inputs(L: int, b: int = 8, H: int = 8, P: int = 32, N: int = 32, G: int = 1):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, L, H, P, generator=g)
    dt = torch.rand(b, L, H, generator=g) * 0.1
    A = -torch.rand(H, generator=g)
    B = torch.randn(b, L, G, N, generator=g)
    C = torch.randn(b, L, G, N, generator=g)
    doc = (torch.rand(b, L, generator=g) < 1 / 200).long().cumsum(1)
    return x, dt, A, B, C, doc


def interleaved(fns: dict, repeats: int) -> dict:
    """Median CPU seconds of each callable, repetitions alternating between them (one thread:
    CPU time does not count the slices other processes take, wall time on a loaded machine
    does)."""
    import statistics
    import time

    for f in fns.values():
        f()
    times: dict = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.process_time()
            f()
            times[k].append(time.process_time() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def fwd_bwd(fn, x, dt, A, B, C, chunk, doc):  # noqa: ANN001, ANN201
    args = [t.detach().requires_grad_() for t in (x, dt, A, B, C)]

    def run() -> None:
        y, s = fn(*args, chunk, doc)
        (y.sum() + s.sum()).backward()

    return run


def mamba_ssm_reference():
    try:
        from mamba_ssm.ops.triton.ssd_combined import ssd_chunk_scan_combined_ref
    except Exception:  # noqa: BLE001 - CUDA-only package; absent on CPU machines
        return None
    return ssd_chunk_scan_combined_ref


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 2048])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--naive", action="store_true", help="also time the sequential loop")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    ref = mamba_ssm_reference()
    load_start = load_average()
    rows = []
    for shape, (H, P, N, chunk) in SHAPES.items():
        for L in args.lengths:
            x, dt, A, B, C, doc = inputs(L, H=H, P=P, N=N)
            scans = {"prev": ssd_chunked, "torch": ssd_scan_torch, "new": ssd_scan}
            with torch.no_grad():
                t = interleaved({k: (lambda f=f: f(x, dt, A, B, C, chunk, doc))
                                 for k, f in scans.items()}, args.repeats)
            tb = interleaved({k: fwd_bwd(f, x, dt, A, B, C, chunk, doc)
                              for k, f in scans.items()}, args.repeats)
            y1, _ = ssd_scan(x, dt, A, B, C, chunk, doc)
            y2, _ = ssd_chunked(x, dt, A, B, C, chunk, doc)
            row = {"shape": shape, "L": L}
            for k in scans:
                row[f"{k}_fwd_ms"], row[f"{k}_fwdbwd_ms"] = 1e3 * t[k], 1e3 * tb[k]
            row.update(fwd_speedup=t["prev"] / t["new"], fwdbwd_speedup=tb["prev"] / tb["new"],
                       fwdbwd_vs_torch=tb["torch"] / tb["new"],
                       max_abs_diff=(y1 - y2).abs().max().item())
            if args.naive:
                start = doc != torch.nn.functional.pad(doc, (1, 0), value=-1)[:, :-1]
                t_naive = time_fn(lambda: ssd_naive(x, dt, A, B, C, start), repeats=1, warmup=0)
                row["naive_fwd_ms"] = 1e3 * t_naive
            if ref is not None:
                t_ref = time_fn(lambda: ref(x, dt, A, B, C, chunk), repeats=3)
                row["mamba_ssm_ref_ms"] = 1e3 * t_ref
            rows.append(row)
            print(row, flush=True)
    load_end = load_average()
    print_table(rows, list(rows[0]))
    flag = " CONTENDED" if contended(load_start) else ""
    print(f"threads {torch.get_num_threads()}; load at start {load_start}, end {load_end}{flag}")
    print("new = " + ("the C scan" if ssd_cpu.available() else
                      f"the torch scan (C scan off: {ssd_cpu.why_not()})"))
    if ref is None:
        print("mamba_ssm not importable here (CUDA-only): its torch reference was not compared.")
    write_json(args.json, {"machine": machine(), "rows": rows, "mamba_ssm": ref is not None,
                           "c_scan": ssd_cpu.available(),
                           "load_start": load_start, "load_end": load_end,
                           "contended": contended(load_start)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
