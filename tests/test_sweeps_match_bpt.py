"""Compute matching sizes models with the BPE bytes per token the trainer will realise: measured
on the training split itself (the zh reference once came out 17% off a val-sample estimate)."""

import pytest
from hnetbench.config import resolve
from hnetbench.data import build_loader
from hnetbench.sweeps import spec as S


@pytest.mark.parametrize("domain", ["zh"])
def test_planned_bytes_per_token_is_the_loaders(domain):
    cfg = resolve(None, [f"data.domain={domain}"], base={"preset": "transformer-bpe@cpu-tiny"})
    S._BPT_CACHE.clear()
    planned = S.bytes_per_token(cfg)
    realised = build_loader(cfg.data, "train", 0).bytes_per_token
    assert planned == pytest.approx(realised, rel=1e-9)
    # so the planned FLOPs/byte is the one the trainer's summary will report
    from hnetbench.train.plan import forward_flops_per_byte

    assert S.forward_flops_per_byte(cfg) == pytest.approx(forward_flops_per_byte(cfg, realised))
