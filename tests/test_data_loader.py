"""Packing loader: exact epoch coverage, exact resume, BPE byte matching, batch contents."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch
from hnetbench.config import DataConfig
from hnetbench.data import build_loader, get_tokenizer, load_documents
from hnetbench.data.corpus import DataError
from hnetbench.data.loader import IGNORE


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HNETBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "hnb-cache"))


def _cfg(domain="code", tokenizer="bytes", seq_len=256, batch_size=8, **kw) -> DataConfig:
    return DataConfig(
        domain=domain, tokenizer=tokenizer, seq_len=seq_len, batch_size=batch_size, **kw
    )


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in ("input_ids", "targets", "doc_start")) and (
        a["n_bytes"] == b["n_bytes"]
    )


@pytest.mark.parametrize("domain,tokenizer", [("code", "bytes"), ("zh", "bpe")])
def test_one_epoch_covers_every_training_byte_exactly_once(domain, tokenizer):
    cfg = _cfg(domain, tokenizer, seq_len=2048, batch_size=16)
    loader = build_loader(cfg, "train", seed=3)
    tok = loader.tokenizer
    docs = load_documents(domain, "train")
    T, B = loader.seq_len_tokens, loader.batch_size

    # the epoch's stream is exactly [BOS] + doc for every training document, in some order
    stream, windows = loader.epoch_layout(0)
    pieces = np.split(stream, np.flatnonzero(stream == tok.bos_id))[1:]
    assert sorted(tok.decode(p[1:].tolist()) for p in pieces) == sorted(docs)
    assert sorted(windows.tolist()) == list(range(loader.n_windows))

    covered = np.zeros(len(stream), dtype=np.int64)
    lengths = torch.tensor([len(tok.token_bytes(i)) for i in range(tok.vocab_size)])
    total_bytes, scored = 0, torch.zeros(tok.vocab_size, dtype=torch.long)
    for i, batch in enumerate(loader.iter_epoch(0)):
        assert batch["input_ids"].shape == batch["targets"].shape == (B, T)
        assert batch["input_ids"].dtype == batch["targets"].dtype == torch.long
        assert batch["doc_start"].dtype == torch.bool
        for r in range(B):
            k = i * B + r
            tg = batch["targets"][r]
            if k >= loader.n_windows:  # padding rows of the last batch
                assert (tg == IGNORE).all()
                continue
            w = int(windows[k])
            ref = torch.from_numpy(stream[w * T : w * T + T + 1])
            n = len(ref) - 1
            assert torch.equal(batch["input_ids"][r, :n], ref[:-1])
            want = ref[1:].clone()
            want[want == tok.bos_id] = IGNORE
            assert torch.equal(tg[:n], want) and (tg[n:] == IGNORE).all()
            covered[w * T + 1 : w * T + 1 + n] += 1
        valid = batch["targets"] != IGNORE
        scored += torch.bincount(batch["targets"][valid], minlength=tok.vocab_size)
        assert batch["n_bytes"] == int(lengths[batch["targets"][valid]].sum())
        total_bytes += batch["n_bytes"]
    assert i + 1 == loader.batches_per_epoch == len(loader)
    assert covered[0] == 0 and (covered[1:] == 1).all()  # every position after the first, once
    assert total_bytes == sum(map(len, docs)) == loader.n_bytes_total
    # independent of the layout: the scored targets are exactly the tokens of the documents
    want = Counter(t for ids in tok.encode_batch(docs) for t in ids)
    assert scored.tolist() == [want.get(i, 0) for i in range(tok.vocab_size)]


def test_batch_fields_bos_and_doc_start():
    loader = build_loader(_cfg("zh", seq_len=128, batch_size=4), "train", seed=0)
    bos = loader.tokenizer.bos_id
    starts = 0
    for batch in itertools.islice(loader.iter_epoch(0), 20):
        x, y, ds = batch["input_ids"], batch["targets"], batch["doc_start"]
        assert torch.equal(ds, x == bos)
        # a BOS in the inputs at t+1 means the target at t is BOS, hence not scored
        assert (y[:, :-1][x[:, 1:] == bos] == IGNORE).all()
        assert batch["n_bytes"] == int((y != IGNORE).sum())  # byte tokenizer: 1 byte per target
        starts += int(ds.sum())
    assert starts >= 20  # zh documents are short (poems): many starts in 20 x 4 x 128 bytes


def test_resume_is_exact_mid_epoch_and_across_epochs():
    cfg = _cfg("dna", seq_len=256, batch_size=8)
    a = build_loader(cfg, "train", seed=7)
    it = iter(a)
    for _ in range(5):
        next(it)
    state = a.state_dict()
    assert state["batch"] == 5 and state["epoch"] == 0
    expect = [next(it) for _ in range(6)]
    b = build_loader(cfg, "train", seed=7)
    b.load_state_dict(state)
    got = list(itertools.islice(b, 6))
    assert all(_same(x, y) for x, y in zip(expect, got))

    # across the epoch boundary: the next epoch is reshuffled, and resume still matches
    near_end = {**state, "epoch": 0, "batch": a.batches_per_epoch - 2}
    c = build_loader(cfg, "train", seed=7)
    c.load_state_dict(near_end)
    run = list(itertools.islice(c, 4))
    assert c.state_dict()["epoch"] == 1 and c.state_dict()["batch"] == 2
    assert _same(run[2], next(b.iter_epoch(1)))
    assert not _same(next(b.iter_epoch(0)), next(b.iter_epoch(1)))
    d = build_loader(cfg, "train", seed=7)
    d.load_state_dict({**near_end, "epoch": 1, "batch": 1})
    assert _same(next(iter(d)), run[3])
    # a different seed gives a different order
    e = build_loader(cfg, "train", seed=8)
    assert not _same(next(e.iter_epoch(0)), next(b.iter_epoch(0)))


def test_state_from_another_setup_is_refused():
    a = build_loader(_cfg("dna", seq_len=256), "train", seed=0)
    b = build_loader(_cfg("dna", seq_len=128), "train", seed=0)
    with pytest.raises(DataError, match="different corpus/tokenizer"):
        b.load_state_dict(a.state_dict())
    with pytest.raises(DataError, match="expected keys epoch, batch, fingerprint"):
        b.load_state_dict({"epoch": 0})
    with pytest.raises(DataError, match="out of range"):
        b.load_state_dict({**b.state_dict(), "batch": 10**9})


def test_val_loader_is_one_repeatable_epoch():
    loader = build_loader(_cfg("code", seq_len=512, batch_size=4), "val", seed=0)
    first = list(loader)
    second = list(loader)
    assert len(first) == len(second) == loader.batches_per_epoch > 1
    assert all(_same(x, y) for x, y in zip(first, second))
    assert sum(b["n_bytes"] for b in first) == sum(map(len, load_documents("code", "val")))


@pytest.mark.parametrize("domain", ["zh", "code", "dna"])
def test_bpe_bytes_per_batch_match_byte_models_within_2_percent(domain):
    byte = build_loader(_cfg(domain, "bytes", seq_len=512, batch_size=8), "train", seed=0)
    bpe = build_loader(_cfg(domain, "bpe", seq_len=512, batch_size=8), "train", seed=0)
    assert byte.seq_len_tokens == 512 and byte.bytes_per_token == 1.0
    assert bpe.seq_len_tokens < 512 and bpe.bytes_per_token > 2.0

    def mean_bytes(loader):  # full batches of one epoch (the last one is padded)
        nb = [b["n_bytes"] for b in loader.iter_epoch(0)][:-1]
        return sum(nb) / len(nb)

    ratio = mean_bytes(bpe) / mean_bytes(byte)
    assert abs(ratio - 1) < 0.02, (domain, ratio, bpe.describe())
    # the val loader keeps the T chosen on the training split
    assert (
        build_loader(_cfg(domain, "bpe", seq_len=512), "val").seq_len_tokens == bpe.seq_len_tokens
    )


@pytest.mark.slow
def test_bpe_bytes_per_batch_en():
    test_bpe_bytes_per_batch_match_byte_models_within_2_percent("en")


def test_loader_accepts_a_given_tokenizer_and_rejects_bad_sizes():
    tok = get_tokenizer(_cfg("dna"))
    loader = build_loader(_cfg("dna"), "test", seed=0, tokenizer=tok)
    assert loader.tokenizer is tok
    with pytest.raises(DataError, match="data.seq_len / data.batch_size: expected >= 1"):
        build_loader(_cfg("dna", seq_len=0), "train")
    with pytest.raises(DataError, match="unknown split 'holdout'"):
        build_loader(_cfg("dna"), "holdout")
