"""Connectors on real local files (jsonl, parquet, txt, FASTA; gz/xz) and the HF path."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma

import pytest
from hnetbench.config import DataConfig
from hnetbench.data import build_loader, corpus_documents, split_of
from hnetbench.data.connectors import (
    expand_paths,
    hf_documents,
    hf_spec,
    iter_hf,
    read_fasta,
    read_files,
)
from hnetbench.data.corpus import DataError

DOCS = [f"document {i}: héllo 世界 🙂 " * (i % 7 + 1) for i in range(60)]


@pytest.fixture(autouse=True)
def _env(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("HNETBENCH_CACHE", str(base / "hnb-cache"))
    monkeypatch.setenv("HF_HOME", str(base / "hf-home"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _jsonl(path, docs, field="text", opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({field: d, "meta": 1}, ensure_ascii=False) + "\n")


def test_jsonl_plain_and_compressed(tmp_path):
    want = [d.encode() for d in DOCS]
    _jsonl(tmp_path / "a.jsonl", DOCS)
    _jsonl(tmp_path / "b.jsonl.gz", DOCS, opener=gzip.open)
    _jsonl(tmp_path / "c.jsonl.xz", DOCS, opener=lzma.open)
    _jsonl(tmp_path / "d.jsonl.bz2", DOCS, opener=bz2.open)
    for name in ("a.jsonl", "b.jsonl.gz", "c.jsonl.xz", "d.jsonl.bz2"):
        assert read_files(str(tmp_path / name)) == want
    # a folder is read recursively in sorted order; max_bytes stops early
    assert read_files(str(tmp_path)) == want * 4
    _jsonl(tmp_path / "e.jsonl", DOCS, field="content")
    assert read_files(str(tmp_path / "e.jsonl"), text_field="content") == want
    capped = read_files(str(tmp_path / "a.jsonl"), max_bytes=100)
    assert 0 < len(capped) < len(want) and sum(map(len, capped[:-1])) < 100


def test_parquet_and_txt(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": DOCS, "id": list(range(len(DOCS)))}), tmp_path / "x.parquet")
    assert read_files(str(tmp_path / "x.parquet")) == [d.encode() for d in DOCS]
    with pytest.raises(DataError, match="no column 'body'"):
        read_files(str(tmp_path / "x.parquet"), text_field="body")
    (tmp_path / "t1.txt").write_text("one whole document\nwith lines\n", encoding="utf-8")
    with lzma.open(tmp_path / "t2.txt.xz", "wb") as f:
        f.write("第二个文档".encode())
    got = read_files(f"{tmp_path / 't1.txt'},{tmp_path / 't2.txt.xz'}")
    assert got == [b"one whole document\nwith lines\n", "第二个文档".encode()]
    assert read_files(str(tmp_path / "t*.txt*")) == got  # globs


def test_fasta_hg38_style(tmp_path):
    # headers, wrapped lines, soft-masked lowercase, N runs splitting segments
    seq1 = "ACGTACGTAC" * 5 + "N" * 30 + "acgtTTGGCC" * 4  # 50 bp, gap, 40 bp (masked)
    seq2 = "GATTACA" * 3 + "NNNN" + "CG"  # 21 bp, gap, 2 bp (too short: dropped)
    lines = [">chr1 test", *[seq1[i : i + 13] for i in range(0, len(seq1), 13)]]
    lines += ["", ">chr2", *[seq2[i : i + 7] for i in range(0, len(seq2), 7)]]
    text = "\n".join(lines) + "\n"
    with gzip.open(tmp_path / "g.fa.gz", "wt") as f:
        f.write(text)
    # window 24: pieces shorter than 24 // 8 = 3 bp are dropped
    docs = read_files(str(tmp_path / "g.fa.gz"), fasta_window=24)
    s1a, s1b = seq1[:50], seq1[80:].upper()
    want = [s1a[0:24], s1a[24:48], s1b[0:24], s1b[24:40], seq2[0:21]]
    assert docs == [w.encode() for w in want]
    assert all(set(d) <= set(b"ACGT") for d in docs)
    (tmp_path / "plain.fasta").write_text(text)
    assert read_files(str(tmp_path / "plain.fasta"), fasta_window=24) == docs
    (tmp_path / "bad.fa").write_text("ACGT\n>late header\n")
    with pytest.raises(DataError, match="not FASTA"):
        list(read_fasta(tmp_path / "bad.fa", None, 16))


def test_files_source_splits_and_loader(tmp_path):
    many = [f"doc {i} " + "x" * (i % 50) for i in range(400)]
    _jsonl(tmp_path / "c.jsonl.gz", many, opener=gzip.open)
    cfg = DataConfig(source="files", path=str(tmp_path / "c.jsonl.gz"), seq_len=64, batch_size=4)
    parts = {s: corpus_documents(cfg, s) for s in ("train", "val", "test")}
    assert sorted(sum(parts.values(), [])) == sorted(d.encode() for d in many)
    assert all(split_of(d) == s for s, p in parts.items() for d in p)
    val = build_loader(cfg, "val", seed=0)  # val/test: every byte once per epoch
    assert sum(b["n_bytes"] for b in val.iter_epoch(0)) == sum(map(len, parts["val"]))
    train = build_loader(cfg, "train", seed=0)  # train: full windows only (the tail < T waits)
    seen = sum(b["n_bytes"] for b in train.iter_epoch(0))
    assert 0 <= sum(map(len, parts["train"])) - seen < 64
    bpe = build_loader(
        DataConfig(**{**cfg.__dict__, "tokenizer": "bpe", "bpe_vocab_size": 300}), "val", seed=0
    )
    assert bpe.seq_len_tokens < 64


def test_file_errors_are_one_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{oops\n')
    (tmp_path / "nofield.jsonl").write_text('{"body": "x"}\n')
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / "data.csv").write_text("a,b\n")
    (tmp_path / "bin.parquet").write_bytes(b"not parquet")
    cases = [
        (str(tmp_path / "bad.jsonl"), "bad.jsonl: line 2: not valid JSON"),
        (str(tmp_path / "nofield.jsonl"), "line 1: expected an object with a string 'text' field"),
        (str(tmp_path / "latin1.txt"), "latin1.txt: not UTF-8 text (byte offset 3)"),
        (str(tmp_path / "data.csv"), "data.csv: unknown file type"),
        (str(tmp_path / "bin.parquet"), "bin.parquet: not a readable parquet file"),
        (str(tmp_path / "missing.jsonl"), "missing.jsonl: file not found"),
        (str(tmp_path / "*.nothing"), "glob matches no files"),
        (None, "data.path: required for data.source=files"),
    ]
    for spec, msg in cases:
        with pytest.raises(DataError) as e:
            read_files(spec)
        assert msg in str(e.value) and "\n" not in str(e.value), (spec, str(e.value))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="folder has no"):
        expand_paths(str(empty))
    with pytest.raises(DataError, match="data.fasta_window: expected >= 8"):
        list(read_fasta(tmp_path / "x.fa", None, 4))


def test_hf_spec_argument_handling():
    fw = hf_spec(DataConfig(source="hf", path="fineweb-edu", max_bytes=10**6))
    assert fw == {"path": "HuggingFaceFW/fineweb-edu", "name": "sample-10BT", "text_field": "text"}
    zh = hf_spec(DataConfig(source="hf", path="fineweb-edu-zh", max_bytes=1))
    assert zh["path"] == "opencsg/Fineweb-Edu-Chinese-V2.1" and zh["data_dir"] == "4_5"
    code = hf_spec(DataConfig(source="hf", path="codeparrot", max_bytes=1, hf_config="x"))
    assert code["text_field"] == "content" and code["name"] == "x"
    raw = hf_spec(DataConfig(source="hf", path="org/ds", hf_config="cfg", max_bytes=5))
    assert raw == {"path": "org/ds", "name": "cfg", "text_field": "text"}
    local = hf_spec(DataConfig(source="hf", path="json:/tmp/a.jsonl"))
    assert local["path"] == "json" and local["data_files"] == "/tmp/a.jsonl"
    with pytest.raises(DataError, match="data.max_bytes: set a byte cap"):
        hf_spec(DataConfig(source="hf", path="fineweb-edu"))
    with pytest.raises(DataError, match="data.path: required for data.source=hf"):
        hf_spec(DataConfig(source="hf"))
    with pytest.raises(DataError, match="expected parquet:FILES"):
        hf_spec(DataConfig(source="hf", path="parquet:"))


def test_hf_streaming_on_local_json_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _jsonl(tmp_path / "a.jsonl", DOCS)
    got = list(iter_hf("json", data_files=str(tmp_path / "a.jsonl")))
    assert got == [d.encode() for d in DOCS]
    pq.write_table(pa.table({"content": DOCS}), tmp_path / "p.parquet")
    got = list(iter_hf("parquet", data_files=str(tmp_path / "p.parquet"), text_field="content"))
    assert got == [d.encode() for d in DOCS]
    cfg = DataConfig(source="hf", path=f"json:{tmp_path / 'a.jsonl'}", max_bytes=200)
    capped = hf_documents(cfg)
    assert capped == [d.encode() for d in DOCS[: len(capped)]] and len(capped) < len(DOCS)
    with pytest.raises(DataError, match="has no string field 'body'"):
        list(iter_hf("json", data_files=str(tmp_path / "a.jsonl"), text_field="body"))
    with pytest.raises(DataError, match="hf dataset 'json'"):
        list(iter_hf("json", data_files=str(tmp_path / "none-*.jsonl")))
