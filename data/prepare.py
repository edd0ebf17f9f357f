"""`hnetbench data prepare`: stream documents -> split -> tokenize (worker processes) -> shards.

Memory is bounded by the open shard buffers (one per split, `shard_tokens` ids each) plus a few
chunks in flight, whatever the corpus size. A killed prepare resumes: `progress.json` (written
atomically after each shard) records the shards done and how many documents of each split they
hold; a rerun streams the input again, skips those documents without tokenizing them, and
rewrites any shard written after the last progress record (same name, same content).
"""

from __future__ import annotations

import array
import concurrent.futures as cf
import dataclasses
import fcntl
import hashlib
import itertools
import json
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from hnetbench.config import DataConfig
from hnetbench.data import shards as sh
from hnetbench.data.corpus import (
    SPLITS,
    DataError,
    all_documents,
    cache_dir,
    corpus_path,
    load_documents,
    split_of,
)

DEFAULT_SHARD_TOKENS = 1 << 26  # 64 Mi ids per shard (64 MB for bytes)
CHUNK_BYTES = 1 << 22  # documents handed to a worker at a time (~4 MB of text)
BPE_TRAIN_CAP = 8_000_000  # input bytes read to train a BPE (its sample is the first 2 MB)
Log = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- inputs


def source_record(cfg: DataConfig) -> dict[str, Any]:
    """What identifies the input documents (stored in the manifest, checked on resume)."""
    rec: dict[str, Any] = {"source": cfg.source, "domain": cfg.domain}
    if cfg.source != "embedded":
        rec.update(path=cfg.path, text_field=cfg.text_field, max_bytes=cfg.max_bytes)
        rec.update(hf_config=cfg.hf_config, fasta_window=cfg.fasta_window)
    return rec


def input_stamp(cfg: DataConfig) -> list:
    """Sizes and mtimes of the local input files (part of the auto-prepare cache key)."""
    from hnetbench.data import connectors

    if cfg.source == "embedded":
        paths = [corpus_path(cfg.domain)]
    elif cfg.source == "files":
        paths = connectors.expand_paths(cfg.path)
    else:
        return []
    out = []
    for p in paths:
        st = p.stat() if p.exists() else None
        out.append([str(p), st.st_size if st else -1, st.st_mtime_ns if st else -1])
    return out


def iter_documents(cfg: DataConfig) -> Iterator[bytes]:
    """Every input document of `cfg` in a fixed order, as UTF-8 bytes, up to data.max_bytes."""
    from hnetbench.data import connectors

    if cfg.source == "embedded":
        yield from all_documents(cfg.domain)
        return
    if cfg.source == "files":
        docs: Iterator[bytes] = (
            d
            for p in connectors.expand_paths(cfg.path)
            for d in connectors.iter_file(p, cfg.text_field, cfg.fasta_window)
        )
    elif cfg.source == "hf":
        spec = connectors.hf_spec(cfg, require_cap=False)
        text_field = spec.pop("text_field")
        docs = connectors.iter_hf(text_field=text_field, **spec)
    else:
        raise DataError(
            f"data.source: cannot prepare from '{cfg.source}' (expected embedded|files|hf)"
        )
    total = 0
    for d in docs:
        yield d
        total += len(d)
        if cfg.max_bytes and total >= cfg.max_bytes:
            return


# bump when the assignment of documents to splits changes: cached preparations are then redone
SPLIT_SCHEME = "units-4k-decontaminated"


def iter_split_documents(cfg: DataConfig) -> Iterator[tuple[bytes, str]]:
    """(document, split) pairs in a fixed order. The embedded corpora come split exactly as
    everywhere else in the suite (corpus.split_documents: ~4 kB units by hash, the test split
    decontaminated against train, so the shipped tasks never overlap the training data); other
    sources split whole documents by hash (corpus.split_of)."""
    if cfg.source == "embedded":
        for s in SPLITS:
            for unit in load_documents(cfg.domain, s):
                yield unit, s
        return
    for doc in iter_documents(cfg):
        yield doc, split_of(doc)


