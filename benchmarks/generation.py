"""Generation bytes/s with caches against recomputing the full prefix, at 1k bytes of context.

    python benchmarks/generation.py [--presets hnet-1stage@cpu-small ...] [--context 1024]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, text_bytes, write_json  # noqa: E402


def recompute_generate(model, prompt: torch.Tensor, n: int) -> None:
    """Greedy decoding that runs the whole prefix through the model for every new byte."""
    ids = prompt
    for _ in range(n):
        logits = model(ids).logits[:, -1]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)


def main(argv: list[str] | None = None) -> int:
    from hnetbench.config import resolve
    from hnetbench.models import build_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+",
                    default=["llamabyte@cpu-small", "mambabyte@cpu-small", "hnet-1stage@cpu-small",
                             "hnet-2stage@cpu-small"])
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    prompt = list(text_bytes(args.context))
    rows = []
    for preset in args.presets:
        cfg = resolve(base={"preset": preset})
        torch.manual_seed(0)
        model = build_model(cfg.model).eval()
        t0 = time.perf_counter()
        model.generate([prompt], args.new, greedy=True)
        cached = time.perf_counter() - t0
        with torch.no_grad():
            t0 = time.perf_counter()
            recompute_generate(model, torch.tensor([prompt]), args.new)
            full = time.perf_counter() - t0
        rows.append({"preset": preset, "cached_bytes_per_s": args.new / cached,
                     "recompute_bytes_per_s": args.new / full, "cache_speedup": full / cached})
    print_table(rows, list(rows[0]))
    write_json(args.json, {"machine": machine(), "context": args.context, "new": args.new,
                           "rows": rows, "note": "cached time includes the prompt's prefill"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
