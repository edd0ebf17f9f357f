"""Pure helpers: LR schedules (exact WSD shape: warmup, stable, 1-sqrt decay to 0; cosine;
constant), distributed environment parsing, and the peak FLOP/s used for MFU."""

import math

import pytest
import torch
from hnetbench.train import perf
from hnetbench.train.distributed import _first_slurm_host, env_world
from hnetbench.train.schedule import lr_factor, phase_lengths


def test_wsd_shape():
    total = 100
    f = [lr_factor(t, total, "wsd", 0.1, 0.2) for t in range(total)]
    assert phase_lengths(total, 0.1, 0.2) == (10, 20)
    # linear warmup reaching 1 on the last warmup update, never 0
    assert f[:10] == pytest.approx([(t + 1) / 10 for t in range(10)])
    assert f[10:80] == [1.0] * 70  # stable
    decay = f[80:]
    assert decay == pytest.approx([1 - math.sqrt((k + 1) / 21) for k in range(20)])
    assert all(a > b for a, b in zip(decay, decay[1:]))  # strictly decreasing
    assert 0 < decay[-1] < 0.03  # the virtual step 100 would be exactly 0
    assert lr_factor(100, total, "wsd", 0.1, 0.2) == 0.0


def test_cosine_and_constant():
    total = 50
    c = [lr_factor(t, total, "cosine", 0.1, 0.2) for t in range(total)]
    assert c[4] == 1.0 and c[0] == pytest.approx(0.2)
    assert all(a >= b for a, b in zip(c[5:], c[6:]))
    assert 0 < c[-1] < 0.01
    k = [lr_factor(t, total, "constant", 0.1, 0.2) for t in range(total)]
    assert k[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0]) and set(k[5:]) == {1.0}


def test_tiny_totals_and_no_warmup():
    assert lr_factor(0, 1, "wsd", 0.1, 0.2) == 1.0  # warmup takes the only step
    assert lr_factor(0, 3, "wsd", 0.0, 0.0) == 1.0
    assert lr_factor(2, 3, "wsd", 0.0, 0.5) < 1.0
    with pytest.raises(ValueError, match="train.schedule"):
        lr_factor(0, 10, "linear")


def test_env_world(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID"):
        monkeypatch.delenv(k, raising=False)
    assert env_world() == (0, 1, 0)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert env_world() == (3, 4, 1)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert env_world() == (1, 2, 0)  # torchrun wins over Slurm
    assert _first_slurm_host("gpu[03-05,07],cpu1") == "gpu03"
    assert _first_slurm_host("node7") == "node7"


def test_peak_flops_cached_and_table(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []
    real = perf.measure_cpu_peak

    def quick():
        calls.append(1)
        return real(n=128, seconds=0.05)

    monkeypatch.setattr(perf, "measure_cpu_peak", quick)
    monkeypatch.setattr(perf, "load_average", lambda: [0.1, 0.1, 0.1])  # a quiet machine
    first = perf.peak_flops(torch.device("cpu"), low_precision=False)
    assert first > 1e8 and calls == [1]  # any real CPU does > 0.1 GFLOP/s
    assert perf.peak_flops(torch.device("cpu"), low_precision=False) == first and calls == [1]
    assert (tmp_path / "hnetbench" / "peak_flops.json").is_file()
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H100 80GB HBM3")
    assert perf.peak_flops(torch.device("cuda", 0), low_precision=True) == 989e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H100 PCIe")
    assert perf.peak_flops(torch.device("cuda", 0), low_precision=True) == 756e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Mystery GPU")
    assert perf.peak_flops(torch.device("cuda", 0), low_precision=True) is None
