"""Where every position sits: which document, and its position inside that document.

Layers never see `doc_start` directly; they get a `Seq` (full sequences) or a `Step` (one new
position for a subset of rows during cached generation). Document ids let attention mask across
documents and let Mamba-2 reset its conv window and SSM state, so packed rows stay isolated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Seq:
    doc: torch.Tensor  # (B, L) long, nondecreasing along L
    pos: torch.Tensor  # (B, L) long, position inside its document (RoPE)
    lengths: torch.Tensor | None = None  # (B,) valid prefix per row; None = all L valid
    capacity: int = 0  # > 0 while prefilling caches: slots to reserve for later steps
    # (L,) long, set when the batch's rows are packed into one row (B = 1, no padding): the
    # batch row each position came from. Every row starts a document, so rows stay apart.
    rows: torch.Tensor | None = None

    @staticmethod
    def from_doc_start(
        doc_start: torch.Tensor, lengths: torch.Tensor | None = None, capacity: int = 0,
        rows: torch.Tensor | None = None,
    ) -> Seq:
        doc_start = doc_start.clone()
        doc_start[:, 0] = True  # every row starts a document
        doc = doc_start.long().cumsum(1)
        idx = torch.arange(doc.shape[1], device=doc.device).expand_as(doc)
        start = torch.where(doc_start, idx, torch.zeros_like(idx)).cummax(1).values
        return Seq(doc, idx - start, lengths, capacity, rows)

    def valid(self) -> torch.Tensor | None:
        if self.lengths is None:
            return None
        idx = torch.arange(self.doc.shape[1], device=self.doc.device)
        return idx[None, :] < self.lengths[:, None]


@dataclass
class Step:
    """One new position for rows `rows` of the batch (cache tensors keep the full batch)."""

    rows: torch.Tensor  # (n,) long indices into the batch
    idx: torch.Tensor  # (n,) slot of the new position in its row's sequence at this level
    pos: torch.Tensor  # (n,) position inside the document
    doc: torch.Tensor  # (n,) document id


@dataclass
class Extension:
    """L new positions appended, read-only, to cached rows: extension row i continues cache row
    rows[i] (several extension rows may share one), all within that row's current document.
    Used to score continuations of one context without running the context again."""

    rows: torch.Tensor  # (n,) long indices into the cache's batch
    slot: torch.Tensor  # (n, L) slots of the new positions in their rows at this level
    pos: torch.Tensor  # (n, L) positions inside the document
    doc: torch.Tensor  # (n, L) document ids (each row's current one)
    lengths: torch.Tensor  # (n,) valid prefix of each row (the rest is padding)
    # > 0 when rows = [0] * repeat + [1] * repeat + ...: every cached row continued `repeat`
    # times in order, so attention can share each cached row's keys instead of copying them
    repeat: int = 0

    @staticmethod
    def after(cache: dict, rows: torch.Tensor, lengths: torch.Tensor, L: int,
              repeat: int | None = None) -> Extension:
        """The extension of `rows` by L positions at the level whose counters `cache` holds
        (`repeat`: as the field; None = find out from rows)."""
        if repeat is None:
            n = rows.numel()
            c = n // max(1, int(rows.max()) + 1) if n else 0
            grouped = c > 0 and torch.equal(
                rows, torch.arange(n // c, device=rows.device).repeat_interleave(c))
            repeat = c if grouped else 0
        ar = torch.arange(L, device=rows.device)
        return Extension(rows, cache["n"][rows, None] + ar, cache["pos"][rows, None] + ar,
                         cache["doc"][rows, None].expand(-1, L), lengths, repeat)
