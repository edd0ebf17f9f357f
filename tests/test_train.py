"""The trainer end to end on tiny real models (in-process): run directory contents, metrics,
schedule and LR multipliers, budgets, gradient accumulation, resume checks, NaN stop, corrupt
checkpoints, and the CLI."""

import json
import math
import shutil

import pytest
import torch
from hnetbench import cli
from hnetbench.config import ConfigError, load_saved, resolve
from hnetbench.train import TrainingDiverged, load_checkpoint, train
from hnetbench.train.checkpoint import list_checkpoints
from hnetbench.train.commands import resolve_run_config
from hnetbench.train.plan import bytes_per_step, forward_flops_per_byte, plan_steps
from hnetbench.train.schedule import lr_factor
from safetensors.torch import load_file

TINY = ["data.seq_len=64", "data.batch_size=4", "train.eval_batches=1", "train.log_every=1"]


def cfg(*overrides, preset="hnet-1stage@cpu-tiny"):
    return resolve(None, [*TINY, *overrides], base={"preset": preset})


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_run_directory_metrics_and_reload(tmp_path):
    run_cfg = cfg("train.steps=6", "train.eval_every=3", "train.ckpt_every=3", "train.keep_last=1")
    out = tmp_path / "run"
    summary = train(run_cfg, out)

    assert load_saved(out / "config.yaml") == run_cfg
    for key in ("status", "steps", "bytes_seen", "flops_seen", "params", "flops_per_byte",
                "final_val_bpb", "wall_s", "family", "domain"):
        assert key in summary, key
    assert summary["status"] == "completed" and summary["steps"] == 6
    assert summary["family"] == "hnet-1stage" and summary["domain"] == "en"
    assert summary["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert summary["machine"]["torch"] == torch.__version__
    assert json.loads((out / "summary.json").read_text()) == summary
    assert [s for s, _ in list_checkpoints(out / "ckpt")] == [6]  # keep_last=1

    recs = metrics(out)
    train_recs = [r for r in recs if "loss" in r]
    val_recs = [r for r in recs if r.get("split") == "val"]
    assert [r["step"] for r in train_recs] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in val_recs] == [3, 6]
    assert val_recs[-1]["val_bpb"] == pytest.approx(summary["final_val_bpb"])
    fpb = summary["flops_per_byte"]
    for r in train_recs:
        for key in ("loss", "ar_loss", "bpb", "ratio_loss", "lr", "grad_norm", "bytes_seen",
                    "flops_seen", "bytes_per_s", "mfu", "stage0/bytes_per_chunk"):
            assert key in r, key
        # byte model: one scored target per byte, so bpb = ar_loss / ln 2
        assert r["bpb"] == pytest.approx(r["ar_loss"] / math.log(2), rel=1e-5)
        assert r["loss"] == pytest.approx(r["ar_loss"] + 0.03 * r["ratio_loss"], rel=1e-5)
        assert r["lr"] == pytest.approx(3e-3 * lr_factor(r["step"] - 1, 6, "wsd", 0.1, 0.2))
        # per-stage multipliers of Eq. 11: sqrt(4.6 * N0 / N0 * D1/D0) at stage 0, sqrt(4.6/6) at 1
        assert r["lr/stage0/decay"] / r["lr"] == pytest.approx(math.sqrt(4.6 * 96 / 64))
        assert r["lr/stage1/decay"] / r["lr"] == pytest.approx(math.sqrt(4.6 / 6))
        assert r["flops_seen"] == pytest.approx(3 * fpb * r["bytes_seen"])
        assert 0 < r["mfu"] < 1 and r["bytes_per_s"] > 0
    assert train_recs[-1]["loss"] < train_recs[0]["loss"]  # it learns

    model, saved_cfg, tok = load_checkpoint(out)
    weights = load_file(str(out / "ckpt" / "step_000006" / "model.safetensors"))
    assert saved_cfg == run_cfg and tok.vocab_size == 257 and not model.training
    for name, t in model.state_dict().items():
        assert torch.equal(t, weights[name]), name

    # a finished run is not redone, but a pruning a kill interrupted (the save renamed step 6
    # into place, the kill came before step 3 was removed) is finished on the rerun
    shutil.copytree(out / "ckpt" / "step_000006", out / "ckpt" / "step_000003")
    assert train(run_cfg, out) == summary
    assert [s for s, _ in list_checkpoints(out / "ckpt")] == [6]
    # killed after the final checkpoint, before summary.json: only the final eval is redone
    (out / "summary.json").unlink()
    again = train(run_cfg, out)
    assert again["status"] == "completed" and again["steps"] == 6
    assert again["final_val_bpb"] == summary["final_val_bpb"]
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 3, 4, 5, 6, 6]  # nothing logged twice


