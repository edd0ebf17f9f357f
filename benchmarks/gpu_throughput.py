"""GPU training throughput and MFU, with mamba_ssm's fused scan and flash-attn when they import.

    python3 benchmarks/gpu_throughput.py [OUT.json] [--presets hnet-1stage@paper-L ...]
                                         [--batch 8] [--seq-bytes 8192] [--smoke]

Prepared to run as one short script when a GPU is lent: per preset, a few bf16-autocast
training steps (forward, backward, fused AdamW) on real text, median step time after warm-up,
bytes/s, and MFU against the datasheet bf16 peak (train/perf.py). The table says which fast
paths were live (mamba_ssm, flash_attn); without them the model falls back to the torch scan
and SDPA, which is a different benchmark and is labelled so. A preset whose GPT-2 tokenizer file
is not on the machine (nothing is downloaded) runs with a BPE of the same vocabulary size trained
on the local corpus instead: speed depends on the vocabulary size and bytes/token, not on which
merges were learned; the row says so. `--smoke` runs one cpu-tiny step on whatever device there
is, only to check this script.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json  # noqa: E402
from throughput import make_batch  # noqa: E402

PRESETS = ["hnet-1stage@paper-L", "hnet-2stage@paper-L", "transformer-bpe@paper-L",
           "mambabyte@paper-L"]


def fast_paths() -> dict:
    from hnetbench.models import attention, mamba2

    return {"mamba_ssm": mamba2.mamba_chunk_scan_combined is not None,
            "flash_attn": getattr(attention, "flash_attn_varlen_func", None) is not None}


def bench(preset: str, batch: int, seq_bytes: int, steps: int, device: torch.device) -> dict:
    from hnetbench.config import resolve
    from hnetbench.data.corpus import DataError
    from hnetbench.flops import flops_per_byte
    from hnetbench.models import build_model
    from hnetbench.train.perf import check_mfu, peak_flops

    cfg, note = resolve(base={"preset": preset}), None
    try:
        x, y, n_bytes, bpt = make_batch(cfg, batch, seq_bytes, device.type)
    except DataError:
        if cfg.data.tokenizer != "gpt2":
            raise
        cfg = resolve(base={"preset": preset}, overrides=["data.tokenizer=bpe",
                                                           "data.bpe_vocab_size=50257"])
        note = "no GPT-2 file here: a 50257-id BPE trained on the local corpus"
        x, y, n_bytes, bpt = make_batch(cfg, batch, seq_bytes, device.type)
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    amp = device.type == "cuda"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x, targets=y)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = []
    for i in range(steps + 2):  # two warm-up steps
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        stats = model(x, targets=y).stats or {}
    comp = [stats[k] for k in sorted(stats) if k.endswith("/bytes_per_chunk")]
    stage = [c / (comp[i - 1] if i else 1.0) for i, c in enumerate(comp)] or None
    rep = flops_per_byte(cfg.model, bytes_per_token=bpt, compression=stage, seq_len=seq_bytes)
    bps = n_bytes / sec
    peak = peak_flops(device, low_precision=amp)
    mfu, why = check_mfu(rep.train_per_byte * bps / peak if peak else None, peak)
    row = {"preset": preset, "params": rep.params, "step_s": sec, "bytes_per_s": bps, "mfu": mfu,
           "peak_flops": float(peak) if peak else None}
    if why:
        row["mfu_refused"] = why
    if note:
        row["tokenizer"] = note
    if device.type == "cuda":
        row["max_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=None)
    ap.add_argument("--presets", nargs="+", default=PRESETS)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-bytes", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("gpu_throughput.py: no CUDA device here (use --smoke to check the script on CPU)")
        return 0
    device = torch.device("cuda" if cuda else "cpu")
    if args.smoke:
        args.presets, args.batch, args.seq_bytes, args.steps = (
            ["hnet-1stage@cpu-tiny"], 2, 128, 1)
    paths = fast_paths()
    print(f"device {machine().get('gpu', 'cpu')}; fast paths {paths}; load {os.getloadavg()}")
    rows = []
    for p in args.presets:
        try:
            rows.append(bench(p, args.batch, args.seq_bytes, args.steps, device))
        except torch.OutOfMemoryError:
            rows.append({"preset": p, "error": "out of memory"})
            torch.cuda.empty_cache()
        print(rows[-1], flush=True)
        write_json(args.out, {"machine": machine(), "fast_paths": paths, "batch": args.batch,
                              "seq_bytes": args.seq_bytes, "rows": rows})  # kept if cut short
    print_table(rows, ["preset", "params", "step_s", "bytes_per_s", "mfu", "max_mem_gib"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
