"""Issue 21/25 plumbing: block compilation (bucketing, modes), threads per side-by-side run,
and an MFU that is never above 1."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hnetbench.config import ConfigError
from hnetbench.sweeps import executors, threads
from hnetbench.train import compile as comp
from hnetbench.train import perf


def test_bucket_rounds_up_within_a_quarter():
    assert [comp.bucket(n) for n in (1, 32, 33, 40, 41, 64, 65, 100, 512, 513)] == [
        32, 32, 40, 40, 48, 64, 80, 112, 512, 640]
    for n in range(1, 5000, 7):
        b = comp.bucket(n)
        assert n <= b <= max(32, 1.25 * n)
    # a length range an inner stage sees over many steps maps to few shapes
    assert len({comp.bucket(n) for n in range(150, 260)}) <= 5


def test_compile_modes(monkeypatch):
    cpu = torch.device("cpu")
    assert comp.normalize_mode(True) == "blocks" and comp.normalize_mode(False) == "off"
    with pytest.raises(ConfigError, match="train.compile: expected one of auto|off|blocks"):
        comp.normalize_mode("fast")
    # auto compiles only runs long enough for a cold compile to pay back; tests' runs are short
    assert comp.resolve_mode("auto", cpu, 64 * 8 * 512) == "off"
    assert comp.resolve_mode("auto", cpu, comp.AUTO_MIN_BYTES) == "blocks"
    assert comp.resolve_mode("auto", torch.device("cuda"), 10**12) == "off"
    assert comp.resolve_mode("blocks", cpu, 1) == "blocks"


@pytest.mark.slow
def test_compiled_blocks_equal_eager_across_chunk_counts(monkeypatch):
    """Bucketed block calls (dynamo tracing with the eager backend, so no C++ compile in the
    suite) give the eager model's loss and gradients, and varying inner lengths reuse shapes."""
    from hnetbench.baselines import preset_dict
    from hnetbench.config import RunConfig, from_dict
    from hnetbench.models import build_model

    monkeypatch.setattr(comp, "BACKEND", "eager")
    monkeypatch.setattr(comp, "_compiled_block_call", None)
    cfg = from_dict(RunConfig, preset_dict("hnet-1stage@cpu-tiny")).model
    torch.manual_seed(0)
    eager = build_model(cfg)
    compiled = build_model(cfg)
    compiled.load_state_dict(eager.state_dict())
    stats = comp.compile_blocks(compiled, "blocks")
    g = torch.Generator().manual_seed(0)
    for L in (61, 77):  # different lengths -> different chunk counts inside
        ids = torch.randint(0, cfg.vocab_size, (2, L), generator=g)
        out_e, out_c = eager(ids, targets=ids), compiled(ids, targets=ids)
        torch.testing.assert_close(out_c.loss, out_e.loss, rtol=1e-5, atol=1e-6)
        out_e.loss.backward()
        out_c.loss.backward()
        for (name, pe), pc in zip(eager.named_parameters(), compiled.parameters()):
            torch.testing.assert_close(pc.grad, pe.grad, rtol=1e-4, atol=1e-6, msg=name)
        eager.zero_grad()
        compiled.zero_grad()
    assert 0 < len(stats.shapes) <= 4  # (mamba, attention) x bucket 64/80 at most
    assert stats.as_metrics()["compile_mode"] == "blocks"
    with torch.no_grad():  # evaluation stays eager
        n = len(stats.shapes)
        compiled(torch.randint(0, cfg.vocab_size, (1, 200)))
        assert len(stats.shapes) == n


def test_threads_per_run_and_executor_env(monkeypatch):
    monkeypatch.delenv("HNETBENCH_THREADS", raising=False)
    assert threads.threads_per_run(1, cores=8) == 8
    assert threads.threads_per_run(3, cores=8) == 2
    assert threads.threads_per_run(16, cores=8) == 1
    monkeypatch.setenv("HNETBENCH_THREADS", "3")
    assert threads.threads_per_run(4, cores=8) == 3
    monkeypatch.delenv("HNETBENCH_THREADS")
    assert threads.threads_for_slurm_task({"SLURM_CPUS_PER_TASK": "6"}) == 6
    assert threads.threads_for_slurm_task({}) is None
    # a child torch takes the share it is given
    env = threads.thread_env(1)
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                         env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout) == threads.available_cores()


@pytest.mark.parametrize("zygote", ["0", "1"])
def test_local_executor_gives_each_run_its_share(tmp_path, monkeypatch, zygote):
    """Fresh processes (HNETBENCH_ZYGOTE=0) and forked jobs get the same thread shares."""
    from hnetbench.sweeps import zygote as zygote_mod

    monkeypatch.delenv("HNETBENCH_THREADS", raising=False)
    monkeypatch.setenv("HNETBENCH_ZYGOTE", zygote)
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    seen: list[str] = []

    class Done:
        pid = 0

        def __init__(self, cmd, env, **kw):  # noqa: ANN001
            seen.append(env["OMP_NUM_THREADS"])

        def poll(self) -> int:
            return 0

    class Forker:
        def start(self, run_dir, log, env):  # noqa: ANN001, ANN201
            return Done(None, env)

    monkeypatch.setattr(executors.subprocess, "Popen", Done)
    monkeypatch.setattr(zygote_mod, "shared_zygote", lambda: Forker())
    dirs = [tmp_path / f"r{i}" for i in range(3)]
    for d in dirs:
        d.mkdir()
    out = executors.run_local(None, tmp_path, dirs, 2, lambda s: None)
    assert set(out.values()) == {"completed"}
    # two side by side get 2 threads each; the last one, alone, gets all 4
    assert seen == ["2", "2", "4"]


