"""Prepared corpora on disk: NumPy `.npy` token shards + a JSON manifest (see docs/DATA.md).

A prepared directory holds, per split (train/val/test), shards `{split}-{k:05d}.tokens.npy` (the
documents' token ids concatenated, no BOS, in the smallest unsigned dtype that holds the
tokenizer's ids: uint8 for bytes) and `{split}-{k:05d}.docs.npy` (int64: for each document, the
position of its BOS in the shard's *stream*, i.e. token offset + document index). The stream of a
split is [BOS] doc [BOS] doc ... over its shards in order; a shard's stream length is
tokens + documents. `manifest.json` is written last, so its presence means "complete".

Readers memmap the document index (`np.load(mmap_mode="r")`) and read the ids of a window with
pread: nothing is read into memory until a window of it is asked for.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from hnetbench.data.corpus import SPLITS, DataError, check_split

FORMAT = "hnetbench-npy-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PROGRESS = "progress.json"


def tokenizer_fingerprint(tok: Any) -> str:
    """Stable id of a tokenizer: its `identity()` where it has one (that covers the serialised
    model: unigram scores, merge order, split pattern), else name, size, BOS and each id's bytes."""
    if callable(getattr(tok, "identity", None)):
        return hashlib.sha256(tok.identity().encode()).hexdigest()[:16]
    h = hashlib.sha256(f"{tok.name}|{tok.vocab_size}|{tok.bos_id}".encode())
    for i in range(tok.vocab_size):
        b = tok.token_bytes(i)
        h.update(len(b).to_bytes(4, "little") + b)
    return h.hexdigest()[:16]


def token_dtype(vocab_size: int, bos_id: int) -> np.dtype:
    """Smallest unsigned dtype holding every stored id (BOS is never stored)."""
    top = vocab_size - 2 if bos_id == vocab_size - 1 else vocab_size - 1
    for dt in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


def tokenizer_identity(tok: Any) -> dict[str, Any]:
    return {
        "name": tok.name,
        "vocab_size": int(tok.vocab_size),
        "bos_id": int(tok.bos_id),
        "fingerprint": tokenizer_fingerprint(tok),
        "dtype": token_dtype(tok.vocab_size, tok.bos_id).name,
    }


def matched_seq_len(seq_len: int, tokenizer_name: str, train: dict) -> int:
    """Tokens per row so that a row covers the bytes a byte model's `seq_len` covers, from the
    train split's bytes, tokens and documents (each document adds one BOS position)."""
    if tokenizer_name == "bytes":
        return seq_len
    b, t, d = train["bytes"], train["tokens"], train["documents"]
    bpp_bytes = b / (b + d)  # bytes per stream position of a byte model
    bpp_tok = b / (t + d)
    return max(1, round(seq_len * bpp_bytes / bpp_tok))


class _HashingFile:
    """File wrapper that hashes what is written (so a shard is hashed without re-reading it)."""

    def __init__(self, f) -> None:
        self.f, self.sha = f, hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.f.write(data)


def write_npy(path: Path, arr: np.ndarray) -> str:
    """np.save to a temp file + fsync + rename (a kill never leaves a half shard); sha256 of it."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        hf = _HashingFile(f)
        np.lib.format.write_array(hf, np.ascontiguousarray(arr), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return hf.sha.hexdigest()


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None
    except (ValueError, UnicodeDecodeError):
        raise DataError(f"{path}: not valid JSON (a damaged prepared corpus?)") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise DataError(f"{path}: not a {FORMAT} manifest")
    if obj.get("version") != FORMAT_VERSION:
        raise DataError(
            f"{path}: format version {obj.get('version')}, this hnetbench reads "
            f"{FORMAT_VERSION} (prepare the corpus again)"
        )
    return obj


def load_manifest(root: str | os.PathLike) -> dict:
    return read_json(Path(root) / MANIFEST)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def verify(root: str | os.PathLike) -> list[str]:
    """Problems with a prepared directory's shards (sha256 of every file); [] if none."""
    root = Path(root)
    man = load_manifest(root)
    bad = []
    for split in SPLITS:
        for sh in man["splits"][split]["shards"]:
            for kind in ("tokens", "docs"):
                p = root / sh[kind]
                if not p.is_file():
                    bad.append(f"{p}: missing")
                elif file_sha256(p) != sh[f"{kind}_sha256"]:
                    bad.append(f"{p}: sha256 differs from {root / MANIFEST}")
    return bad


