"""Packing loader: documents -> one token stream -> fixed windows -> (B, T) batches.

Per epoch the document order and the window order are shuffled from (seed, epoch). The stream is
[BOS] doc [BOS] doc ...; window w covers stream[w*T : w*T + T + 1] (inputs = [:-1], targets =
[1:]), so consecutive windows overlap by one token and every stream token after the first is a
target exactly once per epoch. Targets that are BOS or padding are -100.

Byte tokenizer: T = data.seq_len. BPE/GPT-2: T is chosen from the measured bytes per stream
position on the training split so that a batch covers the same number of bytes as a byte model's.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator

import numpy as np
import torch
from hnetbench.config import DataConfig
from hnetbench.data.corpus import DataError, atomic_write_bytes, cache_dir, corpus_documents
from hnetbench.data.tokenizers import Tokenizer, get_tokenizer

IGNORE = -100
TOKENS_VERSION = 1  # bump when encoding changes, to invalidate cached token streams
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}


def tokenizer_fingerprint(tok: Tokenizer) -> str:
    """Stable id of a tokenizer's vocabulary (cache key for token streams)."""
    h = hashlib.sha256(f"{tok.name}|{tok.vocab_size}|{tok.bos_id}".encode())
    for i in range(tok.vocab_size):
        h.update(len(tok.token_bytes(i)).to_bytes(4, "little") + tok.token_bytes(i))
    return h.hexdigest()[:16]


