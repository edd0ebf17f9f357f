"""Peak FLOP/s for MFU: a table for known CUDA GPUs, a short fp32 matmul measurement on CPU."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch
from hnetbench.config import atomic_write_text

# Dense (no sparsity) peak FLOP/s per GPU from vendor datasheets: (bf16, fp32-or-tf32).
CUDA_PEAKS: list[tuple[str, float, float]] = [
    ("H200", 989e12, 494e12),
    ("H100 PCIe", 756e12, 378e12),
    ("H100", 989e12, 494e12),
    ("A100", 312e12, 156e12),
    ("L40S", 362e12, 183e12),
    ("L4", 121e12, 60e12),
    ("A10G", 70e12, 35e12),
    ("A10", 125e12, 62.5e12),
    ("RTX 4090", 165e12, 82.6e12),
    ("RTX 3090", 71e12, 35.6e12),
    ("V100", 125e12, 15.7e12),  # fp16 tensor cores (V100 has no bf16)
    ("T4", 65e12, 8.1e12),
]


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hnetbench" / "peak_flops.json"


def measure_cpu_peak(n: int = 512, seconds: float = 0.3) -> float:
    """FLOP/s of an n x n fp32 matmul with the current thread count (its own RNG: the global one
    is left untouched so measuring never changes a run)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    for _ in range(3):
        a @ b
    reps, start = 0, time.perf_counter()
    while True:
        a @ b
        reps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and reps >= 5:
            return 2.0 * n**3 * reps / elapsed


def cpu_peak() -> float:
    """Measured once per (host, torch version, thread count) and cached in
    ~/.cache/hnetbench/peak_flops.json."""
    cpu = platform.processor() or platform.machine()
    key = f"{platform.node()}|{cpu}|torch {torch.__version__}|threads {torch.get_num_threads()}"
    path = _cache_file()
    cache: dict = {}
    try:
        cache = json.loads(path.read_text())
        if isinstance(cache.get(key), (int, float)):
            return float(cache[key])
    except (OSError, ValueError, AttributeError):
        cache = {}
    peak = measure_cpu_peak()
    try:
        cache[key] = peak
        atomic_write_text(path, json.dumps(cache, indent=1))
    except OSError:
        pass  # read-only home: measure again next time
    return peak


def peak_flops(device: torch.device, low_precision: bool) -> float | None:
    """Peak FLOP/s of one device, or None when unknown (then MFU is not reported)."""
    if device.type == "cpu":
        return cpu_peak()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, bf16, fp32 in CUDA_PEAKS:
            if key in name:
                return bf16 if low_precision else fp32
    return None
