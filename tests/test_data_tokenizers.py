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


# ----------------------------------------------------------------------------- the new tokenizers
# SentencePiece (trained here), Llama-3 (tiktoken, made-up ranks), any HF tokenizer.json.

TORTURE = TRICKY + [
    "a\u0300\u0301\u0302\u0303 stacked combining marks, Zalgo: Z\u0351\u0352a\u0353l\u0354g\u0355o",
    "ZWJ: 👨‍💻 👩🏾‍🔬 🏳️‍🌈 and a lone joiner \u200d",
    "RTL: שָׁלוֹם עולם, مرحبا بالعالم \u200f, mixed אבג abc ابت 123",
    "a" * 3000,
    " " * 700 + "\n" * 300 + "\t" * 50,
    "🙂" * 400,
    "literal meta \u2581 and \u2581\u2581 twice, edge:\u2581",
    "\u2581",
    "control \x00\x01\x1b[0m\x7f and \r\n\r",
    "<bos><s></s><unk><|begin_of_text|><|end_of_text|>",
    "digits 1234567 3.14159 0x1F",
]


def _check_contract(tok, docs) -> None:
    """Round trip, exact token bytes, no BOS inside a document, str and bytes agree."""
    for doc in docs:
        data = doc.encode("utf-8") if isinstance(doc, str) else doc
        ids = tok.encode(data)
        assert all(0 <= i < tok.vocab_size and i != tok.bos_id for i in ids), doc[:40]
        assert tok.decode(ids) == data, doc[:40]
        assert b"".join(tok.token_bytes(i) for i in ids) == data
        assert sum(len(tok.token_bytes(i)) for i in ids) == len(data)
        assert tok.encode(data.decode("utf-8")) == ids
    assert tok.token_bytes(tok.bos_id) == b""
    assert tok.encode_batch([d.encode() for d in docs[:4]]) == [tok.encode(d) for d in docs[:4]]


@pytest.fixture(scope="module")
def sp_models(tmp_path_factory) -> dict[str, bytes]:
    """Tiny SentencePiece models (unigram and bpe, 400 pieces) trained on 40 code documents."""
    from hnetbench.data.tokenizers import train_sentencepiece

    return {k: train_sentencepiece(_code_sample()[:12], 400, k) for k in ("unigram", "bpe")}


@pytest.mark.parametrize("kind", ["unigram", "bpe"])
def test_sentencepiece_contract_on_torture_strings(sp_models, kind):
    from hnetbench.data.tokenizers import SentencePieceTokenizer

    tok = SentencePieceTokenizer(sp_models[kind], f"sentencepiece-{kind}400")
    assert tok.vocab_size <= 400 and tok.bos_id == 1
    assert tok.token_bytes(0) == b"" and tok.token_bytes(2) == b"\x00"  # <unk>, then <0x00>
    _check_contract(tok, TORTURE + [d.decode() for d in load_documents("code", "val")[:5]])
    # it really learned pieces: code compresses, and a literal U+2581 is its three UTF-8 bytes
    assert bytes_per_token(tok, load_documents("code", "val")[:20]) > 1.4
    meta = tok.encode("\u2581")
    assert [tok.token_bytes(i) for i in meta] == [b"\xe2", b"\x96", b"\x81"]
    assert tok.identity().startswith(f"sentencepiece-{kind}400-")
    with pytest.raises(DataError, match=r"not UTF-8 text \(byte offset 1\)"):
        tok.encode(b"a\xff")


