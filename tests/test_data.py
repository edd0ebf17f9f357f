"""Embedded corpora, splits, errors and the `hnetbench data` command."""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import re
import subprocess
import sys

import pytest
from hnetbench.config import ConfigError, DataConfig
from hnetbench.data import corpus, list_domains, load_documents
from hnetbench.data.commands import domain_stats
from hnetbench.data.corpus import DataError, corpus_documents, split_of


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # one cache for the whole session (BPE training is shared between the data test files)
    monkeypatch.setenv("HNETBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "hnb-cache"))


def test_domains_and_sizes():
    assert list_domains() == ["en", "zh", "code", "dna"]
    sizes = {d: sum(map(len, corpus.all_documents(d))) for d in list_domains()}
    assert sizes["zh"] >= 3_000_000 and sizes["dna"] >= 4_000_000
    assert all(s >= 3_000_000 for s in sizes.values())
    shipped = sum(f.stat().st_size for f in corpus.CORPORA_DIR.glob("*.jsonl.xz"))
    assert shipped < 20_000_000


def test_corpus_files_match_sources_md():
    text = (corpus.CORPORA_DIR / "SOURCES.md").read_text(encoding="utf-8")
    rows = re.findall(
        r"\| (\w+)\.jsonl\.xz \| (\d+) \| (\d+) \| (\d+) \| `([0-9a-f]{64})` \|", text
    )
    assert sorted(r[0] for r in rows) == sorted(list_domains())
    for domain, n_docs, n_bytes, file_bytes, sha in rows:
        f = corpus.CORPORA_DIR / f"{domain}.jsonl.xz"
        assert hashlib.sha256(f.read_bytes()).hexdigest() == sha
        assert f.stat().st_size == int(file_bytes)
        docs = corpus.all_documents(domain)
        assert len(docs) == int(n_docs) and sum(map(len, docs)) == int(n_bytes)


def test_domain_content_is_what_it_claims():
    en = b"".join(load_documents("en", "train")).decode("utf-8")
    assert en.count("Congress") > 1000 and sum(c.isascii() for c in en) / len(en) > 0.99
    zh = b"".join(load_documents("zh", "val")).decode("utf-8")
    han = sum("\u4e00" <= c <= "\u9fff" for c in zh)
    assert han / len(zh) > 0.5
    code = corpus.all_documents("code")  # whole files: split units may cut a statement
    assert all(compile(d, "<corpus>", "exec") for d in code)  # real Python source
    dna = load_documents("dna", "train")
    assert all(set(d) <= set(b"ACGT") for d in dna)
    assert max(map(len, corpus.all_documents("dna"))) == 16384


def test_splits_are_disjoint_deterministic_and_90_5_5():
    for domain in list_domains():
        units = [u for d in corpus.all_documents(domain) for u in corpus.units_of(d)]
        parts = {s: load_documents(domain, s) for s in ("train", "val", "test")}
        assert sorted(parts["train"] + parts["val"]) == sorted(
            u for u in units if split_of(u) != "test")
        for s in ("train", "val"):
            assert all(split_of(d) == s for d in parts[s])
        # test: units of the test split, minus what overlaps train (tests/test_splits.py)
        test_text = b"\n".join(u for u in units if split_of(u) == "test")
        assert all(p in test_text for p in parts["test"])
        frac = len(parts["train"]) / len(units)
        assert 0.85 < frac < 0.95, (domain, frac)
        assert load_documents(domain, "val") == parts["val"]  # stable across calls
    # the split is a function of the content only
    assert split_of(b"abc") == split_of(bytearray(b"abc"))
    counts = {s: 0 for s in ("train", "val", "test")}
    for i in range(20000):
        counts[split_of(str(i).encode())] += 1
    assert abs(counts["val"] / 20000 - 0.05) < 0.01 and abs(counts["test"] / 20000 - 0.05) < 0.01


def test_bad_inputs_give_one_line_errors(tmp_path, monkeypatch):
    cases = [
        (lambda: load_documents("fr", "train"), "unknown domain 'fr'"),
        (lambda: load_documents("en", "dev"), "unknown split 'dev'"),
        (lambda: corpus_documents(DataConfig(source="s3"), "train"), "unknown source 's3'"),
    ]
    for fn, msg in cases:
        with pytest.raises(DataError) as e:
            fn()
        assert msg in str(e.value) and "\n" not in str(e.value)
    assert issubclass(DataError, ConfigError) and issubclass(DataError, ValueError)

    # missing, empty, corrupt and non-UTF-8 corpus files
    monkeypatch.setattr(corpus, "CORPORA_DIR", tmp_path)
    with pytest.raises(DataError, match="corpus file missing"):
        load_documents("en", "train")
    (tmp_path / "en.jsonl.xz").write_bytes(lzma.compress(b""))
    with pytest.raises(DataError, match="corpus is empty"):
        load_documents("en", "train")
    (tmp_path / "zh.jsonl.xz").write_bytes(b"not xz at all")
    with pytest.raises(DataError, match="not a valid xz file"):
        load_documents("zh", "train")
    (tmp_path / "code.jsonl.xz").write_bytes(lzma.compress(b'{"text": "\xff\xfe"}\n'))
    with pytest.raises(DataError, match="not UTF-8"):
        load_documents("code", "train")
    (tmp_path / "dna.jsonl.xz").write_bytes(lzma.compress(b'{"txt": "ACGT"}\n'))
    with pytest.raises(DataError, match="line 1: expected a JSON object with a 'text' field"):
        load_documents("dna", "train")


def test_domain_stats_counts():
    row = domain_stats("code", None)
    docs = corpus.all_documents("code")
    assert row["documents"] == len(docs) and row["bytes"] == sum(map(len, docs))
    units = [u for d in docs for u in corpus.units_of(d)]  # splits count units
    assert row["train_documents"] + row["val_documents"] == sum(
        corpus.split_of(u) != "test" for u in units)
    assert row["test_overlap"] == 0.0 < row["test_overlap_before"]
    assert row["val_bytes"] == sum(map(len, load_documents("code", "val")))


def test_cli_stats_json_subprocess():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(
        [sys.executable, "-m", "hnetbench", "data", "stats", "--format", "json"]
        + ["--domains", "dna", "code"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["domain"] for x in rows] == ["dna", "code"]
    for x in rows:
        assert x["documents"] == len(corpus.all_documents(x["domain"]))
        # the test split loses what overlaps train (decontamination); the rest adds up
        assert x["train_bytes"] + x["val_bytes"] + x["test_bytes"] <= x["bytes"]
        assert x["train_bytes"] + x["val_bytes"] > 0.9 * x["bytes"]
        assert x["test_overlap"] == 0.0
        assert x["bpe_vocab_size"] == 2048
        assert 2.0 < x["bpe_bytes_per_token_val"] < 8.0  # BPE compresses real text and DNA


def test_cli_table_and_errors(capsys):
    from hnetbench import cli

    assert cli.main(["data", "stats", "--no-bpe", "--domains", "zh"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["domain", "documents", "bytes"] and out[1].split()[0] == "zh"
    assert "bpe_bytes_per_token_val" not in out[0]
    with pytest.raises(SystemExit) as e:
        cli.main(["data", "stats", "--domains", "klingon"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert cli.main(["data"]) == 2 and "usage" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["data", "build", "--help"])
    assert e.value.code == 0 and "network access" in " ".join(capsys.readouterr().out.split())
