"""`model.init`: the reference H-Net's initialisation by default (embedding N(0, 1), residual
outputs init_std / sqrt(cumulative height), residual projection with a bias) and this suite's
earlier GPT-2-style init behind `model.init: gpt2`."""

from __future__ import annotations

import pytest
import torch
from hnetbench.config import ConfigError, ModelConfig
from hnetbench.models import build_model
from hnetbench.models.lm import _residual_heights

torch.set_num_threads(1)

# 2-stage: outer m1/m1 (heights 1+1), stage-1 T1m1/m1T1 (3+3), main M1T1 (4)
TWO_STAGE = dict(layout=["m1", ["T1m1", ["M1T1"], "m1T1"], "m1"], d_intermediate=[0, 256, 256],
                 ratio_targets=[2.0, 2.0], vocab_size=257, attn_num_heads=[4],
                 attn_rotary_dim=[8], mamba_d_state=16, mamba_headdim=32, mamba_chunk_size=16)


def _model(d: int = 128, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(**{**TWO_STAGE, "d_model": [d, d, d], **kw}))


def test_cumulative_heights_follow_the_reference() -> None:
    model = _model(32)
    heights = [(iso.layout, n) for iso, n in _residual_heights(model.backbone)]
    assert heights == [("m1", 2), ("m1", 2), ("T1m1", 8), ("m1T1", 8), ("M1T1", 12)]


@torch.no_grad()
def test_reference_init_scales() -> None:
    model = _model(256)
    emb = model.embedding.weight
    assert float(emb.std()) == pytest.approx(1.0, rel=0.02)
    assert float(model.head.weight.std()) == pytest.approx(0.02, rel=0.05)
    bb = model.backbone
    expected = {  # residual outputs: 0.02 / sqrt(cumulative height)
        bb.encoder.layers[0].mixer.out_proj: 0.02 / 2**0.5,
        bb.inner.encoder.layers[0].mlp.fc2: 0.02 / 8**0.5,
        bb.inner.decoder.layers[1].mixer.out_proj: 0.02 / 8**0.5,
        bb.inner.inner.main.layers[0].mixer.out_proj: 0.02 / 12**0.5,
        bb.inner.inner.main.layers[1].mlp.fc2: 0.02 / 12**0.5,
        bb.inner.inner.main.layers[1].mixer.wqkv: 0.02,
    }
    for lin, std in expected.items():
        assert float(lin.weight.std()) == pytest.approx(std, rel=0.1)
    for stage in (bb, bb.inner):  # zero weight, torch's default bias U(-1/sqrt(d), 1/sqrt(d))
        assert torch.equal(stage.residual.weight, torch.zeros_like(stage.residual.weight))
        b = stage.residual.bias
        assert b is not None and 0 < float(b.abs().max()) <= 256**-0.5
    # the router keeps its identity init
    assert torch.equal(bb.router.q_proj.weight, torch.eye(256))


@torch.no_grad()
def test_gpt2_init_is_the_earlier_default() -> None:
    model = _model(256, init="gpt2")
    assert float(model.embedding.weight.std()) == pytest.approx(0.02, rel=0.05)
    bb = model.backbone
    assert bb.residual.bias is None and "backbone.residual.bias" not in dict(
        model.named_parameters())
    # 1 / sqrt(2 * layers of the network): main M1T1 has 2 layers
    fc2 = bb.inner.inner.main.layers[1].mlp.fc2
    assert float(fc2.weight.std()) == pytest.approx(0.02 / 4**0.5, rel=0.1)


@torch.no_grad()
def test_tied_embeddings_keep_init_std() -> None:
    model = build_model(ModelConfig(arch="isotropic", layout="T2", d_model=[128],
                                    d_intermediate=[256], tie_embeddings=True))
    assert float(model.embedding.weight.std()) == pytest.approx(0.02, rel=0.05)


def test_bad_init_name_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"model.init: expected reference\|gpt2, got 'xav") as e:
        _model(32, init="xavier")
    assert "\n" not in str(e.value)


def test_checkpoints_without_residual_bias_still_load(tmp_path) -> None:
    """Runs saved before the reference init (no residual bias) load as bias 0 = same outputs."""
    from hnetbench.config import RunConfig
    from hnetbench.train.checkpoint import load_checkpoint, save_checkpoint

    old = _model(32, init="gpt2").eval()
    with torch.no_grad():
        old.backbone.residual.weight.normal_(0, 0.1)
    cfg = RunConfig(model=ModelConfig(**{**TWO_STAGE, "d_model": [32, 32, 32]}))  # init default
    save_checkpoint(tmp_path / "ckpt", 1, old, {}, cfg)
    new, _, _ = load_checkpoint(tmp_path)
    assert torch.equal(new.backbone.residual.bias, torch.zeros(32))
    ids = torch.randint(0, 257, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(new(ids).logits, old(ids).logits, rtol=0, atol=1e-6)