def tokenize_documents(tok: Tokenizer, docs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(flat token ids without BOS, per-document lengths); non-byte results cached on disk."""
    if tok.name == "bytes":
        flat = np.frombuffer(b"".join(docs), dtype=np.uint8).astype(np.int32)
        return flat, np.array([len(d) for d in docs], dtype=np.int64)
    h = hashlib.sha256(f"{tokenizer_fingerprint(tok)}|{TOKENS_VERSION}".encode())
    for d in docs:
        h.update(hashlib.sha256(d).digest())
    path = cache_dir() / "tokens" / f"{h.hexdigest()[:20]}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return z["flat"], z["lengths"]
        except (OSError, ValueError, KeyError):
            pass  # corrupt cache entry: re-tokenize and overwrite
    ids = tok.encode_batch(docs)
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    flat = np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(lengths.sum()))
    buf = io.BytesIO()
    np.savez(buf, flat=flat, lengths=lengths)
    atomic_write_bytes(path, buf.getvalue())
    return flat, lengths


class PackedLoader:
    """Iterating yields dicts: input_ids, targets, doc_start (B, T) tensors and n_bytes (int).

    Iteration is stateful: it continues from `state_dict()`'s position. The train split loops
    over epochs forever; val/test stop after one epoch and rewind, so each `for` sees the same
    batches. `iter_epoch(e)` gives one epoch's batches without touching the position.
    """

    def __init__(
        self, data_cfg: DataConfig, split: str, seed: int = 0, tokenizer: Tokenizer | None = None
    ) -> None:
        if data_cfg.seq_len < 1 or data_cfg.batch_size < 1:
            raise DataError(
                "data.seq_len / data.batch_size: expected >= 1, got "
                f"{data_cfg.seq_len} / {data_cfg.batch_size}"
            )
        self.cfg, self.split, self.seed = data_cfg, split, seed
        self.tokenizer = tok = tokenizer or get_tokenizer(data_cfg)
        docs = corpus_documents(data_cfg, split)
        self.flat, self.lengths = tokenize_documents(tok, docs)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.n_docs = len(docs)
        self.n_bytes_total = sum(len(d) for d in docs)
        lens = np.array(tok.token_lengths(), dtype=np.int64)
        self._token_len = torch.from_numpy(np.append(lens, 0))  # index -1 (padding) -> 0 bytes

        # tokens per row: match the bytes a byte model sees per row (measured on train)
        if split == "train":
            train_flat_len, train_docs, train_bytes = (
                len(self.flat),
                self.n_docs,
                self.n_bytes_total,
            )
        else:
            tdocs = corpus_documents(data_cfg, "train")
            tflat, _ = tokenize_documents(tok, tdocs)
            train_flat_len, train_docs, train_bytes = len(tflat), len(tdocs), sum(map(len, tdocs))
        self.bytes_per_token = train_bytes / max(1, train_flat_len)
        if tok.name == "bytes":
            self.seq_len_tokens = data_cfg.seq_len
        else:
            bpp_bytes = train_bytes / (train_bytes + train_docs)  # bytes per stream position
            bpp_tok = train_bytes / (train_flat_len + train_docs)
            self.seq_len_tokens = max(1, round(data_cfg.seq_len * bpp_bytes / bpp_tok))
        self.batch_size = data_cfg.batch_size
        stream_len = len(self.flat) + self.n_docs
        self.n_windows = max(1, -(-(stream_len - 1) // self.seq_len_tokens))
        self.batches_per_epoch = -(-self.n_windows // self.batch_size)
        self.fingerprint = hashlib.sha256(
            f"{tokenizer_fingerprint(tok)}|{split}|{seed}|{self.seq_len_tokens}|{self.batch_size}|"
            f"{stream_len}|{self.n_bytes_total}".encode()
        ).hexdigest()[:16]
        self.epoch, self.batch = 0, 0
        self._cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.batches_per_epoch

    # ------------------------------------------------------------------ epoch layout

    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, _SPLIT_CODE.get(self.split, 3)])

    def epoch_layout(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(token stream of the epoch, window order) — both fixed by (seed, epoch)."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1], self._cache[2]
        rng = self._rng(epoch)
        doc_order = rng.permutation(self.n_docs)
        bos = np.array([self.tokenizer.bos_id], dtype=np.int32)
        parts = []
        for i in doc_order:
            parts += [bos, self.flat[self.offsets[i] : self.offsets[i + 1]]]
        stream = np.concatenate(parts).astype(np.int64)
        windows = rng.permutation(self.n_windows)
        self._cache = (epoch, stream, windows)
        return stream, windows

    def make_batch(self, epoch: int, index: int) -> dict:
        stream, windows = self.epoch_layout(epoch)
        T, B, bos = self.seq_len_tokens, self.batch_size, self.tokenizer.bos_id
        rows = np.full((B, T + 1), -1, dtype=np.int64)  # -1 = padding
        for r, w in enumerate(windows[index * B : (index + 1) * B]):
            chunk = stream[w * T : w * T + T + 1]
            rows[r, : len(chunk)] = chunk
        rows = torch.from_numpy(rows)
        inputs, targets = rows[:, :-1].clone(), rows[:, 1:].clone()
        pad_in = inputs < 0
        inputs[pad_in] = bos  # padding reads as a fresh document start; never scored
        scored = (targets >= 0) & (targets != bos)
        n_bytes = int(self._token_len[targets.masked_fill(~scored, -1)].sum())
        targets[~scored] = IGNORE
        return {
            "input_ids": inputs,
            "targets": targets,
            "doc_start": inputs == bos,
            "n_bytes": n_bytes,
        }

    def iter_epoch(self, epoch: int = 0) -> Iterator[dict]:
        for i in range(self.batches_per_epoch):
            yield self.make_batch(epoch, i)

    # ------------------------------------------------------------------ stateful iteration

    def __iter__(self) -> Iterator[dict]:
        while True:
            if self.batch >= self.batches_per_epoch:
                self.epoch, self.batch = self.epoch + 1, 0
                if self.split != "train":
                    self.epoch = 0
                    return
            batch = self.make_batch(self.epoch, self.batch)
            self.batch += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "fingerprint": self.fingerprint}

    def load_state_dict(self, state: dict) -> None:
        try:
            epoch, batch, fp = int(state["epoch"]), int(state["batch"]), state["fingerprint"]
        except (KeyError, TypeError, ValueError):
            raise DataError("loader state: expected keys epoch, batch, fingerprint") from None
        if fp != self.fingerprint:
            raise DataError(
                "loader state: made for a different corpus/tokenizer/seq_len/batch_size/seed "
                f"({fp} != {self.fingerprint})"
            )
        if not (epoch >= 0 and 0 <= batch <= self.batches_per_epoch):
            raise DataError(f"loader state: position epoch={epoch} batch={batch} out of range")
        self.epoch, self.batch = epoch, batch

    def describe(self) -> dict:
        return {
            "split": self.split,
            "tokenizer": self.tokenizer.name,
            "documents": self.n_docs,
            "bytes": self.n_bytes_total,
            "seq_len_tokens": self.seq_len_tokens,
            "batch_size": self.batch_size,
            "bytes_per_token": self.bytes_per_token,
            "batches_per_epoch": self.batches_per_epoch,
        }


def build_loader(
    data_cfg: DataConfig, split: str, seed: int = 0, tokenizer: Tokenizer | None = None
) -> PackedLoader:
    return PackedLoader(data_cfg, split, seed, tokenizer)