def prepare_tokenizer(cfg: DataConfig):
    """The configured tokenizer; a trained BPE reads only the first few MB of a large source."""
    from hnetbench.data.tokenizers import get_tokenizer

    if cfg.tokenizer == "bpe" and cfg.source in ("files", "hf"):
        cap = min(cfg.max_bytes or BPE_TRAIN_CAP, BPE_TRAIN_CAP)
        cfg = dataclasses.replace(cfg, max_bytes=cap)
    return get_tokenizer(cfg)


# ----------------------------------------------------------------------------- workers

_WORKER_TOK: Any = None


def _worker_init(cfg: DataConfig) -> None:
    global _WORKER_TOK
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _WORKER_TOK = prepare_tokenizer(cfg)


def encode_chunk(tok: Any, docs: list[bytes], dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(flat ids, ids per document) of a list of documents."""
    if tok.name == "bytes":
        flat = np.frombuffer(b"".join(docs), dtype=np.uint8)
        return flat, np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    ids = tok.encode_batch(docs)
    lens = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=int(lens.sum()))
    return flat, lens


def _worker_encode(docs: list[bytes], dtype: str) -> tuple[np.ndarray, np.ndarray]:
    return encode_chunk(_WORKER_TOK, docs, dtype)


def _chunk_message(tok: Any, docs: list[bytes], dtype: str) -> tuple:
    """("chunk", split of each doc, bytes of each doc, flat ids, ids per doc)."""
    return ("chunk", [split_of(x) for x in docs], [len(x) for x in docs],
            *encode_chunk(tok, docs, dtype))


def _file_reader(paths: list[str], cfg: DataConfig, dtype: str, q: Any) -> None:
    """A reader process (source=files): reads, splits and tokenizes its files in order, one
    message per ~4 MB chunk ("chunk", splits, bytes per doc, flat ids, ids per doc), then
    ("eof",) after each file; ("error", one line) ends it. The queue is bounded, so a reader
    runs at most a few chunks ahead of the writer."""
    from hnetbench.data import connectors

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    where = paths[0] if paths else "?"
    try:
        tok = prepare_tokenizer(cfg)
        for where in paths:
            docs: list[bytes] = []
            size = 0
            for d in connectors.iter_file(Path(where), cfg.text_field, cfg.fasta_window):
                docs.append(d)
                size += len(d)
                if size >= CHUNK_BYTES:
                    q.put(_chunk_message(tok, docs, dtype))
                    docs, size = [], 0
            if docs:
                q.put(_chunk_message(tok, docs, dtype))
            q.put(("eof",))
    except DataError as e:
        q.put(("error", str(e)))
    except Exception as e:  # noqa: BLE001 - reported in the parent as one line naming the file
        q.put(("error", f"{where}: {type(e).__name__}: {e}"))


def parallel_file_chunks(cfg: DataConfig, paths: list[Path], workers: int,
                         dtype: str) -> Iterator[tuple[list[str], list[int], np.ndarray,
                                                       np.ndarray]]:
    """(splits, bytes per doc, flat ids, ids per doc) chunks of `paths`, in file order, read by
    `workers` processes (process i reads files i, i + workers, ...), so parsing, hashing and
    tokenizing use every core while the order, and so the shards, stay those of one process."""
    import queue as queue_mod

    ctx = multiprocessing.get_context("spawn")  # the HF tokenizer's threads do not fork well
    w = max(1, min(workers, len(paths)))
    queues = [ctx.Queue(maxsize=3) for _ in range(w)]
    procs = [ctx.Process(target=_file_reader, args=([str(p) for p in paths[i::w]], cfg, dtype,
                                                    queues[i]), daemon=True) for i in range(w)]
    for pr in procs:
        pr.start()
    try:
        for k, path in enumerate(paths):
            q, pr = queues[k % w], procs[k % w]
            while True:
                try:
                    msg = q.get(timeout=2)
                except queue_mod.Empty:
                    if not pr.is_alive():
                        raise DataError(f"{path}: its reader process died (exit code "
                                        f"{pr.exitcode})") from None
                    continue
                if msg[0] == "eof":
                    break
                if msg[0] == "error":
                    raise DataError(msg[1])
                yield msg[1], msg[2], msg[3], msg[4]
    finally:
        for pr in procs:
            if pr.is_alive():
                pr.terminate()
            pr.join()
        for q in queues:
            q.close()
            q.cancel_join_thread()


# ----------------------------------------------------------------------------- shard writing


class SplitWriter:
    """Fills one split's shard buffer; writes a shard (atomically) when the next doc won't fit."""

    def __init__(self, root: Path, split: str, dtype: str, shard_tokens: int, done: dict,
                 on_shard: Callable[[], None] = lambda: None) -> None:
        self.root, self.split, self.dtype, self.cap = root, split, dtype, shard_tokens
        self.on_shard = on_shard  # records progress right after each shard
        self.shards: list[dict] = list(done.get("shards", []))
        self.docs_done = sum(s["documents"] for s in self.shards)
        self.buf: np.ndarray | None = None
        self.n = 0
        self.bos = array.array("q")
        self.nbytes = 0

    def add(self, toks: np.ndarray, nbytes: int) -> None:
        """Append one document (writing the full shard first when it would not fit)."""
        if self.n and self.n + len(toks) > self.cap:
            self.flush()
        if self.buf is None or len(self.buf) < self.n + len(toks):
            grown = np.empty(max(self.cap, self.n + len(toks)), dtype=self.dtype)  # lazily paged
            if self.buf is not None:
                grown[: self.n] = self.buf[: self.n]
            self.buf = grown
        self.bos.append(self.n + len(self.bos))
        self.buf[self.n : self.n + len(toks)] = toks
        self.n += len(toks)
        self.nbytes += nbytes

    def flush(self) -> None:
        if not self.bos:
            return
        k = len(self.shards)
        base = f"{self.split}-{k:05d}"
        toks_sha = sh.write_npy(self.root / f"{base}.tokens.npy", self.buf[: self.n])
        docs_sha = sh.write_npy(self.root / f"{base}.docs.npy", np.frombuffer(self.bos, np.int64))
        self.shards.append({
            "tokens": f"{base}.tokens.npy", "docs": f"{base}.docs.npy",
            "tokens_len": self.n, "documents": len(self.bos), "bytes": self.nbytes,
            "tokens_sha256": toks_sha, "docs_sha256": docs_sha,
        })
        self.docs_done += len(self.bos)
        if self.buf is not None and len(self.buf) > self.cap:
            self.buf = None  # an oversized document's buffer is not kept
        self.n, self.nbytes, self.bos = 0, 0, array.array("q")
        self.on_shard()

    def summary(self) -> dict:
        return {
            "documents": sum(s["documents"] for s in self.shards),
            "tokens": sum(s["tokens_len"] for s in self.shards),
            "bytes": sum(s["bytes"] for s in self.shards),
            "shards": self.shards,
        }


# ----------------------------------------------------------------------------- prepare


def _check_same(path: Path, old: dict, tok_id: dict, source: dict) -> None:
    if old.get("tokenizer", {}).get("fingerprint") != tok_id["fingerprint"]:
        t = old.get("tokenizer", {})
        raise DataError(
            f"{path}: prepared with tokenizer {t.get('name')} ({t.get('fingerprint')}), not "
            f"{tok_id['name']} ({tok_id['fingerprint']}); use another --out"
        )
    prev = old.get("source") or {}
    diff = [f"{k}={prev.get(k)!r} (now {v!r})" for k, v in source.items() if prev.get(k) != v]
    if diff:
        raise DataError(f"{path}: prepared from another input: {', '.join(diff)}; "
                        "use another --out")


def prepare(
    cfg: DataConfig,
    out_dir: str | os.PathLike,
    workers: int | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    log: Log | None = _stderr,
    tokenizer: Any = None,
) -> dict:
    """Prepare `cfg`'s documents under `out_dir` (resuming a killed run); returns the manifest."""
    if shard_tokens < 1:
        raise DataError(f"--shard-tokens: expected >= 1, got {shard_tokens}")
    root = Path(out_dir)
    tok = tokenizer or prepare_tokenizer(cfg)
    tok_id, source = sh.tokenizer_identity(tok), source_record(cfg)
    if (root / sh.MANIFEST).is_file():
        man = sh.load_manifest(root)
        _check_same(root / sh.MANIFEST, man, tok_id, source)
        return man
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".*.tmp*"):  # temp files of a killed run
        stale.unlink(missing_ok=True)
    progress: dict = {}
    if (root / sh.PROGRESS).is_file():
        progress = sh.read_json(root / sh.PROGRESS)
        _check_same(root / sh.PROGRESS, progress, tok_id, source)
    dtype = tok_id["dtype"]
    done = progress.get("splits", {})
    header = {"format": sh.FORMAT, "version": sh.FORMAT_VERSION, "tokenizer": tok_id,
              "source": source, "shard_tokens": shard_tokens}

    def save_progress() -> None:
        splits = {s: {"shards": w.shards} for s, w in writers.items()}
        sh.write_json(root / sh.PROGRESS, {**header, "splits": splits})

    writers = {s: SplitWriter(root, s, dtype, shard_tokens, done.get(s, {}), save_progress)
               for s in SPLITS}
    skip = {s: w.docs_done for s, w in writers.items()}

    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    paths = []
    if cfg.source == "files" and n_workers > 1:
        from hnetbench.data import connectors

        paths = connectors.expand_paths(cfg.path)
    by_file = len(paths) > 1  # reader processes, one file each at a time (parallel_file_chunks)
    use_pool = not by_file and n_workers > 1 and tok.name != "bytes"  # bytes need no tokenizing
    t0, seen_bytes = time.perf_counter(), 0
    last_log = t0
    if log and any(skip.values()):
        log(f"data prepare: resuming {root} ({', '.join(f'{s} {n} docs' for s, n in skip.items())} "
            "already written)")

    def consume(splits: list[str], nbytes: list[int], flat: np.ndarray, lens: np.ndarray,
                skipping: bool = False) -> None:
        nonlocal seen_bytes, last_log
        ends = np.cumsum(lens)
        for i, s in enumerate(splits):
            if skipping and skip[s]:  # written before the kill (readers cannot know)
                skip[s] -= 1
                continue
            writers[s].add(flat[ends[i] - lens[i] : ends[i]], nbytes[i])
            seen_bytes += nbytes[i]
        now = time.perf_counter()
        if log and now - last_log > 30:
            last_log = now
            log(f"data prepare: {seen_bytes / 1e6:.0f} MB in {now - t0:.0f} s "
                f"({seen_bytes / 1e6 / max(now - t0, 1e-9):.1f} MB/s)")

    if by_file:
        total = 0
        for splits, nb, flat, lens in parallel_file_chunks(cfg, paths, n_workers, dtype):
            if cfg.max_bytes:  # the same cap as iter_documents: stop after the doc crossing it
                cum = total + np.cumsum(nb)
                cut = int(np.searchsorted(cum, cfg.max_bytes, side="left")) + 1
                if cut < len(nb):
                    flat, lens = flat[: int(np.sum(lens[:cut]))], lens[:cut]
                    splits, nb = splits[:cut], nb[:cut]
                total = int(cum[min(cut, len(cum)) - 1])
            consume(splits, nb, flat, lens, skipping=True)
            if cfg.max_bytes and total >= cfg.max_bytes:
                break
        return _finish(cfg, root, header, writers, t0, log)

    pool = None
    if use_pool:
        ctx = multiprocessing.get_context("spawn")  # the HF tokenizer's threads do not fork well
        pool = cf.ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_worker_init,
                                      initargs=(cfg,))
    inflight: deque = deque()
    try:
        chunk: list[bytes] = []
        chunk_splits: list[str] = []
        size = 0

        def submit() -> None:
            nonlocal chunk, chunk_splits, size
            if not chunk:
                return
            nb = [len(d) for d in chunk]
            if pool is None:
                consume(chunk_splits, nb, *encode_chunk(tok, chunk, dtype))
            else:
                inflight.append((chunk_splits, nb, pool.submit(_worker_encode, chunk, dtype)))
                while len(inflight) > 2 * n_workers:  # bounded memory: wait for the oldest
                    s_, nb_, fut = inflight.popleft()
                    consume(s_, nb_, *fut.result())
            chunk, chunk_splits, size = [], [], 0

        for doc, s in iter_split_documents(cfg):
            if skip[s]:  # written before the kill: not tokenized again
                skip[s] -= 1
                continue
            chunk.append(doc)
            chunk_splits.append(s)
            size += len(doc)
            if size >= CHUNK_BYTES:
                submit()
        submit()
        while inflight:
            s_, nb_, fut = inflight.popleft()
            consume(s_, nb_, *fut.result())
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return _finish(cfg, root, header, writers, t0, log)