def test_sentencepiece_trained_cached_and_keyed(tmp_path, monkeypatch):
    monkeypatch.setenv("HNETBENCH_CACHE", str(tmp_path))
    src = tmp_path / "code.jsonl"
    src.write_text("".join(json.dumps({"text": d.decode()}) + "\n" for d in _code_sample()[:8]))
    cfg = DataConfig(source="files", path=str(src), tokenizer="sentencepiece", bpe_vocab_size=400)
    a = get_tokenizer(cfg)
    files = sorted((tmp_path / "sentencepiece").glob("*.model"))
    assert len(files) == 1 and "unigram400" in files[0].name
    assert a.name == "sentencepiece-unigram400"
    assert get_tokenizer(cfg).identity() == a.identity()  # from the cache, same model
    b = get_tokenizer(DataConfig(**{**cfg.__dict__, "sp_model_type": "bpe"}))
    assert b.identity() != a.identity() and b.name == "sentencepiece-bpe400"
    assert len(list((tmp_path / "sentencepiece").glob("*.model"))) == 2
    files[0].write_bytes(b"not a model")  # a damaged cache entry is retrained, not fatal
    assert get_tokenizer(cfg).identity() == a.identity()
    with pytest.raises(DataError, match="data.sp_model_type: expected unigram|bpe, got 'word'"):
        get_tokenizer(DataConfig(**{**cfg.__dict__, "sp_model_type": "word"}))
    with pytest.raises(DataError, match="data.bpe_vocab_size: expected >= 300"):
        get_tokenizer(DataConfig(**{**cfg.__dict__, "bpe_vocab_size": 200}))


def test_sentencepiece_model_file_and_its_errors(sp_models, tmp_path):
    import sentencepiece as spm

    f = tmp_path / "mine.model"
    f.write_bytes(sp_models["unigram"])
    tok = get_tokenizer(DataConfig(tokenizer="sentencepiece", tokenizer_path=str(f)))
    assert tok.name == "sentencepiece-mine"
    _check_contract(tok, TORTURE[:6])
    with pytest.raises(DataError, match="SentencePiece .model file not found"):
        get_tokenizer(DataConfig(tokenizer="sentencepiece", tokenizer_path=str(tmp_path / "no")))
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(DataError, match="junk.model: not a SentencePiece model"):
        get_tokenizer(DataConfig(tokenizer="sentencepiece", tokenizer_path=str(junk)))
    # a model with the library's defaults (NFKC, dummy prefix, no byte fallback) is refused or
    # caught when it would change the text
    texts = [d.decode() for d in _code_sample()[:8]]
    for fallback, needle in ((False, "needs byte_fallback"), (True, "not lossless")):
        import io

        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=buf,
                                       vocab_size=400, byte_fallback=fallback, minloglevel=2,
                                       hard_vocab_limit=False, num_threads=1)
        g = tmp_path / f"default{fallback}.model"
        g.write_bytes(buf.getvalue())
        with pytest.raises(DataError, match=needle):
            get_tokenizer(DataConfig(tokenizer="sentencepiece", tokenizer_path=str(g))).encode(
                "x  y\u00bd")


def test_bpb_counts_original_utf8_bytes_for_sentencepiece(sp_models, uniform_lm):
    """BPB divides by the UTF-8 bytes of the original text, whatever the pieces; a uniform model
    over V ids costs log2(V) bits per scored (non-special) token."""
    import math

    from hnetbench.data.tokenizers import SentencePieceTokenizer
    from hnetbench.evals.bpb import evaluate_bpb

    tok = SentencePieceTokenizer(sp_models["unigram"], "sp")

    docs = TORTURE[1:8] + [d.decode() for d in load_documents("code", "test")[:2]]
    res = evaluate_bpb(uniform_lm(tok.vocab_size), tok, docs, seq_len=64, stride=32)
    assert res["bytes"] == sum(len(d.encode("utf-8")) for d in docs)
    assert res["tokens"] == sum(len(tok.encode(d)) for d in docs)
    assert res["bpb"] == pytest.approx(res["tokens"] * math.log2(tok.vocab_size) / res["bytes"])


def _llama_like_ranks() -> dict[bytes, int]:
    ranks = _small_ranks()
    for m in [b"12", b"123", b"45", b"456", b" \xd7", b"\xd7\xa9"]:
        ranks[m] = len(ranks)
    return ranks


