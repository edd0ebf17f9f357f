"""Checkpoint files: pickle-free round trip of weights, optimizer and RNG states, atomic
replacement, keep_last pruning, and one-line errors for corrupt or truncated files."""

import json
import random

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
