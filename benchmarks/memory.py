"""Peak memory of one training step per family (each family in a fresh subprocess).

CPU: peak resident set size growth over the step (ru_maxrss); CUDA: max_memory_allocated.

    python benchmarks/memory.py [--scale cpu-small] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json  # noqa: E402
from throughput import FAMILIES  # noqa: E402

CHILD = r"""
import json, resource, sys, torch
sys.path.insert(0, {bench!r})
from throughput import make_batch
from hnetbench.config import resolve
from hnetbench.models import build_model
cfg = resolve(base={{"preset": {preset!r}}})
dev = "cuda" if torch.cuda.is_available() else "cpu"
model = build_model(cfg.model).to(dev)
x, y, n_bytes, _ = make_batch(cfg, {batch}, {seq}, dev)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model(x, targets=y).loss.backward()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
peak = torch.cuda.max_memory_allocated() if dev == "cuda" else (after - before) * 1024
print(json.dumps({{"peak_bytes": peak, "device": dev}}))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="cpu-small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-bytes", type=int, default=512)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rows = []
    for fam in FAMILIES:
        code = CHILD.format(bench=str(Path(__file__).resolve().parent),
                            preset=f"{fam}@{args.scale}", batch=args.batch, seq=args.seq_bytes)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"preset": f"{fam}@{args.scale}", "peak_MiB": res["peak_bytes"] / 2**20,
                     "device": res["device"]})
    print_table(rows, ["preset", "peak_MiB", "device"])
    write_json(args.json, {"machine": machine(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
