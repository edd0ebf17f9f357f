"""Shared helpers for the benchmarks: timing, the machine's fp32 matmul peak, output files.

Benchmarks are not tests: they print a table and write JSON. Quote ratios measured in one run.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def machine() -> dict:
    """training_machine()'s record (CPU, torch, torch's CPU capability, GPU) plus the threads and
    date: benchmark figures depend on the vector ISA as run results do (machine.py)."""
    from hnetbench.machine import training_machine

    info: dict = training_machine("cuda" if torch.cuda.is_available() else "cpu")
    info.update(cores=os.cpu_count(), threads=torch.get_num_threads(),
                date=time.strftime("%Y-%m-%d"))
    return info


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_fn(
    fn: Callable[[], object], repeats: int = 5, warmup: int = 1, device: str = "cpu"
) -> float:
    """Median wall seconds of `fn()` over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak_flops(n: int = 1024, device: str = "cpu", dtype=torch.float32) -> float:
    """Measured dense matmul FLOP/s of this machine (the MFU denominator, same run): the best of
    several repetitions, since other load only ever slows one down."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    best = float("inf")
    for _ in range(9):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def contended(load: list[float]) -> bool:
    """True when the 1-minute load exceeds the cores this process uses: figures are inflated."""
    return load[0] > torch.get_num_threads()


def write_json(path: str | os.PathLike | None, payload: dict) -> None:
    if not path:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, p)


def print_table(rows: list[dict], columns: list[str]) -> None:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    widths = [max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(fmt(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)))


def run_training(cfg):  # noqa: ANN001, ANN201
    """(model, its fused AdamW at the config's learning rate, an iterator over training
    batches) for a resolved run config, the model built after torch.manual_seed(0), as the
    trainer would."""
    from hnetbench.data import build_loader
    from hnetbench.models import build_model

    torch.manual_seed(0)
    model = build_model(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, fused=True)
    return model, opt, iter(build_loader(cfg.data, "train", 0))


def preset_training(preset: str):  # noqa: ANN201
    """(config, model, optimizer, training batches) for a preset: `run_training` of it."""
    from hnetbench.config import resolve

    cfg = resolve(base={"preset": preset})
    return (cfg, *run_training(cfg))


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict):  # noqa: ANN201
    """One training step (forward, backward, optimizer) on a loader batch; returns the model's
    output."""
    out = model(batch["input_ids"], targets=batch["targets"], doc_start=batch["doc_start"])
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return out


def text_bytes(n: int, domain: str = "en") -> bytes:
    """n bytes of real training text (routing speed depends on content, so no random bytes)."""
    from hnetbench.data import load_documents

    out = bytearray()
    for doc in load_documents(domain, "train"):
        out += doc
        if len(out) >= n:
            break
    while len(out) < n:
        out += out
    return bytes(out[:n])
