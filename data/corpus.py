"""Embedded corpora and deterministic train/val/test splits.

Each domain is one `corpora/<domain>.jsonl.xz` file (`{"id", "text"}` per line, built by
`build_corpora.py`). A document's split depends only on its sha256, so it never moves when other
documents are added or removed, and duplicates always land in the same split.
"""

from __future__ import annotations

import functools
import hashlib
import json
import lzma
import os
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


def split_documents(docs: list[bytes], split: str) -> list[bytes]:
    check_split(split)
    return [d for d in docs if split_of(d) == split]


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
    """Documents of an embedded domain (en, zh, code, dna) in split train|val|test."""
    check_split(split)
    return split_documents(all_documents(domain), split)


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
