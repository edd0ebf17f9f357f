"""train/malloc.py: freed memory stays in the process, so a repeated allocation stops faulting."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CHILD = r"""
import json, resource, sys
import torch
from hnetbench.train.malloc import keep_freed_memory
kept = keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # the first allocations fault either way: the heap grows to its steady
    torch.ones(16 << 20)  # size over the first few (2 were too few on some machines)
f0 = faults()
for _ in range(20):  # 64 MiB allocated, written, freed: above glibc's largest dynamic mmap
    torch.ones(16 << 20)  # threshold (32 MiB), so each one is a fresh mapping by default
print(json.dumps({"kept": kept, "faults": faults() - f0}))
"""


def _run(malloc: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "HNETBENCH_MALLOC"}
    if malloc is not None:
        env["HNETBENCH_MALLOC"] = malloc
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_memory_stops_page_faults_and_the_switch_turns_it_off() -> None:
    kept, default = _run(None), _run("default")
    assert kept["kept"] is True and default["kept"] is False
    # 20 x 64 MiB through fresh mappings: ~16,384 faults each; kept: the same pages again
    assert default["faults"] > 20 * 10_000, default
    # kept: at most one allocation's pages again (where the heap grew once more), not twenty
    assert kept["faults"] < default["faults"] / 5, (kept, default)


def test_the_trainer_keeps_memory_on_cpu(tmp_path) -> None:  # noqa: ANN001
    """The trainer sets it up for CPU runs (the flag is per process: checked in a child)."""
    code = (
        "from hnetbench.config import resolve\n"
        "from hnetbench.train.trainer import Trainer\n"
        "from hnetbench.train.distributed import init_distributed\n"
        "from hnetbench.train import malloc\n"
        "from pathlib import Path\n"
        "cfg = resolve(base={'preset': 'hnet-1stage@cpu-tiny', 'train': {'device': 'cpu'}})\n"
        f"Trainer(cfg, Path({str(tmp_path)!r}), init_distributed('cpu'))\n"
        "print(malloc._done)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HNETBENCH_MALLOC"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == ("True" if sys.platform.startswith("linux")
                                                    else "False")
