"""The one loader: prepared shards (np.memmap) -> fixed windows -> (B, T) batches.

Every source goes through prepared shards (data/prepare.py): `data.source=prepared` names a
prepared folder; embedded corpora, local files and small Hugging Face samples are prepared into
the cache on first use. RAM does not grow with the corpus: only the windows of a batch are read.

A split's stream is [BOS] doc [BOS] doc ... in prepared order; window w covers
stream[w*T : w*T + T + 1] (inputs = [:-1], targets = [1:]). Targets that are BOS or padding are
-100. Window order is a permutation fixed by (seed, epoch, split).

Train: the windows are the full ones ((stream - 1) // T of them); batch i takes positions
[i*B, (i+1)*B) of the endless sequence perm(epoch 0) + perm(epoch 1) + ..., so training never
sees padding; a train split with fewer windows than one batch is refused. Val/test: one epoch
of ceil((stream - 1) / T) windows in batches of B (the last one padded; padding is never scored
and n_bytes counts only real bytes).

Data parallelism: with world_size W, rank r materialises only rows [r*B/W, (r+1)*B/W) of each
global batch, so ranks read disjoint windows and the trajectory does not depend on W; such
batches carry `sharded: True` and their n_bytes counts this rank's rows.

Byte tokenizer: T = data.seq_len. BPE/GPT-2: T is chosen from the training split's bytes per
stream position (from the manifest) so that a batch covers the same bytes as a byte model's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import torch
from hnetbench.config import DataConfig
from hnetbench.data.corpus import DataError, check_split
from hnetbench.data.shards import PreparedSplit, matched_seq_len, tokenizer_fingerprint
from hnetbench.data.tokenizers import Tokenizer

IGNORE = -100
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}

__all__ = ["IGNORE", "PackedLoader", "build_loader", "tokenizer_fingerprint"]


class PackedLoader:
    """Iterating yields dicts: input_ids, targets, doc_start (B, T) tensors and n_bytes (int).

    Iteration is stateful: it continues from `state_dict()`'s position. The train split runs
    forever; val/test stop after one epoch and rewind, so each `for` sees the same batches.
    `iter_epoch(e)` gives epoch e's windows in batches (last one padded) without moving.
    """

    def __init__(
        self,
        data_cfg: DataConfig,
        split: str,
        seed: int = 0,
        tokenizer: Tokenizer | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        from hnetbench.data.prepare import ensure_prepared, prepare_tokenizer

        if data_cfg.seq_len < 1 or data_cfg.batch_size < 1:
            raise DataError(
                "data.seq_len / data.batch_size: expected >= 1, got "
                f"{data_cfg.seq_len} / {data_cfg.batch_size}"
            )
        check_split(split)
        if world_size < 1 or not 0 <= rank < world_size or data_cfg.batch_size % world_size:
            raise DataError(
                f"data.batch_size {data_cfg.batch_size}: expected a multiple of the world size "
                f"{world_size} (rank {rank})"
            )
        self.cfg, self.split, self.seed = data_cfg, split, seed
        self.tokenizer = tok = tokenizer or prepare_tokenizer(data_cfg)
        self.root, man = ensure_prepared(data_cfg, tok)
        self.data = PreparedSplit(self.root, split, man)
        self.n_docs, self.n_bytes_total = self.data.n_docs, self.data.n_bytes
        lens = np.array(tok.token_lengths(), dtype=np.int64)
        self._token_len = np.append(lens, 0)  # index -1 (padding) -> 0 bytes

        tr = man["splits"]["train"]  # tokens per row: match a byte model's bytes per row
        self.bytes_per_token = tr["bytes"] / max(1, tr["tokens"])
        self.seq_len_tokens = matched_seq_len(data_cfg.seq_len, tok.name, tr)
        T, B = self.seq_len_tokens, data_cfg.batch_size
        self.batch_size, self.rank, self.world_size = B, rank, world_size
        stream_len = self.data.stream_len
        if split == "train":
            self.n_windows = (stream_len - 1) // T
            if self.n_windows < B:
                raise DataError(
                    f"{self.root}: the train split ({self.n_bytes_total} bytes, {self.n_docs} "
                    f"documents) holds {self.n_windows} windows of {T} tokens, fewer than one "
                    f"batch of {B} (a batch would repeat or pad); lower data.batch_size or "
                    "data.seq_len, or use more data"
                )
        else:
            self.n_windows = max(1, -(-(stream_len - 1) // T))
        self.batches_per_epoch = -(-self.n_windows // B)
        self.fingerprint = hashlib.sha256(
            f"{tokenizer_fingerprint(tok)}|{split}|{seed}|{T}|{B}|{stream_len}|"
            f"{self.n_bytes_total}".encode()
        ).hexdigest()[:16]
        self.position = 0  # batches consumed (train: of the endless sequence; else: of epoch 0)
        self._perms: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.batches_per_epoch

    # ------------------------------------------------------------------ windows

    def permutation(self, epoch: int) -> np.ndarray:
        """Window order of one epoch, fixed by (seed, epoch, split); two epochs kept."""
        if epoch not in self._perms:
            rng = np.random.default_rng([self.seed, epoch, _SPLIT_CODE[self.split]])
            perm = rng.permutation(self.n_windows)
            if self.n_windows < 2**31:
                perm = perm.astype(np.int32)
            self._perms = {e: p for e, p in self._perms.items() if e == epoch - 1}
            self._perms[epoch] = perm
        return self._perms[epoch]

    def train_windows(self, batch: int) -> np.ndarray:
        """Windows of train batch `batch`: positions [batch*B, (batch+1)*B) of the sequence."""
        pos = np.arange(batch * self.batch_size, (batch + 1) * self.batch_size, dtype=np.int64)
        out = np.empty(len(pos), dtype=np.int64)
        epochs = pos // self.n_windows
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self.permutation(int(e))[pos[sel] % self.n_windows]
        return out

    def epoch_windows(self, epoch: int, index: int) -> np.ndarray:
        B = self.batch_size
        return np.asarray(self.permutation(epoch)[index * B : (index + 1) * B], dtype=np.int64)

    def make_batch(self, windows: np.ndarray) -> dict:
        """The batch of these (global) windows; under data parallelism, this rank's rows."""
        T, B, bos = self.seq_len_tokens, self.batch_size, self.tokenizer.bos_id
        per = B // self.world_size
        lo = self.rank * per
        mine = windows[lo : lo + per]
        # one int64 buffer filled straight from the shards: inputs/targets are views of it
        rows = np.empty((per, T + 1), dtype=np.int64)
        short = len(mine) < per  # the last batch of an epoch: rows without a window are padding
        rows[len(mine):] = -1
        for r, w in enumerate(mine):
            n = len(self.data.read(int(w) * T, int(w) * T + T + 1, out=rows[r]))
            if n < T + 1:  # the stream's end (val/test): padding reads as a fresh document
                rows[r, n:] = -1
                short = True
        inputs, targets = rows[:, :-1], rows[:, 1:]
        scored = targets != bos
        if short:
            scored &= targets >= 0
        if self.tokenizer.name == "bytes":  # one byte per scored target
            n_bytes = int(np.count_nonzero(scored))
        else:
            n_bytes = int(self._token_len[np.where(scored, targets, -1)].sum())
        doc_start = inputs == bos
        if short:
            pad = inputs < 0
            doc_start |= pad
            inp = torch.from_numpy(np.where(pad, bos, inputs))  # never scored
        else:
            inp = torch.from_numpy(np.ascontiguousarray(inputs))
        tgt = torch.from_numpy(np.where(scored, targets, IGNORE))
        batch = {
            "input_ids": inp,
            "targets": tgt,
            "doc_start": torch.from_numpy(doc_start),
            "n_bytes": n_bytes,
        }
        if self.world_size > 1:
            batch["sharded"] = True
        return batch

    def iter_epoch(self, epoch: int = 0) -> Iterator[dict]:
        for i in range(self.batches_per_epoch):
            yield self.make_batch(self.epoch_windows(epoch, i))

    # ------------------------------------------------------------------ stateful iteration

    def __iter__(self) -> Iterator[dict]:
        if self.split == "train":
            while True:
                batch = self.make_batch(self.train_windows(self.position))
                self.position += 1
                yield batch
        while self.position < self.batches_per_epoch:
            batch = self.make_batch(self.epoch_windows(0, self.position))
            self.position += 1
            yield batch
        self.position = 0

    @property
    def epoch(self) -> int:
        return self.position * self.batch_size // self.n_windows if self.split == "train" else 0

    def state_dict(self) -> dict:
        return {"batch": self.position, "epoch": self.epoch, "fingerprint": self.fingerprint}

    def load_state_dict(self, state: dict) -> None:
        try:
            batch, fp = int(state["batch"]), state["fingerprint"]
        except (KeyError, TypeError, ValueError):
            raise DataError("loader state: expected keys batch, fingerprint") from None
        if fp != self.fingerprint:
            raise DataError(
                "loader state: made for a different corpus/tokenizer/seq_len/batch_size/seed "
                f"({fp} != {self.fingerprint})"
            )
        limit = None if self.split == "train" else self.batches_per_epoch
        if batch < 0 or (limit is not None and batch > limit):
            raise DataError(f"loader state: position batch={batch} out of range")
        self.position = batch

    def describe(self) -> dict:
        return {
            "split": self.split,
            "tokenizer": self.tokenizer.name,
            "prepared": str(self.root),
            "documents": self.n_docs,
            "bytes": self.n_bytes_total,
            "seq_len_tokens": self.seq_len_tokens,
            "batch_size": self.batch_size,
            "bytes_per_token": self.bytes_per_token,
            "windows": self.n_windows,
            "batches_per_epoch": self.batches_per_epoch,
        }


def build_loader(
    data_cfg: DataConfig,
    split: str,
    seed: int = 0,
    tokenizer: Tokenizer | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> PackedLoader:
    return PackedLoader(data_cfg, split, seed, tokenizer, rank, world_size)


def prepared_documents(data_cfg: DataConfig, split: str,
                       tokenizer: Tokenizer | None = None) -> Iterator[bytes]:
    """The documents of a split, decoded from its prepared shards (lazily, for BPB eval)."""
    from hnetbench.data.prepare import ensure_prepared, prepare_tokenizer

    tok = tokenizer or prepare_tokenizer(data_cfg)
    root, man = ensure_prepared(data_cfg, tok)
    for ids in PreparedSplit(root, split, man).documents():
        yield bytes(np.asarray(ids, dtype=np.uint8)) if tok.name == "bytes" else tok.decode(ids)
