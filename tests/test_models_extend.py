"""`LM.extend`: continuations scored from a prefilled cache equal full forwards of context +
continuation (float64), for every layer kind and H-Net variant that supports it, with rows
grouped per context (the shared-keys attention path) or in any order, and the cache unchanged.
`score_continuations` and the lm-eval adapter give `score_tails`' numbers."""

from __future__ import annotations

import copy

import pytest
import torch
from hnetbench.evals.bpb import score_tails
from hnetbench.evals.continuations import can_extend, score_continuations
from hnetbench.models import build_model

from tests.test_models import HNET_VARIANTS, MODELS

torch.set_num_threads(1)

CASES = {**{k: MODELS[k] for k in ("m", "M", "t", "T", "mixed")},
         **{k: v for k, v in HNET_VARIANTS.items() if k not in ("hnet1-mean", "hnet1-max")}}


def make(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(CASES[name]()).double().eval()
    with torch.no_grad():  # zero-initialised paths get a value so every path carries signal
        for n, p in model.named_parameters():
            if n.endswith("residual.weight") or n.endswith(".pad"):
                p.normal_(0, 0.05)
    return model


def prefill(model: torch.nn.Module, contexts: list[list[int]]) -> tuple[torch.Tensor, dict]:
    T = max(len(c) for c in contexts)
    ids = torch.zeros(len(contexts), T, dtype=torch.long)
    doc_start = torch.zeros(len(contexts), T, dtype=torch.bool)
    for r, c in enumerate(contexts):  # left-padded: the padding is its own document
        ids[r, T - len(c):] = torch.tensor(c)
        doc_start[r, T - len(c)] = True
    return model.prefill(ids, doc_start, capacity=T)


@pytest.mark.parametrize("grouped", [True, False])
@pytest.mark.parametrize("name", list(CASES))
def test_extend_equals_full_forward(name: str, grouped: bool) -> None:
    model = make(name)
    V = model.cfg.vocab_size
    g = torch.Generator().manual_seed(1)
    text = list(b"the cat sat on the mat, and then: 12 dogs ran off to the park")

    def tokens(n: int) -> list[int]:
        if V == 256:  # space chunking needs text
            start = int(torch.randint(0, len(text) - n, (1,), generator=g))
            return text[start:start + n]
        return torch.randint(1, V, (n,), generator=g).tolist()

    contexts = [tokens(n) for n in (23, 9, 16)]
    rows = [0, 0, 0, 1, 1, 1, 2, 2, 2] if grouped else [2, 0, 1, 0, 2]
    conts = [tokens(int(n)) for n in torch.randint(1, 12, (len(rows),), generator=g)]
    _, cache = prefill(model, contexts)
    before = copy.deepcopy(cache)
    L = max(len(c) for c in conts)
    ids = torch.zeros(len(rows), L, dtype=torch.long)
    for i, c in enumerate(conts):
        ids[i, :len(c)] = torch.tensor(c)
    lengths = torch.tensor([len(c) for c in conts])
    logits = model.extend(ids, torch.tensor(rows), lengths, cache)

    # the linear router's sigmoid runs in float32 (as in training): its p is float32-exact
    atol = 1e-6 if name == "hnet1-ablations" else 1e-10
    inner_chunks = 0
    for i, (r, c) in enumerate(zip(rows, conts)):
        full = model(torch.tensor([contexts[r] + c]))
        n = len(contexts[r])
        torch.testing.assert_close(logits[i, :len(c)], full.logits[0, n:], rtol=0, atol=atol)
        if len(full.boundaries) > 1:  # chunks of the inner stage among the new positions
            first_new = int(full.boundaries[0][0, :n].sum())
            inner_chunks += int(full.boundaries[1][0, first_new:].sum())
    if name.startswith("hnet2") and name != "hnet2-pool":
        assert inner_chunks > 0, "the test should exercise the inner stage's extension"
    assert can_extend(model)
    flat = lambda c: [v for v in c.values()] if isinstance(c, dict) else list(c)  # noqa: E731
    stack = [(before, cache)]
    while stack:  # extend only reads the cache
        a, b = stack.pop()
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)
        elif isinstance(a, (dict, list)):
            stack.extend(zip(flat(a), flat(b), strict=True))


def test_pooled_downsampling_cannot_extend() -> None:
    torch.manual_seed(0)
    assert not can_extend(build_model(HNET_VARIANTS["hnet1-mean"]()))
    assert can_extend(build_model(HNET_VARIANTS["hnet1"]()))


@pytest.mark.parametrize("name", ["hnet2", "T"])
def test_score_continuations_equals_score_tails(name: str) -> None:
    model = make(name)
    V = model.cfg.vocab_size
    g = torch.Generator().manual_seed(2)
    bos = V - 1
    pairs = []
    for n in (12, 30, 7, 30):  # two contexts equal: one prefill for both
        ctx = [bos] + torch.randint(1, V - 1, (n,), generator=g).tolist()
        for m in (1, 5, 9):
            pairs.append((ctx, torch.randint(1, V - 1, (m,), generator=g).tolist()))
    pairs[-3] = (pairs[3][0], pairs[-3][1])  # and a context shared across items
    want = score_tails(model, [c + x for c, x in pairs], [len(x) for _, x in pairs], 0, bos, 3)
    got = score_continuations(model, pairs, bos, batch_size=2)
    for (wn, wg), (gn, gg) in zip(want, got, strict=True):
        torch.testing.assert_close(gn, wn, rtol=0, atol=1e-6)  # float32 scoring of f64 logits
        assert torch.equal(gg, wg)
    with pytest.raises(ValueError, match="empty"):
        score_continuations(model, [([bos], [])], bos)


def test_lm_eval_adapter_scores_the_same_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """The adapter's loglikelihood through the cache equals the one through whole sequences,
    and requests longer than max_length still take the truncating path."""
    from hnetbench.data.tokenizers import ByteTokenizer
    from hnetbench.evals import continuations, lm_adapter
    from lm_eval.api.instance import Instance

    torch.manual_seed(0)
    model = build_model(HNET_VARIANTS["hnet2"](vocab_size=257)).eval()
    tok = ByteTokenizer()
    ctxs = ["Question: where did the cat sit? Answer:", "2 + 2 =", "a" * 70]
    reqs = [Instance("loglikelihood", {}, (c, x), i)
            for i, (c, x) in enumerate((c, x) for c in ctxs for x in (" mat", " 4", " the dog"))]
    lm = lm_adapter.HNetBenchLM(model=model, tokenizer=tok, batch_size=2, max_length=64)
    shared = lm.loglikelihood(reqs)
    monkeypatch.setattr(lm_adapter, "can_extend", lambda m: False)
    whole = lm.loglikelihood(reqs)
    for (a, ha), (b, hb) in zip(shared, whole, strict=True):
        assert a == pytest.approx(b, abs=1e-4) and ha == hb
    calls = []
    real = continuations.score_continuations
    monkeypatch.setattr(lm_adapter, "can_extend", continuations.can_extend)
    monkeypatch.setattr(lm_adapter, "score_continuations",
                        lambda m, pairs, *a: calls.append(len(pairs)) or real(m, pairs, *a))
    assert lm.loglikelihood(reqs) == shared
    assert calls == [6]  # the 70-byte context does not fit max_length 64: whole sequences