def test_llama3_from_made_up_ranks_file(tmp_path, monkeypatch):
    from hnetbench.data.tokenizers import LLAMA3_SPECIALS

    ranks = _llama_like_ranks()
    f = tmp_path / "tokenizer.model"
    _write_ranks(f, ranks)
    tok = get_tokenizer(DataConfig(tokenizer="llama3", tokenizer_path=str(f)))
    n = len(ranks)
    assert (tok.name, tok.vocab_size, tok.bos_id) == ("llama3", n + 256, n)
    assert len(LLAMA3_SPECIALS) == 256 and LLAMA3_SPECIALS[9] == "<|eot_id|>"
    _check_contract(tok, TORTURE)
    # Llama-3's split pattern: digits in groups of at most three (GPT-2 keeps the run whole)
    pieces = [tok.token_bytes(i) for i in tok.encode("x 123456")]
    assert pieces[-2:] == [b"123", b"456"]
    gpt2 = TiktokenTokenizer(ranks)
    assert b"123456" == b"".join(gpt2.token_bytes(i) for i in gpt2.encode("123456"))
    assert [gpt2.token_bytes(i) for i in gpt2.encode(" 123456")][0] == b" "
    assert tok.identity() != gpt2.identity()
    assert tok.bos_id not in tok.encode("<|begin_of_text|>")  # special text stays text
    # a folder holding original/tokenizer.model, and the environment variable
    (tmp_path / "w" / "original").mkdir(parents=True)
    _write_ranks(tmp_path / "w" / "original" / "tokenizer.model", ranks)
    by_dir = get_tokenizer(DataConfig(tokenizer="llama3", tokenizer_path=str(tmp_path / "w")))
    assert by_dir.identity() == tok.identity()
    monkeypatch.setenv("HNETBENCH_LLAMA3_TOKENIZER", str(f))
    assert get_tokenizer(DataConfig(tokenizer="llama3")).identity() == tok.identity()
    monkeypatch.delenv("HNETBENCH_LLAMA3_TOKENIZER")
    with pytest.raises(DataError, match="llama3 tokenizer: no ranks file") as e:
        get_tokenizer(DataConfig(tokenizer="llama3"))
    assert "\n" not in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: expected tokenizer.model"):
        get_tokenizer(DataConfig(tokenizer="llama3", tokenizer_path=str(tmp_path / "empty")))


def test_hf_tokenizer_json_any_local_file(tmp_path):
    from tokenizers import normalizers

    bpe = train_bpe(_code_sample(), 400)
    f = tmp_path / "tokenizer.json"
    f.write_text(bpe._tok.to_str())
    tok = get_tokenizer(DataConfig(tokenizer="hf", tokenizer_path=str(tmp_path)))  # folder ok
    assert (tok.name, tok.vocab_size, tok.bos_id) == ("hf", 400, bpe.bos_id)
    _check_contract(tok, TORTURE)
    assert tok.encode("def main():\n") == bpe.encode("def main():\n")
    assert tok.identity().startswith("hf-") and tok.identity() != bpe.identity()
    # a SentencePiece-style tokenizer.json (metaspace, <0xNN> byte pieces) maps pieces to bytes
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, **{f"<0x{b:02X}>": 2 + b for b in range(256)}}
    vocab.update({"\u2581the": 258, "ab": 259, "\u2581": 260})
    sp_like = HFTokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>",
                                     byte_fallback=True))
    sp_like.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    sp_like.add_special_tokens(["<s>", "<unk>"])
    g = tmp_path / "sp.json"
    g.write_text(sp_like.to_str())
    tok2 = get_tokenizer(DataConfig(tokenizer="hf", tokenizer_path=str(g)))
    assert tok2.bos_id == 1 and tok2.token_bytes(258) == b" the"
    assert tok2.token_bytes(2 + 0xE9) == b"\xe9"
    _check_contract(tok2, ["x the ab", "é", " "])
    with pytest.raises(DataError, match="not lossless"):  # Metaspace reads U+2581 as a space
        tok2.encode("\u2581")
    # a lossy one (lowercasing) is caught on encode with one line naming the file
    bpe._tok.normalizer = normalizers.Lowercase()
    h = tmp_path / "lower.json"
    h.write_text(bpe._tok.to_str())
    lossy = get_tokenizer(DataConfig(tokenizer="hf", tokenizer_path=str(h)))
    assert lossy.encode("abc") == tok.encode("abc")
    with pytest.raises(DataError, match="lower.json: this tokenizer is not lossless"):
        lossy.encode("ABC")
    with pytest.raises(DataError, match="set data.tokenizer_path"):
        get_tokenizer(DataConfig(tokenizer="hf"))
    with pytest.raises(DataError, match="HF tokenizer.json not found"):
        get_tokenizer(DataConfig(tokenizer="hf", tokenizer_path=str(tmp_path / "none.json")))
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(DataError, match="bad.json: not a HF tokenizer.json"):
        get_tokenizer(DataConfig(tokenizer="hf", tokenizer_path=str(bad)))