def _finish(cfg: DataConfig, root: Path, header: dict, writers: dict[str, SplitWriter],
            t0: float, log: Log | None) -> dict:
    """Write the last shards and the manifest (the prepared folder is complete from here)."""
    for w in writers.values():
        w.flush()
    man = {**header, "splits": {s: w.summary() for s, w in writers.items()}}
    if man["splits"]["train"]["documents"] == 0:
        raise DataError(f"{cfg.path or cfg.domain}: no training documents to prepare")
    sh.write_json(root / sh.MANIFEST, man)
    (root / sh.PROGRESS).unlink(missing_ok=True)
    if log:
        dt = time.perf_counter() - t0
        tot = sum(man["splits"][s]["bytes"] for s in SPLITS)
        log(f"data prepare: {root}: {tot / 1e6:.1f} MB in {dt:.1f} s "
            f"({tot / 1e6 / max(dt, 1e-9):.1f} MB/s; {len(SPLITS)} splits, "
            f"{sum(len(man['splits'][s]['shards']) for s in SPLITS)} shards)")
    return man


# ----------------------------------------------------------------------------- locating


def prepared_dir(cfg: DataConfig, tok: Any) -> Path:
    """Where `cfg`'s prepared shards live: data.path/<tokenizer> for source=prepared, else a
    cache entry keyed by the input (files' sizes and mtimes) and the tokenizer."""
    if cfg.source == "prepared":
        if not cfg.path:
            raise DataError("data.path: required for data.source=prepared (a prepared folder)")
        return Path(cfg.path).expanduser() / tok.name
    key = json.dumps([source_record(cfg), input_stamp(cfg), sh.tokenizer_fingerprint(tok),
                      sh.FORMAT_VERSION, SPLIT_SCHEME], sort_keys=True)
    return cache_dir() / "prepared" / hashlib.sha256(key.encode()).hexdigest()[:20]


