"""What machine a number came from: the CPU's name and, for training, the vector ISA torch's
CPU kernels run with.

float32 training is bitwise reproducible on one kind of machine, not across kinds: torch picks
its vectorised CPU kernels per ISA (`torch.backends.cpu.get_cpu_capability()`: AVX512, AVX2,
...; `ATEN_CPU_CAPABILITY` overrides it), and a reduction over 16 lanes sums in another order
than one over 8. Measured at stop 29: 24 training steps under AVX2 and DEFAULT kernels differ
in the 7th digit of the loss from step 4-9 on, for every family; the BPE Transformer and
Mamba-2 stay there (`reproduce` on an AVX2 machine gave their BPBs to ~1e-10 of an AVX-512
one's), while an H-Net's discrete chunk boundaries grow the difference (1.5e-4 in the loss at
step 24; up to 0.02 BPB after `reproduce`'s 512 steps). Each run's summary records this, so a
reader can tell a rerun on another kind of machine from a changed result.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def training_machine(device: str = "cpu") -> dict[str, str]:
    """{"cpu", "cpu_capability", "torch", ["gpu"]}: what a run's numbers depend on."""
    import torch

    out = {"cpu": f"{cpu_model()} ({os.cpu_count()} cores)",
           "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
           "torch": torch.__version__}
    if device.startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
    return out


def machine_label(m: dict) -> str:
    """One line for a training_machine() dict: 'AMD EPYC (2 cores), torch 2.13.0+cpu, AVX2'."""
    parts = [m.get("cpu", "?"), f"torch {m.get('torch', '?')}", m.get("cpu_capability", "?")]
    if m.get("gpu"):
        parts.insert(1, m["gpu"])
    return ", ".join(parts)
