"""Bits per byte of held-out documents, for byte and BPE models alike.

BPB = (sum of nats over the scored tokens) / ln 2 / (UTF-8 bytes of the scored text). Every
document starts with BOS, which is context only: it is never a target and contributes no bytes.
Special tokens (token_bytes == b"") inside a document are likewise excluded from the nats. A BPE
model's token losses are summed and divided by the bytes of the document text itself (never of
decoded tokens), so byte and BPE models are measured over exactly the same bytes.

Long documents are scored with a sliding window: windows of at most `seq_len` model tokens,
advancing `stride` targets at a time; every target is scored exactly once, with the whole window
before it as context (>= seq_len - stride tokens except near the start of the document).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from hnetbench.evals.intervals import RATIO_METHOD, ratio_interval


def model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def check_vocab(model: torch.nn.Module, tokenizer) -> None:
    """A one-line error instead of an IndexError deep inside the embedding."""
    v = getattr(getattr(model, "cfg", None), "vocab_size", None)
    if v is not None and v < tokenizer.vocab_size:
        raise ValueError(f"model.vocab_size {v} is smaller than the {tokenizer.name} tokenizer's "
                         f"{tokenizer.vocab_size} ids (BOS = {tokenizer.bos_id})")


@torch.no_grad()
def score_tails(
    model: torch.nn.Module,
    seqs: Sequence[Sequence[int]],
    n_tail: Sequence[int],
    pad_id: int,
    bos_id: int | None = None,
    batch_size: int = 8,
    chunk_counts: dict[str, int] | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """For each sequence, (nats, greedy) of its last n_tail tokens, each given all tokens before.

    nats: float64 (n_tail,) of -log p(token); greedy: bool (n_tail,) whether it was the argmax.
    Sequences are batched by length (right padding; the models are causal, so padding after a
    sequence cannot change its scores). If `chunk_counts` is given, it accumulates "positions"
    (real input positions) and "stage{s}" (chunks each stage kept among them).
    """
    device = model_device(model)
    out: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        width = len(seqs[idx[0]]) - 1
        inp = torch.full((len(idx), width), pad_id, dtype=torch.long)
        tgt = torch.full((len(idx), width), -100, dtype=torch.long)
        doc_start = torch.zeros((len(idx), width), dtype=torch.bool)
        for r, i in enumerate(idx):
            s = torch.as_tensor(list(seqs[i]), dtype=torch.long)
            n = len(s) - 1
            if not 0 < n_tail[i] <= n:
                raise ValueError(f"score_tails: n_tail {n_tail[i]} for a sequence of {n + 1}")
            inp[r, :n] = s[:-1]
            tgt[r, n - n_tail[i] : n] = s[n - n_tail[i] + 1 :]
            if bos_id is not None:
                doc_start[r, :n] = s[:-1] == bos_id
        inp, tgt = inp.to(device), tgt.to(device)
        res = model(inp, doc_start=doc_start.to(device))
        logits = res.logits.float()
        if chunk_counts is not None:
            _count_chunks(res, [len(seqs[i]) - 1 for i in idx], chunk_counts)
        nats = F.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=-100, reduction="none")
        hit = logits.argmax(-1) == tgt
        for r, i in enumerate(idx):
            n = len(seqs[i]) - 1
            sl = slice(n - n_tail[i], n)
            out[i] = (nats[r, sl].double().cpu(), hit[r, sl].cpu())
    return out  # type: ignore[return-value]


def _count_chunks(res, lengths: list[int], counts: dict[str, int]) -> None:
    """Chunks per stage over the real positions: stage s+1 sees stage s's first n_s chunks."""
    for r, n in enumerate(lengths):
        counts["positions"] = counts.get("positions", 0) + n
        for s, b in enumerate(getattr(res, "boundaries", None) or []):
            n = int(b[r, :n].sum())
            counts[f"stage{s}"] = counts.get(f"stage{s}", 0) + n


