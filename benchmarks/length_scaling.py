"""Forward+backward time against sequence length (L = 1k, 2k, 4k, 8k bytes) per family.

The slope of log(time) against log(L) is printed: ~1 for Mamba-2 layers (linear), up to 2 for
global attention.

    python benchmarks/length_scaling.py [--lengths 1024 2048 4096 8192] [--json out.json]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, text_bytes, time_fn, write_json  # noqa: E402


def slope(xs: list[float], ys: list[float]) -> float:
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main(argv: list[str] | None = None) -> int:
    from hnetbench.config import resolve
    from hnetbench.models import build_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+",
                    default=["llamabyte-global@cpu-tiny", "mambabyte@cpu-tiny",
                             "hnet-1stage@cpu-tiny", "hnet-2stage@cpu-tiny"])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    raw = text_bytes(max(args.lengths) + 1)
    rows = []
    for preset in args.presets:
        cfg = resolve(base={"preset": preset}, overrides=[f"model.max_seq_len={max(args.lengths)}"])
        torch.manual_seed(0)
        model = build_model(cfg.model)
        row: dict = {"preset": preset}
        times = []
        for L in args.lengths:
            ids = torch.tensor(list(raw[: L + 1]))[None]
            x, y = ids[:, :-1], ids[:, 1:]

            def fb() -> None:
                model(x, targets=y).loss.backward()
                model.zero_grad(set_to_none=True)

            t = time_fn(fb, repeats=2, warmup=1)
            times.append(t)
            row[f"L{L}_s"] = t
        row["loglog_slope"] = slope([float(v) for v in args.lengths], times)
        rows.append(row)
    print_table(rows, list(rows[0]))
    write_json(args.json, {"machine": machine(), "lengths": args.lengths, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