def ensure_prepared(cfg: DataConfig, tok: Any, log: Log | None = None) -> tuple[Path, dict]:
    """(folder, manifest) of `cfg`'s prepared data; prepares other sources into the cache on
    first use (one process at a time: the others wait on a lock, then read the result)."""
    root = prepared_dir(cfg, tok)
    tok_id = sh.tokenizer_identity(tok)
    if cfg.source == "prepared":
        if not (root / sh.MANIFEST).is_file():
            raise DataError(
                f"{root}: no prepared {tok.name} corpus here (run `hnetbench data prepare "
                f"CONFIG data.tokenizer={cfg.tokenizer} --out {cfg.path}` first)"
            )
        man = sh.load_manifest(root)
        if man["tokenizer"]["fingerprint"] != tok_id["fingerprint"]:
            raise DataError(
                f"{root / sh.MANIFEST}: prepared with tokenizer {man['tokenizer']['name']} "
                f"({man['tokenizer']['fingerprint']}), the run uses {tok.name} "
                f"({tok_id['fingerprint']})"
            )
        return root, man
    if (root / sh.MANIFEST).is_file():
        return root, sh.load_manifest(root)
    if cfg.source == "hf" and not _hf_local(cfg) and cfg.max_bytes <= 0:
        raise DataError(
            f"data.source=hf '{cfg.path}': prepare it once with `hnetbench data prepare` and "
            "train from data.source=prepared (or set data.max_bytes for a small sample)"
        )
    root.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / sh.MANIFEST).is_file():
            return root, sh.load_manifest(root)
        return root, prepare(cfg, root, workers=1, log=log, tokenizer=tok)


def _hf_local(cfg: DataConfig) -> bool:
    from hnetbench.data.connectors import LOCAL_BUILDERS

    builder, sep, _ = (cfg.path or "").partition(":")
    return bool(sep) and builder in LOCAL_BUILDERS

