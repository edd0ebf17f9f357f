"""Every model runs with float64 and bf16 weights; the loss follows the model's dtype (float64
stays float64, bf16 logits are scored in fp32), and float64 cached generation equals the
float64 full forward."""

from __future__ import annotations

import pytest
import torch
from hnetbench.config import ModelConfig
from hnetbench.models import build_model

torch.set_num_threads(1)

SMALL = dict(vocab_size=64, attn_num_heads=[2], attn_rotary_dim=[8], mamba_d_state=8,
             mamba_headdim=16, mamba_chunk_size=8, d_intermediate=[48])
MODELS = {
    "m": dict(arch="isotropic", layout="m2", d_model=[32]),
    "M": dict(arch="isotropic", layout="M2", d_model=[32], mamba_ngroups=2),
    "t": dict(arch="isotropic", layout="t2", d_model=[32]),
    "T": dict(arch="isotropic", layout="T2", d_model=[32]),
    "mixed": dict(arch="isotropic", layout="m1T1M1t1", d_model=[32], attn_window=[5]),
    "hnet1": dict(layout=["m1t1", ["T1M1"], "t1m1"], d_model=[32, 48], d_intermediate=[0, 64],
                  ratio_targets=[2.0], attn_window=[4, -1]),
    "hnet2": dict(layout=["m1", ["T1m1", ["M1T1"], "m1T1"], "m1"], d_model=[32, 32, 48],
                  d_intermediate=[0, 40, 64], ratio_targets=[2.0, 2.0]),
}


def make(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**SMALL, **MODELS[name]})).eval()
    with torch.no_grad():  # give the zero-initialised residual projections and pads a value
        for n, p in model.named_parameters():
            if n.endswith("residual.weight") or n.endswith(".pad"):
                p.normal_(0, 0.05)
    return model


def _batch(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (2, 40), generator=g)
    return ids, ids.roll(-1, 1)


@pytest.mark.parametrize("name", list(MODELS))
def test_float64_model_matches_fp32_and_keeps_float64(name: str) -> None:
    ids, tgt = _batch()
    ref = make(name).train()(ids, targets=tgt)
    model = make(name).to(torch.float64).train()
    out = model(ids, targets=tgt)
    assert out.logits.dtype == out.loss.dtype == out.ar_loss.dtype == torch.float64
    assert out.ratio_loss.dtype == torch.float64
    # same weights, wider arithmetic: fp32 rounding is the only difference
    assert float(out.loss.detach()) == pytest.approx(float(ref.loss.detach()), rel=1e-5)
    out.loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is None or (p.grad.dtype == torch.float64 and torch.isfinite(p.grad).all()), n


@pytest.mark.parametrize("name", list(MODELS))
def test_bf16_weights_run_and_score_in_fp32(name: str) -> None:
    ids, tgt = _batch()
    ref = make(name).train()(ids, targets=tgt)
    model = make(name).to(torch.bfloat16).train()
    out = model(ids, targets=tgt)
    assert out.logits.dtype == torch.bfloat16
    assert out.ar_loss.dtype == out.loss.dtype == torch.float32
    assert float(out.loss.detach()) == pytest.approx(float(ref.loss.detach()), rel=2e-2)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.bfloat16 and torch.isfinite(g).all() for g in grads)
    assert len(model.eval().generate([[1, 2, 3]], 4, greedy=True)[0]) == 4


@pytest.mark.parametrize("name", ["mixed", "hnet1", "hnet2"])
def test_float64_cached_steps_equal_full_forward(name: str) -> None:
    model = make(name).to(torch.float64)
    ids, _ = _batch(5)
    full = model(ids).logits
    prompt = 12
    logits, cache = model.prefill(ids[:, :prompt], torch.zeros_like(ids[:, :prompt],
                                                                     dtype=torch.bool), 64)
    steps = [logits]
    for t in range(prompt, ids.shape[1] - 1):
        steps.append(model.step(ids[:, t], cache))
    torch.testing.assert_close(torch.stack(steps, 1), full[:, prompt - 1 : -1],
                               rtol=1e-9, atol=1e-9)
