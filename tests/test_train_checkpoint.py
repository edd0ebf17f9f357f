"""Checkpoint files: pickle-free round trip of weights, optimizer and RNG states, atomic
replacement, keep_last pruning, and one-line errors for corrupt or truncated files; the trainer's
faults: fallback past a corrupt latest checkpoint, a --force over another config's run that
writes nothing, an OOM-sized batch refused before allocating."""

import json
import os
import random
import re

import numpy as np
import pytest
import torch
from hnetbench.config import RunConfig
from hnetbench.train import checkpoint as ck
from safetensors.torch import load_file


def _model_and_opt():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    model[1].weight = model[0].weight  # tied weights must survive safetensors
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
    for _ in range(3):
        model(torch.randn(5, 4)).square().mean().backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def _save(tmp_path, step, model, opt, keep_last=2):
    state = {"optimizer": opt.state_dict(), "rng": ck.rng_state(),
             "loader": {"epoch": 1, "batch": 7, "fingerprint": "abc"},
             "trainer": {"step": step, "bytes_seen": 123, "flops_seen": 4.5e9, "wall_s": 1.0}}
    return ck.save_checkpoint(tmp_path / "ckpt", step, model, state, RunConfig(), keep_last)


def test_round_trip_is_exact(tmp_path, monkeypatch):
    model, opt = _model_and_opt()
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    path = _save(tmp_path, 10, model, opt)
    expect = (random.random(), np.random.rand(), torch.rand(3))

    # loading must never unpickle: make torch.load explode
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    assert ck.verify_checkpoint(path)["step"] == 10
    model2, opt2 = _model_and_opt()
    with torch.no_grad():
        for p in model2.parameters():
            p.add_(1.0)
    ck.load_weights(model2, path)
    state = ck.load_state(path)
    opt2.load_state_dict(state["optimizer"])
    ck.set_rng_state(state["rng"])
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expect[0] and got[1] == expect[1] and torch.equal(got[2], expect[2])
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"][0]["betas"] == s2["param_groups"][0]["betas"] == (0.9, 0.95)
    for pid, st in s1["state"].items():
        for k, v in st.items():
            assert torch.equal(v, s2["state"][pid][k]), (pid, k)
    assert state["loader"] == {"epoch": 1, "batch": 7, "fingerprint": "abc"}
    assert state["trainer"]["step"] == 10
    assert ck.checkpoint_config(path) == RunConfig()
    assert model2[1].weight is model2[0].weight
    assert set(load_file(str(path / "model.safetensors"))) <= set(model.state_dict())


def test_keep_last_and_temp_cleanup(tmp_path):
    model, opt = _model_and_opt()
    for step in (5, 10, 15, 20):
        _save(tmp_path, step, model, opt, keep_last=2)
    assert [s for s, _ in ck.list_checkpoints(tmp_path / "ckpt")] == [15, 20]
    stale = tmp_path / "ckpt" / ".tmp_step_000025_999"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    assert ck.resolve_checkpoint_dir(tmp_path).name == "step_000020"  # temp dirs never count
    ck.clean_temp(tmp_path / "ckpt")
    assert not stale.exists()
    assert ck.resolve_checkpoint_dir(tmp_path / "ckpt" / "step_000015").name == "step_000015"


@pytest.mark.parametrize("victim", ["model.safetensors", "state.safetensors", "state.json"])
def test_truncated_or_corrupt_file_is_named(tmp_path, victim):
    model, opt = _model_and_opt()
    path = _save(tmp_path, 5, model, opt)
    f = path / victim
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ck.CheckpointError) as e:
        ck.verify_checkpoint(path)
    msg = str(e.value)
    assert str(f) in msg and "\n" not in msg and "corrupt" in msg


def test_missing_manifest_and_bad_paths(tmp_path):
    model, opt = _model_and_opt()
    path = _save(tmp_path, 5, model, opt)
    (path / ck.MANIFEST).unlink()
    with pytest.raises(ck.CheckpointError, match="checkpoint.json: missing"):
        ck.resolve_checkpoint_dir(path)
    (path / ck.MANIFEST).write_text("{not json")
    with pytest.raises(ck.CheckpointError, match="corrupt checkpoint manifest"):
        ck.verify_checkpoint(path)
    with pytest.raises(ck.CheckpointError, match="no such checkpoint"):
        ck.resolve_checkpoint_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ck.CheckpointError, match="no checkpoint found"):
        ck.resolve_checkpoint_dir(tmp_path / "empty")


def test_state_encoding_handles_rng_and_nested_types():
    tensors: dict = {}
    obj = {"t": (1, [2.5, None], b"\x00\xff"), 3: np.arange(4, dtype=np.uint32),
           "x": torch.arange(3)}
    data = ck.encode_state(obj, tensors)
    back = ck.decode_state(json.loads(json.dumps(data)), tensors)
    assert back["t"] == (1, [2.5, None], b"\x00\xff")
    assert back[3].dtype == np.uint32 and list(back[3]) == [0, 1, 2, 3]
    assert torch.equal(back["x"], torch.arange(3))
    with pytest.raises(TypeError, match="cannot serialise"):
        ck.encode_state({"f": object()}, {})


# ----------------------------------------------------------------------------- trainer faults