def windows(n_tokens: int, seq_len: int, stride: int | None = None) -> list[tuple[int, int, int]]:
    """Sliding windows over token ids[0:n_tokens] where ids[0] is context only (BOS).

    Returns (start, end, n_scored): model input ids[start:end-1] predicts ids[start+1:end], and
    the last n_scored of those targets are the new ones. Targets 1..n_tokens-1 are each scored
    exactly once.
    """
    stride = min(stride or seq_len, seq_len)
    if seq_len < 1 or stride < 1:
        raise ValueError(f"windows: seq_len {seq_len} and stride {stride} must be >= 1")
    out = []
    nxt = 1  # next target index to score
    while nxt < n_tokens:
        end = min(nxt + stride, n_tokens)
        start = max(0, end - 1 - seq_len)
        out.append((start, end, end - nxt))
        nxt = end
    return out


@torch.no_grad()
def evaluate_bpb(
    model: torch.nn.Module,
    tokenizer,
    documents: Sequence[bytes | str],
    seq_len: int,
    stride: int | None = None,
    batch_size: int = 8,
    max_bytes: int | None = None,
) -> dict:
    """Bits per byte of `documents` (see module doc). seq_len/stride are in model tokens.

    Returns dict(bpb, ci95, nats, bytes, tokens, ppl, bytes_per_chunk); ci95 = {"bpb": [lo, hi],
    "n": documents, "method"}: a 95% interval over the documents scored (None for one document;
    it says how much the number depends on which text was held out, not on the seed);
    ppl = exp(nats per byte),
    which for DNA is the perplexity per base pair of the paper's Table 5; bytes_per_chunk maps
    stage{s} -> model input positions per chunk kept by stage s (empty for isotropic models).
    """
    check_vocab(model, tokenizer)
    was_training = model.training
    model.eval()
    bos = tokenizer.bos_id
    special = {i for i in range(tokenizer.vocab_size) if tokenizer.token_bytes(i) == b""}
    total_nats, total_bytes, total_tokens = 0.0, 0, 0
    seqs, tails, masks, owner = [], [], [], []  # owner: the document of each window
    doc_bytes: list[int] = []
    budget = max_bytes
    for doc in documents:
        data = doc.encode("utf-8") if isinstance(doc, str) else bytes(doc)
        if budget is not None:
            if budget <= 0:
                break
            if len(data) > budget:  # cut on a character boundary
                cut = budget
                while cut > 0 and (data[cut] & 0xC0) == 0x80:
                    cut -= 1
                data = data[:cut]
            budget -= len(data)
        if not data:
            continue
        ids = [bos] + list(tokenizer.encode(data))
        total_bytes += len(data)
        doc_bytes.append(len(data))
        for start, end, n in windows(len(ids), seq_len, stride):
            seq = ids[start:end]
            seqs.append(seq)
            owner.append(len(doc_bytes) - 1)
            tails.append(n)
            masks.append(torch.tensor([t not in special for t in seq[-n:]]))
    counts: dict[str, int] = {}
    scored = score_tails(model, seqs, tails, 0, bos, batch_size, chunk_counts=counts)
    doc_nats = [0.0] * len(doc_bytes)
    for (nats, _), keep, d in zip(scored, masks, owner):
        v = float(nats[keep].sum())
        total_nats += v
        doc_nats[d] += v
        total_tokens += int(keep.sum())
    model.train(was_training)
    if total_bytes == 0:
        raise ValueError("evaluate_bpb: no bytes to score (empty documents)")
    ci = None
    if len(doc_bytes) >= 2:  # documents are the units: BPB = their bits / their bytes
        _, lo, hi = ratio_interval([v / math.log(2) for v in doc_nats], doc_bytes)
        ci = {"bpb": [lo, hi], "n": len(doc_bytes), "method": RATIO_METHOD}
    return {
        "bpb": total_nats / math.log(2) / total_bytes,
        "ci95": ci,
        "nats": total_nats,
        "bytes": total_bytes,
        "tokens": total_tokens,
        "ppl": math.exp(total_nats / total_bytes),
        "bytes_per_chunk": {k: counts["positions"] / v for k, v in counts.items()
                            if k != "positions" and v > 0},
    }
