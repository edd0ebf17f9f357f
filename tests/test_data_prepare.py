"""`data prepare`: shards + manifest, exact read-back, resume after a kill, workers, bad input."""

from __future__ import annotations

import gzip
import json
import lzma
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hnetbench.config import DataConfig
from hnetbench.data import prepare as prep
from hnetbench.data import shards as sh
from hnetbench.data.corpus import SPLITS, DataError, split_of
from hnetbench.data.tokenizers import ByteTokenizer


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HNETBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "hnb-cache"))


def _docs(n: int = 600, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "théta", "数据", "\n"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 120))) + f" #{i}"
            for i in range(n)]


def _write_corpus(folder: Path, docs: list[str]) -> str:
    """Half the documents in a .jsonl.gz, half in a .jsonl.xz (read in name order)."""
    folder.mkdir(parents=True, exist_ok=True)
    half = len(docs) // 2
    lines = [json.dumps({"text": d}, ensure_ascii=False).encode() + b"\n" for d in docs]
    (folder / "a.jsonl.gz").write_bytes(gzip.compress(b"".join(lines[:half]), mtime=0))
    (folder / "b.jsonl.xz").write_bytes(lzma.compress(b"".join(lines[half:])))
    return str(folder)


def _cfg(path: str, tokenizer: str = "bytes", **kw) -> DataConfig:
    return DataConfig(source="files", path=path, tokenizer=tokenizer, **kw)


def _shard_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.suffix in (".npy", ".json")}


def test_prepare_writes_shards_that_read_back_exactly(tmp_path):
    docs = _docs()
    cfg = _cfg(_write_corpus(tmp_path / "in", docs))
    man = prep.prepare(cfg, tmp_path / "out", workers=1, shard_tokens=4000, log=None)
    assert man["format"] == sh.FORMAT and man["tokenizer"]["dtype"] == "uint8"
    assert man["tokenizer"]["fingerprint"] == sh.tokenizer_fingerprint(ByteTokenizer())
    want = {s: [d.encode() for d in docs if split_of(d.encode()) == s] for s in SPLITS}
    for s in SPLITS:
        info = man["splits"][s]
        assert info["documents"] == len(want[s]) and info["bytes"] == sum(map(len, want[s]))
        split = sh.PreparedSplit(tmp_path / "out", s)
        assert [bytes(np.asarray(d)) for d in split.documents()] == want[s]
        stream = np.concatenate([[256, *d] for d in want[s]])
        assert split.stream_len == len(stream)
        for a, b in [(0, 1), (0, len(stream)), (3990, 4030), (len(stream) - 7, len(stream) + 5)]:
            assert np.array_equal(split.read(a, b), stream[a:b])  # windows across shard ends
    assert len(man["splits"]["train"]["shards"]) > 3  # several shards, each <= 4000 ids
    assert all(x["tokens_len"] <= 4000 for x in man["splits"]["train"]["shards"])
    assert sh.verify(tmp_path / "out") == []
    (tmp_path / "out" / man["splits"]["val"]["shards"][0]["tokens"]).write_bytes(b"x")
    assert any("sha256 differs" in p for p in sh.verify(tmp_path / "out"))


def test_bpe_shards_use_uint16_and_workers_give_identical_shards(tmp_path):
    cfg = DataConfig(domain="zh", tokenizer="bpe", bpe_vocab_size=600)
    one = prep.prepare(cfg, tmp_path / "w1", workers=1, shard_tokens=100_000, log=None)
    two = prep.prepare(cfg, tmp_path / "w2", workers=2, shard_tokens=100_000, log=None)
    assert one["tokenizer"]["dtype"] == "uint16" and one == two
    assert _shard_files(tmp_path / "w1") == _shard_files(tmp_path / "w2")
    tok = prep.prepare_tokenizer(cfg)
    docs = list(sh.PreparedSplit(tmp_path / "w2", "val").documents())
    from hnetbench.data import load_documents

    assert [tok.decode(d) for d in docs] == load_documents("zh", "val")


