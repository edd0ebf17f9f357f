"""Tokenizers: exact round trips, BPE training/caching, GPT-2 from a local ranks file."""

from __future__ import annotations

import base64
import json

import pytest
from hnetbench.config import DataConfig
from hnetbench.data import encode_document, get_tokenizer, list_domains, load_documents
from hnetbench.data.corpus import DataError
from hnetbench.data.tokenizers import (
    ByteTokenizer,
    TiktokenTokenizer,
    bytes_per_token,
    read_ranks,
    train_bpe,
)

TRICKY = [
    "",
    "plain ASCII, with punctuation!?",
    "emoji 👩‍👩‍👧‍👦 🇫🇷 and skin tones 👍🏽",
    "mixed: 中文 English Ελληνικά русский العربية हिन्दी 日本語 한국어",
    "  leading spaces, tabs\t\tand\r\nCRLF\n\n\nblank lines   ",
    "combining e\u0301 vs \u00e9, zero width\u200bjoiner, BOM \ufeff",
    "<bos> <|endoftext|> special-looking text",
    "def f(x):\n    return x ** 2  # code\n",
    "ACGTTGCANNNNacgt",
]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HNETBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "hnb-cache"))


def _code_sample() -> list[bytes]:
    return load_documents("code", "train")[:40]


def _samples(domain: str) -> list[bytes]:
    docs = load_documents(domain, "val")
    return docs[:3] + docs[-3:]


def test_byte_tokenizer_contract():
    tok = get_tokenizer(DataConfig(tokenizer="bytes"))
    assert isinstance(tok, ByteTokenizer)
    assert (tok.vocab_size, tok.bos_id, tok.name) == (257, 256, "bytes")
    assert tok.encode(b"\x00A\xff") == [0, 65, 255]
    assert tok.token_bytes(65) == b"A" and tok.token_bytes(256) == b""
    assert encode_document(tok, "hi") == [256, 104, 105]
    assert tok.decode([256, 104, 256, 105]) == b"hi"  # BOS stands for no bytes
    invalid = b"\xff\xfe\x80 broken \xc3( utf-8 \xed\xa0\x80"
    assert tok.decode(tok.encode(invalid)) == invalid
    for text in TRICKY:
        assert tok.decode(tok.encode(text)) == text.encode("utf-8")
    with pytest.raises(DataError, match="id 300 out of range"):
        tok.decode([1, 300])


@pytest.mark.parametrize("domain", ["en", "zh", "code", "dna"])
def test_round_trip_every_tokenizer_every_domain(domain, tmp_path):
    bpe = get_tokenizer(DataConfig(domain=domain, tokenizer="bpe"))  # default vocab (cached)
    gpt2ish = TiktokenTokenizer(_small_ranks())
    for tok in (get_tokenizer(DataConfig(domain=domain)), bpe, gpt2ish):
        for doc in _samples(domain) + [t.encode() for t in TRICKY]:
            ids = tok.encode(doc)
            assert all(0 <= i < tok.vocab_size and i != tok.bos_id for i in ids)
            assert tok.decode(ids) == doc
            assert b"".join(tok.token_bytes(i) for i in ids) == doc
            assert tok.encode(doc.decode("utf-8")) == ids  # str and bytes agree
    assert bpe.vocab_size == 2048 and bpe.token_bytes(bpe.bos_id) == b""
    # a trained BPE really compresses its own domain
    assert bytes_per_token(bpe, load_documents(domain, "val")) > 2.0


def test_bpe_is_deterministic_cached_and_keyed_by_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("HNETBENCH_CACHE", str(tmp_path))
    src = tmp_path / "code.jsonl"  # a small real corpus keeps the training short
    src.write_text("".join(json.dumps({"text": d.decode()}) + "\n" for d in _code_sample()))
    cfg = DataConfig(source="files", path=str(src), tokenizer="bpe", bpe_vocab_size=600)
    a = get_tokenizer(cfg)
    files = sorted((tmp_path / "bpe").glob("*.json"))
    assert len(files) == 1 and not list((tmp_path / "bpe").glob(".*tmp*"))
    b = get_tokenizer(cfg)  # from the cache
    assert [a.token_bytes(i) for i in range(600)] == [b.token_bytes(i) for i in range(600)]
    fresh = train_bpe(_code_sample(), 600)
    again = train_bpe(_code_sample(), 600)
    assert fresh._tok.to_str() == again._tok.to_str()
    get_tokenizer(DataConfig(**{**cfg.__dict__, "bpe_vocab_size": 700}))
    assert len(list((tmp_path / "bpe").glob("*.json"))) == 2
    files[0].write_text("{corrupt")  # a damaged cache entry is retrained, not fatal
    c = get_tokenizer(cfg)
    assert c.encode("import os\n") == a.encode("import os\n")
    with pytest.raises(DataError, match="data.bpe_vocab_size: expected >= 258"):
        get_tokenizer(DataConfig(**{**cfg.__dict__, "bpe_vocab_size": 100}))


