"""Every family and every ablation switch trains: 30 AdamW steps on real English text (the
embedded corpus) at cpu-tiny size lower the loss (mean of the last 5 steps vs the first 5)."""

from __future__ import annotations

import pytest
import torch
from hnetbench.baselines import preset_dict
from hnetbench.baselines.presets import ABLATIONS
from hnetbench.config import DataConfig, RunConfig, from_dict
from hnetbench.data import get_tokenizer, load_documents
from hnetbench.models import build_model

FAMILIES = ["transformer-bpe", "llamabyte", "llamabyte-global", "mambabyte", "spacebyte",
            "spacebyte++", "hnet-space", "hnet-pool", "hnet-1stage", "hnet-2stage",
            "transformer-dna", "mamba-dna", "hnet-dna", "hnet-dna-mamba"]
PRESETS = [f"{f}@cpu-tiny" for f in FAMILIES] + [f"hnet-1stage-{a}@cpu-tiny" for a in ABLATIONS]
STEPS, B, T = 30, 4, 96


@pytest.fixture(scope="module")
def english() -> bytes:
    return b"\n".join(load_documents("en", "train"))[:24_000]


def batches(ids: list[int], n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    data = torch.tensor(ids)
    starts = torch.randint(0, len(data) - T - 1, (n, B), generator=g)
    return [torch.stack([data[s : s + T + 1] for s in row.tolist()]) for row in starts]


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_preset_trains(name, english):
    run = from_dict(RunConfig, preset_dict(name))
    if run.data.domain == "dna":  # DNA presets: train on the embedded DNA corpus
        text = b"".join(load_documents("dna", "train"))[:24_000]
    else:
        text = english
    ids = list(text) if run.data.tokenizer == "bytes" else get_tokenizer(run.data).encode(text)
    torch.manual_seed(0)
    model = build_model(run.model)
    groups = model.param_groups(0.0, run.train.lr_mult)
    for g in groups:
        g["lr"] = 3e-3 * g["lr_mult"]
    opt = torch.optim.AdamW(groups, lr=3e-3, betas=(0.9, 0.95))
    losses = []
    for batch in batches(ids, STEPS):
        out = model(batch[:, :-1], batch[:, 1:])
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(out.loss.detach()))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.1, (name, first, last)


def test_bpe_preset_tokenizer_matches_model_vocab():
    run = from_dict(RunConfig, preset_dict("transformer-bpe@cpu-tiny"))
    assert get_tokenizer(run.data).vocab_size == run.model.vocab_size
    byte_run = from_dict(RunConfig, preset_dict("hnet-1stage@cpu-tiny"))
    assert get_tokenizer(DataConfig()).vocab_size == byte_run.model.vocab_size == 257