def test_reader_processes_per_file_give_the_shards_of_one_process(tmp_path, monkeypatch):
    """Several input files and workers > 1: one reader process per file at a time (parsing,
    hashing and tokenizing on every core); shards, manifest, byte cap and errors as with one."""
    folder = tmp_path / "in"
    docs = _docs(700, seed=3)
    _write_corpus(folder, docs[:400])
    lines = [json.dumps({"text": d}, ensure_ascii=False).encode() + b"\n" for d in docs[400:]]
    (folder / "c.jsonl").write_bytes(b"".join(lines))
    for kw in ({}, {"max_bytes": 30_000}):
        one = prep.prepare(_cfg(str(folder), **kw), tmp_path / f"w1{kw}", workers=1,
                           shard_tokens=5000, log=None)
        two = prep.prepare(_cfg(str(folder), **kw), tmp_path / f"w2{kw}", workers=2,
                           shard_tokens=5000, log=None)
        assert one == two
        assert _shard_files(tmp_path / f"w1{kw}") == _shard_files(tmp_path / f"w2{kw}")
    n = sum(one["splits"][s]["bytes"] for s in SPLITS)
    assert 30_000 <= n < 30_000 + max(len(d.encode()) for d in docs)  # the cap, one doc over
    # killed after a few shards, the rerun (readers again) skips what was written: same shards
    real_write, calls = sh.write_npy, {"n": 0}

    def dying_write(path, arr):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real_write(path, arr)

    monkeypatch.setattr(sh, "write_npy", dying_write)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(_cfg(str(folder)), tmp_path / "killed", workers=2, shard_tokens=5000,
                     log=None)
    monkeypatch.setattr(sh, "write_npy", real_write)
    again = prep.prepare(_cfg(str(folder)), tmp_path / "killed", workers=2, shard_tokens=5000,
                         log=None)
    assert again == prep.prepare(_cfg(str(folder)), tmp_path / "w1{}", workers=1, log=None)
    assert _shard_files(tmp_path / "killed") == _shard_files(tmp_path / "w1{}")
    # a bad file read by a reader process is still one line naming it
    (folder / "d.jsonl").write_bytes(b'{"text": "a"}\n{"txt": 1}\n')
    with pytest.raises(DataError, match=r"d.jsonl: line 2: expected an object"):
        prep.prepare(_cfg(str(folder)), tmp_path / "bad", workers=2, log=None)


def test_a_killed_prepare_resumes_and_ends_bitwise_equal(tmp_path, monkeypatch):
    cfg = _cfg(_write_corpus(tmp_path / "in", _docs(900, seed=1)))
    ref = prep.prepare(cfg, tmp_path / "ref", workers=1, shard_tokens=3000, log=None)
    # kill it after 4 shards, in the middle of writing the 5th (a temp file is left behind)
    real_write, calls = sh.write_npy, {"n": 0}

    def dying_write(path, arr):
        calls["n"] += 1
        if calls["n"] == 9:
            Path(path).with_name(f".{Path(path).name}.tmp999").write_bytes(b"half")
            raise KeyboardInterrupt
        return real_write(path, arr)

    monkeypatch.setattr(sh, "write_npy", dying_write)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(cfg, tmp_path / "out", workers=1, shard_tokens=3000, log=None)
    progress = json.loads((tmp_path / "out" / sh.PROGRESS).read_text())
    assert sum(len(v["shards"]) for v in progress["splits"].values()) == 4
    assert not (tmp_path / "out" / sh.MANIFEST).exists()
    monkeypatch.setattr(sh, "write_npy", real_write)
    encoded = []
    real_encode = prep.encode_chunk
    def counting_encode(tok, docs, dtype):
        encoded.append(len(docs))
        return real_encode(tok, docs, dtype)

    monkeypatch.setattr(prep, "encode_chunk", counting_encode)
    man = prep.prepare(cfg, tmp_path / "out", workers=1, shard_tokens=3000, log=None)
    assert man == ref and _shard_files(tmp_path / "out") == _shard_files(tmp_path / "ref")
    skipped = sum(x["documents"] for v in progress["splits"].values() for x in v["shards"])
    assert skipped > 0 and sum(encoded) == 900 - skipped  # written shards are not redone
    assert not list((tmp_path / "out").glob(".*tmp*"))
    assert not (tmp_path / "out" / sh.PROGRESS).exists()


