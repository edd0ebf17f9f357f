"""Training throughput (bytes/s) and MFU of every family, and H-Net's overhead ratio.

    python benchmarks/throughput.py [--scales cpu-tiny cpu-small] [--json out.json]

MFU = (analytic training FLOPs per byte x bytes/s) / measured fp32 matmul peak, same run.
H-Net overhead = H-Net bytes/s / BPE Transformer bytes/s at the same scale (paper: up to ~2x
slower, i.e. ratio >= 0.5; our goal is >= 0.75).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    contended,
    load_average,
    machine,
    matmul_peak_flops,
    print_table,
    text_bytes,
    time_fn,
    write_json,
)

FAMILIES = ["transformer-bpe", "llamabyte", "mambabyte", "spacebyte", "spacebyte++",
            "hnet-space", "hnet-pool", "hnet-1stage", "hnet-2stage"]


def make_batch(run_cfg, batch: int, seq_bytes: int, device: str):
    """A batch of real text: (input_ids, targets, bytes covered)."""
    from hnetbench.data import get_tokenizer

    raw = text_bytes(batch * (seq_bytes + 1) * 2)
    if run_cfg.data.tokenizer == "bytes":
        ids = torch.tensor(list(raw[: batch * (seq_bytes + 1)])).view(batch, seq_bytes + 1)
        return ids[:, :-1].to(device), ids[:, 1:].to(device), batch * seq_bytes, 1.0
    tok = get_tokenizer(run_cfg.data)
    ids = tok.encode(raw)
    n_bytes_total = sum(len(tok.token_bytes(i)) for i in ids)
    bpt = n_bytes_total / len(ids)
    t = max(8, round(seq_bytes / bpt))
    ids = torch.tensor(ids[: batch * (t + 1)]).view(batch, t + 1)
    return ids[:, :-1].to(device), ids[:, 1:].to(device), round(batch * t * bpt), bpt


def bench_family(preset: str, batch: int, seq_bytes: int, device: str, repeats: int) -> dict:
    from hnetbench.config import resolve
    from hnetbench.flops import flops_per_byte
    from hnetbench.models import build_model

    cfg = resolve(base={"preset": preset})
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y, n_bytes, bpt = make_batch(cfg, batch, seq_bytes, device)

    def step() -> None:
        out = model(x, targets=y)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sec = time_fn(step, repeats=repeats, warmup=1, device=device)
    with torch.no_grad():
        stats = model(x, targets=y).stats
    comp = [stats[k] for k in sorted(stats) if k.endswith("/bytes_per_chunk")]
    # per-stage compression from cumulative bytes per chunk
    stage_comp = [c / (comp[i - 1] if i else 1.0) for i, c in enumerate(comp)] or None
    rep = flops_per_byte(cfg.model, bytes_per_token=bpt, compression=stage_comp, seq_len=seq_bytes)
    return {"preset": preset, "params": rep.params, "bytes_per_s": n_bytes / sec,
            "step_s": sec, "train_flops_per_byte": rep.train_per_byte,
            "bytes_per_chunk": comp[-1] if comp else bpt}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", nargs="+", default=["cpu-tiny", "cpu-small"])
    ap.add_argument("--families", nargs="+", default=FAMILIES)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-bytes", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    load_start = load_average()
    peak = matmul_peak_flops(device=args.device)
    rows = []
    for scale in args.scales:
        for fam in args.families:
            r = bench_family(f"{fam}@{scale}", args.batch, args.seq_bytes, args.device,
                             args.repeats)
            r["scale"] = scale
            r["mfu"] = r["train_flops_per_byte"] * r["bytes_per_s"] / peak
            if r["mfu"] > 1:  # never a result: the peak was measured under load
                r["mfu_refused"], r["mfu"] = f"MFU {r['mfu']:.2f} > 1 (peak too low)", None
            rows.append(r)
        ref = next((r for r in rows if r["preset"] == f"transformer-bpe@{scale}"), None)
        for r in rows:
            if ref and r["scale"] == scale:
                r["speed_vs_bpe"] = r["bytes_per_s"] / ref["bytes_per_s"]
                r["flops_vs_bpe"] = r["train_flops_per_byte"] / ref["train_flops_per_byte"]
    load_end = load_average()
    flag = " CONTENDED: figures inflated by other load" if contended(load_start) else ""
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s ({torch.get_num_threads()} threads); "
          f"load at start {load_start}, end {load_end}{flag}")
    print_table(rows, ["preset", "params", "bytes_per_s", "mfu", "train_flops_per_byte",
                       "flops_vs_bpe", "speed_vs_bpe", "bytes_per_chunk"])
    write_json(args.json, {"machine": machine(), "peak_flops": peak, "batch": args.batch,
                           "load_start": load_start, "load_end": load_end,
                           "contended": contended(load_start),
                           "seq_bytes": args.seq_bytes, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
