"""Embedded corpora and deterministic train/val/test splits.

Each domain is one `corpora/<domain>.jsonl.xz` file (`{"id", "text"}` per line, built by
`build_corpora.py`). Splits are made over units, not whole documents: a document longer than
UNIT_BYTES is cut into units of about UNIT_BYTES (at a line break, else at a space, else at a
character boundary), so 233 speeches give ~2,600 English units and the test split draws from
many sources. A unit's split depends only on its sha256 (`split_of`), so it never moves when
other documents are added or removed, and duplicates always land in the same split.

The test split is decontaminated against the train split as GPT-3 filtered its training data
(Brown et al. 2020, App. C): every 13-gram (DNA: 32-gram of bases) it shares with the train
split is cut out with DECON_MARGIN characters on each side; the pieces left (>= MIN_PIECE
bytes) are the test units, and a unit cut more than 10 times is dropped. See
evals/decontaminate.py for the n-gram definition.
"""

from __future__ import annotations

import functools
import hashlib
import json
import lzma
import os
import re
from pathlib import Path

from hnetbench.config import ConfigError, DataConfig

CORPORA_DIR = Path(__file__).resolve().parent / "corpora"
DOMAINS = ("en", "zh", "code", "dna")
SPLITS = ("train", "val", "test")
SPLIT_PERCENT = {"train": (0, 90), "val": (90, 95), "test": (95, 100)}


class DataError(ConfigError):
    """A bad corpus, split, tokenizer or data file; the message is one line."""


def list_domains() -> list[str]:
    return list(DOMAINS)


def split_of(doc: bytes) -> str:
    """train (90%) / val (5%) / test (5%) from the document's sha256."""
    bucket = int.from_bytes(hashlib.sha256(doc).digest()[:8], "big") % 100
    for name, (lo, hi) in SPLIT_PERCENT.items():
        if lo <= bucket < hi:
            return name
    raise AssertionError(bucket)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' (expected one of: {', '.join(SPLITS)})")


UNIT_BYTES = 4096
DECON_MARGIN = 200
MIN_PIECE = 256
MAX_CUTS = 10
DECON_MAX_TRAIN_BYTES = 512 * 2**20  # beyond this the in-memory n-gram index is not built


def _cut_at(doc: bytes, i: int) -> int:
    """First cut position >= i: before a line that starts at column 0 after a blank line (code:
    a top-level statement), else after any line break, else after a space, else at a UTF-8
    character boundary."""
    end = i + UNIT_BYTES
    for pat in (_TOP_LEVEL, _LINE):
        m = pat.search(doc, i, end)
        if m:
            return m.end()
    j = doc.find(b" ", i, end)
    if j >= 0:
        return j + 1
    while i < len(doc) and (doc[i] & 0xC0) == 0x80:
        i += 1
    return i


_TOP_LEVEL = re.compile(rb"\n\n(?=[^\s])")
_LINE = re.compile(rb"\n(?=[^\s])")


def units_of(doc: bytes) -> list[bytes]:
    """`doc` cut into consecutive units of about UNIT_BYTES (the last one 1/4 to 5/4 of it)."""
    out, start = [], 0
    while len(doc) - start > UNIT_BYTES + UNIT_BYTES // 4:
        end = _cut_at(doc, start + UNIT_BYTES)
        if end >= len(doc):
            break
        out.append(doc[start:end])
        start = end
    out.append(doc[start:])
    return [u for u in out if u]


def _decontaminate(test: list[bytes], train: list[bytes]) -> tuple[list[bytes], dict]:
    """(clean test units, {"unit", "n", "overlap_before", "overlap_after"}): the overlaps are
    the shares of the test split's n-grams that occur in the train split."""
    from hnetbench.evals.decontaminate import NgramIndex, clean_pieces, settings_for_texts

    unit, n = settings_for_texts(test[:20])
    info = {"unit": unit, "n": n, "overlap_before": 0.0, "overlap_after": 0.0}
    if not test or not train:
        return test, info
    if sum(map(len, train)) > DECON_MAX_TRAIN_BYTES:
        import sys

        print(f"data: test split not decontaminated (train split over "
              f"{DECON_MAX_TRAIN_BYTES >> 20} MiB; the n-gram index would not fit in memory)",
              file=sys.stderr)
        info["overlap_before"] = info["overlap_after"] = None
        return test, info
    index = NgramIndex(train, unit, n)
    info["overlap_before"] = index.overlap_rate(test)
    out: list[bytes] = []
    for u in test:
        text = u.decode("utf-8")
        pieces = clean_pieces(text, index, DECON_MARGIN)
        if pieces == [text]:
            out.append(u)
        elif len(pieces) - 1 <= MAX_CUTS:
            out += [b for b in (p.encode("utf-8") for p in pieces) if len(b) >= MIN_PIECE]
    info["overlap_after"] = index.overlap_rate(out)
    return out, info


def split_documents(docs: list[bytes], split: str) -> list[bytes]:
    """The units of `docs` in `split` (the test split decontaminated against train)."""
    check_split(split)
    units = [u for d in docs for u in units_of(bytes(d))]
    mine = [u for u in units if split_of(u) == split]
    if split != "test":
        return mine
    return _decontaminate(mine, [u for u in units if split_of(u) == "train"])[0]