TINY_RUN = ["hnet-1stage@cpu-tiny", "data.seq_len=64", "data.batch_size=4", "train.steps=6",
            "train.ckpt_every=2", "train.keep_last=3", "train.eval_every=0",
            "train.eval_batches=1", "train.log_every=1"]


def _snapshot(root):
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_corrupt_latest_checkpoint_falls_back_loudly_and_exactly(tmp_path, capsys):
    from hnetbench.train import train
    from hnetbench.train.commands import resolve_run_config

    run_cfg = resolve_run_config(TINY_RUN[0], TINY_RUN[1:])
    ref, out = tmp_path / "ref", tmp_path / "run"
    train(run_cfg, ref)
    train(run_cfg, out, max_steps=4)
    victim = out / "ckpt" / "step_000004" / "state.safetensors"
    victim.write_bytes(victim.read_bytes()[:-7])  # truncated
    capsys.readouterr()
    assert train(run_cfg, out)["steps"] == 6
    said = [x for x in capsys.readouterr().err.splitlines() if "skipped" in x]
    assert len(said) == 1 and "step_000002 (step 2)" in said[0], said
    assert f"{victim}: checksum mismatch" in said[0]
    events = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()
              if '"event"' in x]
    assert len(events) == 1 and events[0]["event"] == "checkpoint_fallback"
    assert events[0]["step"] == 2 and events[0]["resumed_from"].endswith("step_000002")
    assert str(victim) in events[0]["skipped"][0]
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()
             if '"loss"' in x]
    assert steps == [1, 2, 3, 4, 5, 6]  # the lines past step 2 were dropped and rewritten
    final = "ckpt/step_000006/model.safetensors"
    assert (out / final).read_bytes() == (ref / final).read_bytes()  # fallback resumes exactly


def test_no_checkpoint_verifies_is_one_line(tmp_path):
    model, opt = _model_and_opt()
    for step in (2, 4):
        path = _save(tmp_path, step, model, opt)
        (path / "state.json").write_text("{}")
    with pytest.raises(ck.CheckpointError) as e:
        ck.newest_valid_checkpoint(tmp_path / "ckpt")
    msg = str(e.value)
    assert msg.startswith("no checkpoint verifies: ") and "step_000004" in msg
    assert "and 1 older ones" in msg and "\n" not in msg
    assert ck.newest_valid_checkpoint(tmp_path / "nothing") == (None, None, [])


def test_pruning_never_leaves_a_half_deleted_checkpoint(tmp_path, monkeypatch):
    """A kill inside rmtree of a pruned checkpoint leaves only a hidden temp dir."""
    model, opt = _model_and_opt()
    for step in (2, 4):
        _save(tmp_path, step, model, opt)

    def killed(path, ignore_errors=False):
        (path / "model.safetensors").unlink()
        raise KeyboardInterrupt  # stands in for the kill, after part of the tree is gone

    monkeypatch.setattr(ck.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 6, model, opt)
    monkeypatch.undo()
    root = tmp_path / "ckpt"
    assert [s for s, _ in ck.list_checkpoints(root)] == [4, 6]
    assert [p.name for p in root.glob(".tmp_*")] == [f".tmp_old_step_000002_{os.getpid()}"]
    ck.clean_temp(root)
    assert sorted(p.name for p in root.iterdir()) == ["step_000004", "step_000006"]


def test_force_over_another_configs_run_writes_nothing(tmp_path, capsys):
    from hnetbench import cli

    out = tmp_path / "run"
    assert cli.main(["train", *TINY_RUN, "train.steps=2", "--out", str(out)]) == 0
    before = _snapshot(out)
    argv = ["train", "hnet-2stage@cpu-tiny", *TINY_RUN[1:], "train.steps=2", "--out", str(out),
            "--force"]
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit the model" in err[0], err
    assert _snapshot(out) == before  # config.yaml, metrics, summary, checkpoints untouched


def test_oom_sized_batch_is_refused_before_allocating(tmp_path, capsys):
    import resource

    from hnetbench import cli

    out = tmp_path / "run"
    argv = ["train", "hnet-1stage@cpu-tiny", "data.batch_size=100000", "data.seq_len=4096",
            "--out", str(out)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "data.batch_size=100000 x data.seq_len=4096" in err[0]
    need, have = re.findall(r"([\d.]+) GB", err[0])
    assert float(need) > 400 and float(have) < float(need)  # 409.6M positions x 257 logits
    assert not out.exists()
    grew_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
    assert grew_kb < 1_000_000  # nothing near the batch's size was allocated


def test_atomic_writes_remove_temps_of_dead_writers_only(tmp_path):
    import socket
    import subprocess

    from hnetbench.config import atomic_write_text

    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: its pid is free
    host = socket.gethostname()
    target = tmp_path / "eval.json"
    stale = tmp_path / f".eval.json.tmp.{dead.pid}.{host}"
    live = tmp_path / f".eval.json.tmp.{os.getppid()}.{host}"  # a writer still running
    remote = tmp_path / f".eval.json.tmp.{dead.pid}.elsewhere"  # cannot tell on another host
    other = tmp_path / f".summary.json.tmp.{dead.pid}.{host}"  # another file's temp
    for p in (stale, live, remote, other):
        p.write_text("half")
    atomic_write_text(target, "{}\n")
    assert target.read_text() == "{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [target.name, live.name, remote.name, other.name])