@pytest.mark.slow
def test_a_prepare_killed_by_sigkill_resumes(tmp_path):
    folder = _write_corpus(tmp_path / "in", _docs(3000, seed=2))
    prep.prepare(_cfg(folder), tmp_path / "ref", workers=1, shard_tokens=2000, log=None)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "hnetbench", "data", "prepare", "data.source=files",
            f"data.path={folder}", "--shard-tokens", "2000", "--workers", "1", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not (out / "bytes" / sh.PROGRESS).exists():
        time.sleep(0.01)
    proc.kill()  # SIGKILL: no cleanup runs
    proc.wait()
    killed_early = not (out / "bytes" / sh.MANIFEST).exists()
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _shard_files(out / "bytes") == _shard_files(tmp_path / "ref")
    assert killed_early or "resuming" not in done.stderr


@pytest.mark.parametrize("name,data,expect", [
    ("bad.jsonl.gz", "truncate", r"bad.jsonl.gz: corrupt or truncated gz file"),
    ("bad.jsonl.xz", "truncate", r"bad.jsonl.xz: corrupt or truncated xz file"),
    ("bad.jsonl.bz2", b"BZh9" + b"x" * 64, r"bad.jsonl.bz2: corrupt or truncated bz2 file"),
    ("bad.txt", b"ok \xff\xfe", r"bad.txt: not UTF-8 text \(byte offset 3\)"),
    ("bad.jsonl", b'{"text": "a"}\n{"txt": 1}\n', r"bad.jsonl: line 2: expected an object"),
])
def test_bad_input_is_one_line_naming_the_file(tmp_path, capsys, name, data, expect):
    path = tmp_path / name
    if data == "truncate":
        raw = b"".join(json.dumps({"text": os.urandom(200).hex()}).encode() + b"\n"
                       for _ in range(300))
        packed = gzip.compress(raw) if name.endswith(".gz") else lzma.compress(raw)
        data = packed[: len(packed) // 2]
    path.write_bytes(data)
    from hnetbench.cli import main

    rc = main(["data", "prepare", "data.source=files", f"data.path={path}",
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(expect, lines[0]), lines[0]


def test_a_tokenizer_or_input_mismatch_with_an_existing_manifest_is_refused(tmp_path):
    folder = _write_corpus(tmp_path / "in", _docs(200))
    prep.prepare(_cfg(folder), tmp_path / "out", workers=1, log=None)
    other = DataConfig(domain="zh", tokenizer="bpe", bpe_vocab_size=600)
    with pytest.raises(DataError, match=r"json: prepared with tokenizer bytes .* not bpe600"):
        prep.prepare(other, tmp_path / "out", workers=1, log=None)
    with pytest.raises(DataError, match=r"prepared from another input: path="):
        prep.prepare(_cfg(str(tmp_path / "in" / "a.jsonl.gz")), tmp_path / "out", log=None)
    # a run reading a folder prepared with another tokenizer is refused too, in one line
    import shutil

    from hnetbench.data import build_loader

    (tmp_path / "p").mkdir()
    (tmp_path / "out").rename(tmp_path / "p" / "bytes")
    run = DataConfig(source="prepared", path=str(tmp_path / "p"), tokenizer="bpe",
                     bpe_vocab_size=300, seq_len=64, batch_size=2)
    with pytest.raises(DataError, match=r"p/bpe300: no prepared bpe300 corpus here"):
        build_loader(run, "train")  # (its BPE trains on the byte copy, p/bytes)
    shutil.copytree(tmp_path / "p" / "bytes", tmp_path / "p" / "bpe300")
    with pytest.raises(DataError, match=r"prepared with tokenizer bytes .* the run uses bpe300"):
        build_loader(run, "train")
    as_bytes = DataConfig(**{**run.__dict__, "tokenizer": "bytes"})
    n_train = sum(split_of(d.encode()) == "train" for d in _docs(200))
    assert build_loader(as_bytes, "train").n_docs == n_train


def test_hf_streaming_source_prepares_like_the_same_files(tmp_path, monkeypatch):
    """`datasets` with streaming=True (its local json builder: offline) gives the same shards."""
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    docs = _docs(300, seed=4)
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    via_files = prep.prepare(_cfg(str(src)), tmp_path / "f", workers=1, log=None)
    hf = DataConfig(source="hf", path=f"json:{src}")  # no data.max_bytes needed to prepare
    via_hf = prep.prepare(hf, tmp_path / "h", workers=1, log=None)
    assert via_hf["splits"] == via_files["splits"]
    assert _shard_files(tmp_path / "h").keys() == _shard_files(tmp_path / "f").keys()