def test_grad_accum_equals_one_big_batch(tmp_path):
    """batch 2 x accumulation 2 sees the same rows as batch 4 (the loader's window order does not
    depend on the batch size), and the AR loss is weighted by targets: identical trajectories."""
    iso = "llamabyte@cpu-tiny"
    a = train(cfg("train.steps=3", "train.eval_every=0", preset=iso), tmp_path / "a")
    b = train(cfg("train.steps=3", "train.eval_every=0", "data.batch_size=2", "train.grad_accum=2",
                  preset=iso), tmp_path / "b")
    assert a["bytes_seen"] == b["bytes_seen"]
    la = [r["loss"] for r in metrics(tmp_path / "a") if "loss" in r]
    lb = [r["loss"] for r in metrics(tmp_path / "b") if "loss" in r]
    assert la == pytest.approx(lb, abs=1e-5)


def test_budgets_in_bytes_and_flops():
    run_cfg = cfg("train.steps=7")
    assert plan_steps(run_cfg, None) == 7 and bytes_per_step(run_cfg) == 256
    assert plan_steps(cfg("train.train_bytes=2560"), None) == 10
    assert plan_steps(cfg("train.train_bytes=2561"), None) == 11
    fpb = forward_flops_per_byte(run_cfg, 1.0)
    assert fpb > 0
    flops = 3 * fpb * 256 * 12  # training FLOPs of 12 steps
    assert plan_steps(cfg(f"train.train_flops={flops}"), fpb) == 12
    with pytest.raises(ConfigError, match="train.train_flops"):
        plan_steps(cfg(f"train.train_flops={flops}"), None)


def test_resume_refuses_changed_config_unless_forced(tmp_path):
    out = tmp_path / "run"
    base = ["train.steps=6", "train.eval_every=0", "train.ckpt_every=2"]
    assert train(cfg(*base), out, max_steps=2)["status"] == "stopped"
    assert not (out / "summary.json").exists()
    with pytest.raises(ConfigError, match=r"train\.lr: 0\.003 -> 0\.001.*--force") as e:
        train(cfg(*base, "train.lr=1e-3"), out)
    assert "\n" not in str(e.value) and "config.yaml" in str(e.value)
    with pytest.raises(ConfigError, match="train.steps: 6 -> 8"):  # budgets change the schedule
        train(cfg(*base[1:], "train.steps=8"), out)
    # keys that do not change the trajectory may change freely
    assert train(cfg(*base, "train.log_every=2"), out, max_steps=3)["steps"] == 3
    forced = train(cfg(*base[1:], "train.steps=8"), out, force=True)
    assert forced["status"] == "completed" and forced["steps"] == 8
    assert load_saved(out / "config.yaml").train.steps == 8


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "hnet-1stage@cpu-tiny", *TINY, "train.steps=8", "train.ckpt_every=2",
            "train.eval_every=0", "train.debug_nan_step=5", "--out", str(out)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress log lines
    assert err.startswith("hnetbench train: error: ")
    assert "loss is nan at step 5" in err and "step_000004" in err
    assert [s for s, _ in list_checkpoints(out / "ckpt")] == [2, 4]
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"
    assert metrics(out)[-1]["event"] == "diverged"
    with pytest.raises(TrainingDiverged, match="nan"):
        train(cfg("train.steps=8", "train.ckpt_every=2", "train.eval_every=0",
                  "train.debug_nan_step=5"), out)


def test_huge_lr_diverges_cleanly(tmp_path):
    """No debug hook: an absurd LR drives the loss to inf/nan and the run stops on its own."""
    with pytest.raises(TrainingDiverged, match=r"(loss|gradient norm) is (nan|inf)"):
        train(cfg("train.steps=30", "train.lr=1e12", "train.grad_clip=0", "train.warmup_frac=0",
                  "train.eval_every=0", "train.ckpt_every=0", preset="llamabyte@cpu-tiny"),
              tmp_path / "run")


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "run"
    run_cfg = cfg("train.steps=4", "train.ckpt_every=2", "train.eval_every=0")
    train(run_cfg, out, max_steps=2)
    victim = out / "ckpt" / "step_000002" / "model.safetensors"
    victim.write_bytes(victim.read_bytes()[:100])
    argv = ["train", "hnet-1stage@cpu-tiny", *TINY, "train.steps=4", "train.ckpt_every=2",
            "train.eval_every=0", "--out", str(out)]
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(victim) in err[0] and "corrupt" in err[0]
    with pytest.raises(ConfigError, match="checksum mismatch"):
        load_checkpoint(out)


def test_cli_config_resolution(tmp_path):
    spec = tmp_path / "run.yaml"
    spec.write_text("preset: llamabyte@cpu-tiny\ntrain:\n  steps: 9\n")
    from_yaml = resolve_run_config(str(spec), ["train.lr=1e-3"])
    assert from_yaml.preset == "llamabyte@cpu-tiny" and from_yaml.train.steps == 9
    assert from_yaml.train.lr == 1e-3 and from_yaml.model.layout == "T4"
    from_preset = resolve_run_config("hnet-1stage@cpu-tiny", ["train.steps=3"])
    assert from_preset.model.arch == "hnet" and from_preset.train.steps == 3
    with pytest.raises(ConfigError, match="not a YAML file or a preset"):
        resolve_run_config("nonsense", [])
    with pytest.raises(ConfigError, match="train.schedule"):
        train(cfg("train.schedule=linear"), tmp_path / "x")
    with pytest.raises(ConfigError, match="data.batch_size"):
        train(cfg("data.batch_size=0"), tmp_path / "x")
