"""The ablation knobs that are overrides rather than presets (ratio target and weight, encoder/
decoder layout, LR multipliers) train 30 steps on CPU through the product path (`train.train`
over the embedded corpus) with a finite, clearly decreasing loss. Every preset family and
switch preset is trained in tests/test_presets_train.py; here we check the registry has them all."""

from __future__ import annotations

import json
import math

import pytest
from hnetbench.baselines import list_presets
from hnetbench.baselines.presets import ABLATIONS
from hnetbench.config import load_saved, resolve
from hnetbench.train import train

pytestmark = pytest.mark.slow

STEPS = 30
# small batches keep all ~26 runs within a couple of minutes on 2 shared cores; no mid-run
# evals or checkpoints (train still writes the final ones)
FAST = [f"train.steps={STEPS}", "data.seq_len=128", "data.batch_size=4", "train.log_every=1",
        "train.eval_every=1000", "train.ckpt_every=1000", "train.eval_batches=1",
        "train.device=cpu"]
FAMILIES = ["transformer-bpe", "llamabyte", "llamabyte-global", "mambabyte", "spacebyte",
            "spacebyte++", "hnet-space", "hnet-pool", "hnet-1stage", "hnet-2stage",
            "transformer-dna", "mamba-dna", "hnet-dna", "hnet-dna-mamba"]
PRESETS = list_presets("cpu-tiny")
# the 1-stage H-Net with one knob changed by overrides (ratio target/alpha, encoder layout, LR)
VARIANTS = {
    "ratio-target-3": ["model.ratio_targets=[3]"],
    "ratio-alpha-0.1": ["model.ratio_alpha=0.1"],
    "encoder-M3T1": ["model.layout=[M3T1,[T3],m2]", "model.d_intermediate=[160,256]"],
    "encoder-decoder-T2": ["model.layout=[T2,[T3],T2]", "model.d_intermediate=[160,256]"],
    "lr-mult-none": ["train.lr_mult=none"],
}


def test_every_family_and_switch_is_covered():
    families = {name.split("@")[0] for name in PRESETS}
    assert set(FAMILIES) <= families
    assert {f"hnet-1stage-{switch}" for switch in ABLATIONS} <= families


def run_losses(tmp_path, preset: str, overrides: list[str]) -> tuple[list[float], dict]:
    cfg = resolve(None, [*FAST, *overrides], base={"preset": preset})
    out = tmp_path / "run"
    summary = train(cfg, out)
    assert summary["status"] == "completed" and summary["steps"] == STEPS
    assert load_saved(out / "config.yaml") == cfg  # the overrides reached the run
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in recs if "loss" in r]
    assert [r["step"] for r in train_recs] == list(range(1, STEPS + 1))
    return [r["loss"] for r in train_recs], summary


def assert_learns(losses: list[float]) -> None:
    assert all(math.isfinite(v) for v in losses), losses
    early, late = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    # ~0.8 nats is the smallest drop seen (BPE, whose first loss is ln 512); 0.3 leaves room
    # for noise while a model that does not learn (or learns a constant) cannot pass
    assert late < early - 0.3, (early, late, losses)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_hnet_variant_trains(tmp_path, variant):
    losses, _ = run_losses(tmp_path, "hnet-1stage@cpu-tiny", VARIANTS[variant])
    assert_learns(losses)
