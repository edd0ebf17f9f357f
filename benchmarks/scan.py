"""Mamba-2 scan: our chunked torch SSD against the naive recurrence (and mamba_ssm's torch
reference where importable).

    python benchmarks/scan.py [--lengths 256 1024 4096] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, time_fn, write_json  # noqa: E402
from hnetbench.models.mamba2 import ssd_chunked, ssd_naive  # noqa: E402


def inputs(L: int, b: int = 2, H: int = 8, P: int = 32, N: int = 32, G: int = 1):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, L, H, P, generator=g)
    dt = torch.rand(b, L, H, generator=g) * 0.1
    A = -torch.rand(H, generator=g)
    B = torch.randn(b, L, G, N, generator=g)
    C = torch.randn(b, L, G, N, generator=g)
    return x, dt, A, B, C


def mamba_ssm_reference():
    try:
        from mamba_ssm.ops.triton.ssd_combined import ssd_chunk_scan_combined_ref
    except Exception:  # noqa: BLE001 - CUDA-only package; absent on CPU machines
        return None
    return ssd_chunk_scan_combined_ref


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    ref = mamba_ssm_reference()
    rows = []
    for L in args.lengths:
        x, dt, A, B, C = inputs(L)
        t_chunk = time_fn(lambda: ssd_chunked(x, dt, A, B, C, args.chunk), repeats=3)
        t_naive = time_fn(lambda: ssd_naive(x, dt, A, B, C), repeats=1, warmup=0)
        y1, _ = ssd_chunked(x, dt, A, B, C, args.chunk)
        y2, _ = ssd_naive(x, dt, A, B, C)
        row = {"L": L, "chunked_ms": 1e3 * t_chunk, "naive_ms": 1e3 * t_naive,
               "speedup_vs_naive": t_naive / t_chunk, "max_abs_diff": (y1 - y2).abs().max().item()}
        if ref is not None:
            t_ref = time_fn(lambda: ref(x, dt, A, B, C, args.chunk), repeats=3)
            row["mamba_ssm_ref_ms"] = 1e3 * t_ref
            row["speedup_vs_mamba_ssm_ref"] = t_ref / t_chunk
        rows.append(row)
    print_table(rows, list(rows[0]))
    if ref is None:
        print("mamba_ssm not importable here (CUDA-only): its torch reference was not compared.")
    write_json(args.json, {"machine": machine(), "chunk": args.chunk, "rows": rows,
                           "mamba_ssm": ref is not None})
    return 0


if __name__ == "__main__":
    sys.exit(main())