def _open_npy(path: Path, want_len: int, dtype: str, header_only: bool = False) -> Any:
    """The memmapped array (checked against the manifest), or its data offset if header_only."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: shard missing (prepare the corpus again)") from None
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: unreadable shard ({e})") from None
    if arr.ndim != 1 or len(arr) != want_len or arr.dtype.name != dtype:
        raise DataError(
            f"{path}: expected {want_len} x {dtype}, found {arr.shape} x {arr.dtype.name} "
            "(a damaged prepared corpus?)"
        )
    if header_only:
        return int(arr.offset)
    mm = getattr(arr, "_mmap", None)
    if mm is not None and hasattr(mmap, "MADV_RANDOM"):
        mm.madvise(mmap.MADV_RANDOM)  # binary searches: no read-ahead around each probe
    return arr.view(np.ndarray)  # same mapped pages; slicing a plain ndarray is cheaper


class _TokenFile:
    """A shard's ids read with pread: a window costs one syscall and a copy of its bytes, and
    touches no mapped pages (with a memmap, each page fault maps read-around pages too, so a
    process's file-backed RSS grows by far more than the windows it reads)."""

    _open: dict[Path, int] = {}  # a few descriptors kept open (a corpus can have 1000s of shards)

    def __init__(self, path: Path, n: int, dtype: str, offset: int) -> None:
        self.path, self.n, self.dtype, self.offset = path, n, np.dtype(dtype), offset

    def __len__(self) -> int:
        return self.n

    def _fd(self) -> int:
        fd = self._open.pop(self.path, None)
        if fd is None:
            fd = os.open(self.path, os.O_RDONLY)
            if len(self._open) >= 64:
                os.close(self._open.pop(next(iter(self._open))))
        self._open[self.path] = fd  # most recently used last
        return fd

    def __getitem__(self, s: slice) -> np.ndarray:
        start, stop, _ = s.indices(self.n)
        size = max(0, stop - start) * self.dtype.itemsize
        buf = os.pread(self._fd(), size, self.offset + start * self.dtype.itemsize)
        if len(buf) != size:
            raise DataError(f"{self.path}: shard shorter than its header says (truncated?)")
        return np.frombuffer(buf, dtype=self.dtype)


class PreparedSplit:
    """One split's stream ([BOS] doc [BOS] doc ...), read window by window from memmapped shards."""

    def __init__(self, root: str | os.PathLike, split: str, manifest: dict | None = None) -> None:
        check_split(split)
        self.root, self.split = Path(root), split
        man = manifest or load_manifest(self.root)
        info = man["splits"][split]
        self.bos_id = int(man["tokenizer"]["bos_id"])
        self.dtype = man["tokenizer"]["dtype"]
        self.shards = info["shards"]
        self.n_docs, self.n_tokens, self.n_bytes = info["documents"], info["tokens"], info["bytes"]
        if self.n_docs == 0:
            raise DataError(f"{self.root / MANIFEST}: split '{split}' has no documents")
        lens = [sh["tokens_len"] + sh["documents"] for sh in self.shards]
        self.starts = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)  # per shard
        self.stream_len = int(self.starts[-1])
        self._maps: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _shard(self, k: int) -> tuple[_TokenFile, np.ndarray]:
        """(ids of shard k, read with pread; its BOS positions, memmapped for binary search)."""
        if k not in self._maps:
            sh = self.shards[k]
            path = self.root / sh["tokens"]
            offset = _open_npy(path, sh["tokens_len"], self.dtype, header_only=True)
            toks = _TokenFile(path, sh["tokens_len"], self.dtype, offset)
            docs = _open_npy(self.root / sh["docs"], sh["documents"], "int64")
            self._maps[k] = (toks, docs)
        return self._maps[k]

    def read(self, a: int, b: int, out: np.ndarray | None = None) -> np.ndarray:
        """stream[a:b] (clipped to the stream's end), as int32 or written into `out` (any
        integer dtype, at least b - a long): returns the filled part."""
        b = min(b, self.stream_len)
        if out is None:
            out = np.empty(max(0, b - a), dtype=np.int32)
        o = 0
        k = int(np.searchsorted(self.starts, a, side="right")) - 1
        pos = a
        while pos < b:
            s0, s1 = int(self.starts[k]), int(self.starts[k + 1])
            lo, hi = pos - s0, min(b, s1) - s0
            toks, bos = self._shard(k)
            # the documents whose BOS falls in [lo, hi); tokens before doc d start at bos[d] - d
            d_a = int(np.searchsorted(bos, lo, side="left"))
            d_b = int(np.searchsorted(bos, hi, side="left"))
            t0 = lo - d_a
            slab = toks[t0 : t0 + (hi - lo) - (d_b - d_a)]
            dst = out[o : o + hi - lo]
            if d_b > d_a:  # BOS before the tokens of each document starting here
                marks = np.asarray(bos[d_a:d_b], dtype=np.int64) - lo
                keep = np.ones(hi - lo, dtype=bool)
                keep[marks] = False
                dst[marks] = self.bos_id
                dst[keep] = slab
            else:
                dst[:] = slab
            o += hi - lo
            pos = hi + s0
            k += 1
        return out[:o]

    def documents(self) -> Iterator[np.ndarray]:
        """Token ids of each document, in prepared order (a view into the memmap)."""
        for k, sh in enumerate(self.shards):
            toks, bos = self._shard(k)
            offs = np.asarray(bos, dtype=np.int64) - np.arange(len(bos))  # token offsets
            ends = np.append(offs[1:], sh["tokens_len"])
            for o, e in zip(offs, ends):
                yield toks[o:e]
