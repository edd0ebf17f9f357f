"""Peak FLOP/s for MFU: a table for known CUDA GPUs, a short fp32 matmul measurement on CPU
(best of several repetitions, cached, re-measured when stale or when a run finds MFU > 1)."""

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


def measure_cpu_peak(n: int = 1024, seconds: float = 0.6, reps: int = 7) -> float:
    """Best FLOP/s of an n x n fp32 matmul over `reps` short repetitions with the current
    thread count. The best, not the mean: other load only ever slows a repetition down, so the
    fastest one is the closest to the machine's peak. Its own RNG: the global one is left
    untouched so measuring never changes a run."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    a @ b
    best, deadline = 0.0, time.perf_counter() + seconds
    for i in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2.0 * n**3 / (time.perf_counter() - t0))
        if i >= 2 and time.perf_counter() > deadline:
            break
    return best


def _torch_installed_at() -> float:
    """When the installed torch was written (a newer torch invalidates a cached peak)."""
    try:
        return os.path.getmtime(torch.__file__)
    except OSError:
        return 0.0


def load_average() -> list[float] | None:
    """os.getloadavg() (1, 5, 15 minutes), None where the OS has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


class PeakInfo(float):
    """A peak FLOP/s value that remembers where it came from (`source`: table, measured, cached)
    and the machine load when it was measured."""

    source: str = "measured"
    measured_load: list[float] | None = None


def _peak(value: float, source: str, load: list[float] | None) -> PeakInfo:
    p = PeakInfo(value)
    p.source, p.measured_load = source, load
    return p


def _contended(load: list[float] | None) -> bool:
    """More runnable processes than cores: a measurement now is too low."""
    return bool(load) and load[0] > (os.cpu_count() or 1)


def cpu_peak(refresh: bool = False) -> PeakInfo:
    """fp32 matmul peak at the current thread count, cached per (host, cpu, torch, threads,
    dtype) in ~/.cache/hnetbench/peak_flops.json. Measured again when `refresh` (a run found
    MFU > 1), when the entry predates the installed torch, when it was taken under contention
    (1-minute load above the cores), or when it is of the old bare-number kind (never checked).
    A new measurement never lowers a current entry: load only ever slows a measurement."""
    cpu = platform.processor() or platform.machine()
    key = (f"{platform.node()}|{cpu}|torch {torch.__version__}|threads {torch.get_num_threads()}"
           f"|float32")
    path = _cache_file()
    cache: dict = {}
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(key) if isinstance(cache, dict) else None
    current = (isinstance(entry, dict) and isinstance(entry.get("flops"), float)
               and entry.get("at", 0.0) >= _torch_installed_at())
    if current and not refresh and not entry.get("contended"):
        return _peak(entry["flops"], "cached", entry.get("load"))
    load = load_average()
    peak = measure_cpu_peak()
    contended = _contended(load)
    if current and entry["flops"] >= peak:
        peak, load, contended = entry["flops"], entry.get("load"), bool(entry.get("contended"))
    try:
        cache = cache if isinstance(cache, dict) else {}
        cache[key] = {"flops": float(peak), "at": time.time(), "load": load,
                      "contended": contended}
        atomic_write_text(path, json.dumps(cache, indent=1))
    except OSError:
        pass  # read-only home: measure again next time
    return _peak(peak, "measured under load" if contended else "measured", load)


def check_mfu(mfu: float | None, peak: float | None) -> tuple[float | None, str | None]:
    """(mfu, None) when plausible; (None, reason) for an MFU above 1, which is never a result:
    the peak it divides by was too low (measured under load, or stale)."""
    if mfu is None or mfu <= 1.0:
        return mfu, None
    src = getattr(peak, "source", "?")
    load = getattr(peak, "measured_load", None)
    return None, (f"MFU {mfu:.2f} > 1 refused: the {src} peak of {peak / 1e9:.1f} GFLOP/s is "
                  f"too low (measured under load {load} or stale)")


def peak_flops(device: torch.device, low_precision: bool, refresh: bool = False) -> float | None:
    """Peak FLOP/s of one device, or None when unknown (then MFU is not reported)."""
    if device.type == "cpu":
        return cpu_peak(refresh)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, bf16, fp32 in CUDA_PEAKS:
            if key in name:
                return _peak(bf16 if low_precision else fp32, "table", None)
    return None