def test_identity_and_vocab_size_without_training():
    from hnetbench.data.tokenizers import vocab_size_of

    assert get_tokenizer(DataConfig()).identity() == "bytes"
    assert vocab_size_of(DataConfig(tokenizer="sentencepiece", bpe_vocab_size=4096)) == 4096
    assert vocab_size_of(DataConfig(tokenizer="llama3")) == 128256
    assert vocab_size_of(DataConfig(tokenizer="gpt2")) == 50257
    a, b = train_bpe(_code_sample()[:8], 300), train_bpe(_code_sample()[8:16], 300)
    assert a.identity().startswith("bpe-") and a.identity() != b.identity()
    assert a.identity() == train_bpe(_code_sample()[:8], 300).identity()


def test_data_stats_bytes_per_token_for_every_configured_tokenizer(tmp_path, monkeypatch, capsys):
    import argparse

    from hnetbench import cli
    from hnetbench.data.commands import configured_tokenizers, tokenizer_label

    ns = argparse.Namespace(tokenizers=None, bpe_vocab_size=2048, bpe_vocab_sizes=[4096],
                            sp_model_type="unigram", tokenizer_path=None)
    monkeypatch.delenv("HNETBENCH_GPT2_BPE", raising=False)
    monkeypatch.setenv("HNETBENCH_LLAMA3_TOKENIZER", str(tmp_path / "tokenizer.model"))
    labels = [tokenizer_label(c) for c in configured_tokenizers(ns)]
    assert labels == ["bpe2048", "bpe4096", "llama3"]  # llama3: its file is configured
    ns.tokenizers = ["bpe", "sentencepiece"]
    labels = [tokenizer_label(c) for c in configured_tokenizers(ns)]
    assert labels == ["bpe2048", "bpe4096", "sentencepiece-unigram2048",
                      "sentencepiece-unigram4096"]
    _write_ranks(tmp_path / "tokenizer.model", _llama_like_ranks())
    tj = tmp_path / "tokenizer.json"
    tj.write_text(train_bpe(_code_sample()[:8], 300)._tok.to_str())
    args = ["data", "stats", "--domains", "code", "--bpe-vocab-size", "300",
            "--tokenizers", "bpe", "hf", "llama3", "--tokenizer-path", str(tj)]
    assert cli.main(args + ["--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    val = load_documents("code", "val")
    hf = get_tokenizer(DataConfig(tokenizer="hf", tokenizer_path=str(tj)))
    assert row["hf_bytes_per_token_val"] == round(bytes_per_token(hf, val), 4)
    assert row["bpe_vocab_size"] == 300 and row["bpe_bytes_per_token_val"] > 1.2
    assert "bpe300_bytes_per_token_val" not in row  # the BPE column keeps its old name
    assert cli.main(args[:-4] + ["--tokenizers", "bpe", "llama3"]) == 0  # llama3 from the env
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[-1] == "llama3" and "bytes per token" in out[-1]
    monkeypatch.delenv("HNETBENCH_LLAMA3_TOKENIZER")
    assert cli.main(args[:-4] + ["--tokenizers", "llama3"]) == 2  # one-line error, no traceback
    assert "llama3 tokenizer: no ranks file" in capsys.readouterr().err
