"""WSD cool-down branches: a branch forked from the parent's stable-phase checkpoint ends with
exactly the weights of a full run trained at the branch's budget from scratch."""

import json

import pytest
import torch
from hnetbench.config import ConfigError, load_saved, resolve
from hnetbench.train import train
from hnetbench.train.branch import BRANCH_FILE, branch_steps, make_branch, plan_branch
from hnetbench.train.checkpoint import list_checkpoints
from safetensors.torch import load_file

TINY = ["data.seq_len=64", "data.batch_size=2", "train.eval_batches=1", "train.log_every=1",
        "train.eval_every=0", "train.warmup_frac=0.125", "train.decay_frac=0.25"]


def cfg(*overrides, preset="hnet-1stage@cpu-tiny"):
    return resolve(None, [*TINY, *overrides], base={"preset": preset})


def test_branch_plan_shares_the_parents_first_steps():
    parent = cfg("train.steps=512")
    plan = plan_branch(parent, 0.25, parent_dir=None)
    assert plan.total_steps == 128 and plan.from_step == 96  # decay = 32 steps
    assert plan.cfg.train.warmup_frac * 128 == pytest.approx(64)  # the parent's 64 warmup steps
    assert branch_steps(parent, [0.25, 0.5]) == [96, 192]
    with pytest.raises(ConfigError, match="before the parent's warmup"):
        plan_branch(parent, 0.05, parent_dir=None)


def test_branch_equals_a_full_run_at_its_budget(tmp_path):
    parent_cfg = cfg("train.steps=16", "train.ckpt_every=6", "train.keep_last=0")
    train(parent_cfg, tmp_path / "parent")
    # branch at 1/2: 8 steps, decay 2 -> starts from the parent's step 6
    out = make_branch(tmp_path / "parent", 0.5, tmp_path / "runs")
    info = json.loads((out / BRANCH_FILE).read_text())
    assert info["from_step"] == 6 and info["total_steps"] == 8
    summary = train(load_saved(out / "config.yaml"), out)
    assert summary["status"] == "completed" and summary["steps"] == 8
    assert summary["bytes_seen"] == 8 * 2 * 64
    # the same config trained from scratch: identical final weights
    scratch = train(load_saved(out / "config.yaml"), tmp_path / "scratch")
    a = load_file(str(list_checkpoints(out / "ckpt")[-1][1] / "model.safetensors"))
    b = load_file(str(list_checkpoints(tmp_path / "scratch" / "ckpt")[-1][1] / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert summary["final_val_bpb"] == scratch["final_val_bpb"]
    # its metrics hold the shared history up to step 6, then its own cool-down
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[:6] == [1, 2, 3, 4, 5, 6] and steps[-1] == 8


def test_branch_without_the_checkpoint_says_what_to_set(tmp_path):
    train(cfg("train.steps=16", "train.ckpt_every=16"), tmp_path / "parent")
    with pytest.raises(ConfigError, match="no checkpoint at step 6.*ckpt_every"):
        make_branch(tmp_path / "parent", 0.5, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()  # nothing half-made for a report to pick up