def corpus_path(domain: str) -> Path:
    if domain not in DOMAINS:
        raise DataError(
            f"unknown domain '{domain}' (embedded domains: {', '.join(DOMAINS)}; "
            "use data.source=files|hf for other data)"
        )
    return CORPORA_DIR / f"{domain}.jsonl.xz"


@functools.lru_cache(maxsize=8)
def _read_corpus(path: Path, mtime_ns: int) -> tuple[bytes, ...]:
    """All documents of one corpus file (cached per file version)."""
    try:
        raw = lzma.decompress(path.read_bytes())
    except lzma.LZMAError:
        raise DataError(f"{path}: not a valid xz file") from None
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte offset {e.start})") from None
    docs = []
    for i, line in enumerate(raw.splitlines(), 1):
        try:
            rec = json.loads(line)
            text = rec["text"]
        except (ValueError, KeyError, TypeError):
            raise DataError(
                f"{path}: line {i}: expected a JSON object with a 'text' field"
            ) from None
        if not isinstance(text, str):
            raise DataError(f"{path}: line {i}: 'text' must be a string")
        if text:
            docs.append(text.encode("utf-8"))
    if not docs:
        raise DataError(f"{path}: corpus is empty")
    return tuple(docs)


def all_documents(domain: str) -> list[bytes]:
    path = corpus_path(domain)
    if not path.is_file():
        raise DataError(f"{path}: corpus file missing (rebuild with `hnetbench data build`)")
    return list(_read_corpus(path, path.stat().st_mtime_ns))


def load_documents(domain: str, split: str) -> list[bytes]:
    """Units of an embedded domain (en, zh, code, dna) in split train|val|test."""
    check_split(split)
    path = corpus_path(domain)
    if not path.is_file():
        raise DataError(f"{path}: corpus file missing (rebuild with `hnetbench data build`)")
    return list(_split_cached(path, path.stat().st_mtime_ns, split))


SPLIT_VERSION = 2  # bump when units_of / the decontamination rule changes


@functools.lru_cache(maxsize=16)
def _split_cached(path: Path, mtime_ns: int, split: str) -> tuple[bytes, ...]:
    if split != "test":
        return tuple(split_documents(list(_read_corpus(path, mtime_ns)), split))
    return tuple(_test_split(path, mtime_ns)[0])


@functools.lru_cache(maxsize=8)
def _test_split(path: Path, mtime_ns: int) -> tuple[list[bytes], dict]:
    """The decontaminated test split and its overlap figures; costs seconds (an n-gram index
    of the train split), so it is cached on disk, keyed by the corpus file's sha256."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    cached = cache_dir() / "splits" / f"{path.name}.{digest}.v{SPLIT_VERSION}.test.json"
    if cached.is_file():
        try:
            rec = json.loads(cached.read_text("utf-8"))
            return [t.encode("utf-8") for t in rec["units"]], rec["info"]
        except (ValueError, OSError, KeyError, TypeError):
            pass  # a damaged cache entry is recomputed
    units = [u for d in _read_corpus(path, mtime_ns) for u in units_of(d)]
    test, info = _decontaminate([u for u in units if split_of(u) == "test"],
                                [u for u in units if split_of(u) == "train"])
    rec = {"units": [u.decode("utf-8") for u in test], "info": info}
    atomic_write_bytes(cached, json.dumps(rec).encode("utf-8"))
    return test, info


def decontamination_overlap(domain: str) -> dict:
    """{"unit", "n", "overlap_before", "overlap_after"}: share of the test split's n-grams
    (13 words; DNA 32 bases) found in the train split, before and after decontamination."""
    path = corpus_path(domain)
    if not path.is_file():
        raise DataError(f"{path}: corpus file missing (rebuild with `hnetbench data build`)")
    return dict(_test_split(path, path.stat().st_mtime_ns)[1])


def corpus_documents(data_cfg: DataConfig, split: str) -> list[bytes]:
    """Documents for any `data.source`: embedded corpora, local files, or Hugging Face."""
    check_split(split)
    if data_cfg.source == "embedded":
        return load_documents(data_cfg.domain, split)
    from hnetbench.data import connectors

    if data_cfg.source == "files":
        docs = connectors.read_files(
            data_cfg.path,
            text_field=data_cfg.text_field,
            fasta_window=data_cfg.fasta_window,
            max_bytes=data_cfg.max_bytes,
        )
    elif data_cfg.source == "hf":
        docs = connectors.hf_documents(data_cfg)
    elif data_cfg.source == "prepared":  # its byte-level copy (data prepare data.tokenizer=bytes)
        from hnetbench.data.loader import prepared_documents
        from hnetbench.data.tokenizers import ByteTokenizer

        return list(prepared_documents(data_cfg, split, ByteTokenizer()))
    else:
        raise DataError(
            f"data.source: unknown source '{data_cfg.source}' (expected embedded|files|hf|prepared)"
        )
    out = split_documents(docs, split)
    if not out:
        raise DataError(
            f"{data_cfg.path}: no documents fall in split '{split}' ({len(docs)} in all)"
        )
    return out


def cache_dir() -> Path:
    """$HNETBENCH_CACHE, else ~/.cache/hnetbench (tokenizers, token streams, HF downloads)."""
    root = os.environ.get("HNETBENCH_CACHE") or Path.home() / ".cache" / "hnetbench"
    return Path(root)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """temp file + rename, so a kill never leaves a half-written cache entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