def test_mfu_above_one_is_refused_and_peak_refreshed(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    values = iter([1e9, 5e9])  # a stale low first measurement, then a good one
    monkeypatch.setattr(perf, "measure_cpu_peak", lambda: next(values))
    monkeypatch.setattr(perf, "load_average", lambda: [0.5, 0.5, 0.5])
    low = perf.peak_flops(torch.device("cpu"), low_precision=False)
    assert low == 1e9 and low.source == "measured" and low.measured_load is not None
    assert perf.peak_flops(torch.device("cpu"), False) == 1e9  # cached
    mfu, why = perf.check_mfu(1.7, low)
    assert mfu is None and "MFU 1.70 > 1 refused" in why and "1.0 GFLOP/s" in why
    assert perf.check_mfu(0.4, low) == (0.4, None)
    fresh = perf.peak_flops(torch.device("cpu"), False, refresh=True)
    assert fresh == 5e9 and fresh.source == "measured"
    assert perf.peak_flops(torch.device("cpu"), False) == 5e9  # the refreshed value is kept


def test_peak_taken_under_load_is_not_trusted(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    values = iter([1e9, 0.5e9, 4e9])
    monkeypatch.setattr(perf, "measure_cpu_peak", lambda: next(values))
    busy = [[99.0, 50.0, 20.0], [99.0, 50.0, 20.0], [0.2, 0.2, 0.2]]
    monkeypatch.setattr(perf, "load_average", lambda: busy.pop(0))
    first = perf.peak_flops(torch.device("cpu"), False)
    assert first == 1e9 and first.source == "measured under load"
    # measured again next time; a lower value under load does not replace the higher one
    assert perf.peak_flops(torch.device("cpu"), False) == 1e9
    quiet = perf.peak_flops(torch.device("cpu"), False)
    assert quiet == 4e9 and quiet.source == "measured"
    assert perf.peak_flops(torch.device("cpu"), False).source == "cached"  # quiet: kept


def test_cached_peak_older_than_torch_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    values = iter([2e9, 3e9])
    monkeypatch.setattr(perf, "measure_cpu_peak", lambda: next(values))
    monkeypatch.setattr(perf, "load_average", lambda: [0.5, 0.5, 0.5])
    assert perf.peak_flops(torch.device("cpu"), False) == 2e9
    monkeypatch.setattr(perf, "_torch_installed_at", lambda: 4e12)  # torch installed "later"
    assert perf.peak_flops(torch.device("cpu"), False) == 3e9


def test_measured_peak_is_the_best_repetition():
    p = perf.measure_cpu_peak(n=128, seconds=0.05, reps=5)
    assert 1e8 < p < 1e13


def test_run_records_peak_load_compile_and_refuses_impossible_mfu(tmp_path, monkeypatch):
    import json

    from hnetbench.config import resolve
    from hnetbench.train import perf as perf_mod
    from hnetbench.train import train
    from hnetbench.train import trainer as trainer_mod

    calls = []

    def tiny_peak(device, low_precision, refresh=False):  # noqa: ANN001
        calls.append(refresh)  # a stale, contended peak: every MFU comes out far above 1
        return perf_mod._peak(1e3, "measured" if refresh else "cached", [9.0, 9.0, 9.0])

    monkeypatch.setattr(trainer_mod, "peak_flops", tiny_peak)
    over = ["data.seq_len=64", "data.batch_size=2", "train.steps=2", "train.eval_batches=0",
            "train.log_every=1", "train.ckpt_every=0"]
    summary = train(resolve(None, over, base={"preset": "hnet-1stage@cpu-tiny"}), tmp_path)
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    first, second = lines[0], lines[1]
    assert first["peak_flops"] == 1e3 and first["peak_source"] == "measured"  # the refreshed one
    assert len(first["loadavg_start"]) == 3 and first["threads"] == torch.get_num_threads()
    assert first["compile_mode"] == "off"  # auto: a 2-step run does not compile
    assert first["mfu"] is None and "> 1 refused" in first["mfu_refused"]
    assert calls == [False, True]  # re-measured once, then refused rather than printed
    assert "peak_flops" not in second and second["mfu"] is None
    assert summary["cpu_s"] > 0 and summary["compile_mode"] == "off"
    with pytest.raises(ConfigError, match="train.compile: expected auto, off or blocks"):
        train(resolve(None, [*over, "train.compile=fast"],
                      base={"preset": "hnet-1stage@cpu-tiny"}), tmp_path / "bad")