def test_bpe_rejects_invalid_utf8_with_one_line_error():
    tok = get_tokenizer(DataConfig(domain="zh", tokenizer="bpe"))
    with pytest.raises(DataError, match=r"not UTF-8 text \(byte offset 3\)"):
        tok.encode(b"abc\xff")


def test_unknown_tokenizer():
    with pytest.raises(DataError, match="unknown tokenizer 'wordpiece'"):
        get_tokenizer(DataConfig(tokenizer="wordpiece"))


# ----------------------------------------------------------------------------- GPT-2 / tiktoken


def _small_ranks() -> dict[bytes, int]:
    """256 single bytes, then a few merges in GPT-2 style (space-prefixed words)."""
    merges = [b"th", b"the", b" t", b" the", b"in", b"ing", b" a", b"an", b" and", b"er"]
    ranks = {bytes([i]): i for i in range(256)}
    for m in merges:
        ranks[m] = len(ranks)
    return ranks


def _write_ranks(path, ranks: dict[bytes, int]) -> None:
    lines = [f"{base64.b64encode(t).decode()} {r}" for t, r in ranks.items()]
    path.write_text("\n".join(lines) + "\n")


def test_gpt2_from_local_ranks_file(tmp_path, monkeypatch):
    f = tmp_path / "gpt2.tiktoken"
    _write_ranks(f, _small_ranks())
    tok = get_tokenizer(DataConfig(tokenizer="gpt2", tokenizer_path=str(f)))
    assert tok.name == "gpt2" and tok.bos_id == 266 and tok.vocab_size == 267
    ids = tok.encode("the thing and the")
    assert tok.decode(ids) == b"the thing and the"
    assert [tok.token_bytes(i) for i in ids][:1] == [b"the"]  # merges are applied
    assert b" the" in [tok.token_bytes(i) for i in ids]
    assert len(ids) < len("the thing and the")
    # special-token text in a document is plain text, never the BOS id
    assert tok.bos_id not in tok.encode("<|endoftext|>")
    assert tok.encode_batch([b"the", b"and"]) == [tok.encode("the"), tok.encode("and")]
    # the environment variable works too
    monkeypatch.setenv("HNETBENCH_GPT2_BPE", str(f))
    assert get_tokenizer(DataConfig(tokenizer="gpt2")).encode("the") == tok.encode("the")


def test_gpt2_missing_or_bad_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("HNETBENCH_GPT2_BPE", raising=False)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty"))
    with pytest.raises(DataError) as e:
        get_tokenizer(DataConfig(tokenizer="gpt2"))
    assert "no local GPT-2 BPE file" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError, match="GPT-2 BPE file not found"):
        get_tokenizer(DataConfig(tokenizer="gpt2", tokenizer_path=str(tmp_path / "nope")))
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("dGg= 0\nnot-base64!! 1\n")
    with pytest.raises(DataError, match="line 2: expected '<base64 token> <rank>'"):
        read_ranks(bad)
    gap = tmp_path / "gap.tiktoken"
    _write_ranks(gap, {b"a": 0, b"b": 2})
    with pytest.raises(DataError, match="without gaps"):
        read_ranks(gap)
    with pytest.raises(DataError, match="expected vocab.bpe and encoder.json"):
        read_ranks(tmp_path)


def test_bytes_per_token_report():
    """Every domain's default BPE (2048) compresses: the figure `data stats` reports."""
    for domain in list_domains():
        tok = get_tokenizer(DataConfig(domain=domain, tokenizer="bpe"))
        bpt = bytes_per_token(tok, load_documents(domain, "val"))
        assert 2.0 < bpt < 6.0, (domain, bpt)
