"""The memmap loader: exact epoch coverage, exact resume, ranks, BPE byte matching, batches."""

from __future__ import annotations

import itertools
import json
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


def _stream(tok, docs) -> np.ndarray:
    """The split's stream as the loader defines it: [BOS] doc [BOS] doc ... in prepared order."""
    return np.concatenate([np.array([tok.bos_id] + tok.encode(d)) for d in docs]).astype(np.int64)


@pytest.mark.parametrize(
    "domain,tokenizer,split", [("code", "bytes", "train"), ("zh", "bpe", "train"),
                               ("code", "bytes", "val")]
)
def test_one_epoch_covers_every_window_exactly_once(domain, tokenizer, split):
    cfg = _cfg(domain, tokenizer, seq_len=2048, batch_size=16)
    loader = build_loader(cfg, split, seed=3)
    tok = loader.tokenizer
    docs = load_documents(domain, split)  # prepared order = the corpus file's order
    T, B = loader.seq_len_tokens, loader.batch_size
    stream = _stream(tok, docs)
    assert loader.data.stream_len == len(stream)
    # train: only full windows (never padding); val/test: every position, the last window short
    full = (len(stream) - 1) // T
    assert loader.n_windows == (full if split == "train" else -(-(len(stream) - 1) // T))
    windows = loader.permutation(0)
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
    end = full * T + 1 if split == "train" else len(stream)
    assert covered[0] == 0 and (covered[1:end] == 1).all() and (covered[end:] == 0).all()
    if split != "train":  # every byte of the split, once
        assert total_bytes == sum(map(len, docs)) == loader.n_bytes_total
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
    # zh documents are short (poems; long help pages come as ~4 kB split units): many starts
    # in 20 x 4 x 128 bytes
    assert starts >= 10


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

    # across the epoch boundary: the batch that straddles it takes the rest of epoch 0 and the
    # start of epoch 1 (reshuffled); no row is padding; resume still matches
    n, B = a.n_windows, a.batch_size
    assert n % B, "pick seq_len so that the epoch boundary falls inside a batch"
    k = n // B  # the straddling batch
    c = build_loader(cfg, "train", seed=7)
    c.load_state_dict({**state, "batch": k - 1})
    run = list(itertools.islice(c, 3))
    assert c.state_dict()["batch"] == k + 2 and c.state_dict()["epoch"] == 1
    want_w = np.concatenate([c.permutation(0)[k * B :], c.permutation(1)[: B - n % B]])
    assert _same(run[1], c.make_batch(want_w))
    assert (run[1]["targets"] != IGNORE).sum() == run[1]["n_bytes"] > 0.9 * B * a.seq_len_tokens
    assert not np.array_equal(c.permutation(0), c.permutation(1))
    d = build_loader(cfg, "train", seed=7)
    d.load_state_dict({**state, "batch": k + 1})
    assert _same(next(iter(d)), run[2])
    # a different seed gives a different order
    e = build_loader(cfg, "train", seed=8)
    assert not _same(next(iter(e)), next(iter(build_loader(cfg, "train", seed=7))))


def test_state_from_another_setup_is_refused():
    a = build_loader(_cfg("dna", seq_len=256), "train", seed=0)
    b = build_loader(_cfg("dna", seq_len=128), "train", seed=0)
    with pytest.raises(DataError, match="different corpus/tokenizer"):
        b.load_state_dict(a.state_dict())
    with pytest.raises(DataError, match="expected keys batch, fingerprint"):
        b.load_state_dict({"epoch": 0})
    v = build_loader(_cfg("dna", seq_len=256), "val", seed=0)
    with pytest.raises(DataError, match="out of range"):
        v.load_state_dict({**v.state_dict(), "batch": 10**9})


def test_ranks_read_disjoint_windows_that_make_up_the_global_batch():
    cfg = _cfg("code", seq_len=128, batch_size=8)
    whole = list(itertools.islice(build_loader(cfg, "train", seed=1), 3))
    parts = [list(itertools.islice(build_loader(cfg, "train", 1, None, r, 4), 3)) for r in range(4)]
    for i, g in enumerate(whole):
        rows = [p[i] for p in parts]
        assert all(r["sharded"] and r["input_ids"].shape == (2, 128) for r in rows)
        for key in ("input_ids", "targets", "doc_start"):
            assert torch.equal(torch.cat([r[key] for r in rows]), g[key])
        assert sum(r["n_bytes"] for r in rows) == g["n_bytes"]
    with pytest.raises(DataError, match="multiple of the world size 3"):
        build_loader(cfg, "train", 1, None, 0, 3)


def test_a_batch_larger_than_the_training_data_is_refused(tmp_path):
    # 40 short documents: fewer windows than one batch of 64 x 128 (it used to train on padding)
    p = tmp_path / "small.jsonl"
    docs = [f"document {i} " * 8 for i in range(40)]
    p.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    cfg = _cfg("en", source="files", path=str(p), seq_len=128, batch_size=64)
    with pytest.raises(DataError, match=r"windows of 128 tokens, fewer than one batch of 64"):
        build_loader(cfg, "train")


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

    def mean_bytes(loader):  # about one epoch of training batches (never padded)
        nb = [b["n_bytes"] for b in itertools.islice(loader, len(loader) - 1)]
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
