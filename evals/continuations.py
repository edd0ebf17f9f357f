"""Score continuations that share a context: the context once, its continuations from the cache.

A multiple-choice item asks for log p(choice | context) for each of its k choices. Scoring each
(context + choice) sequence from scratch runs the context k times; with byte-level models the
context is most of the bytes (hnb_cont: ~196 context bytes, ~32 per choice). Here each distinct
context is prefilled once (`model.prefill`, contexts left-padded as in generation: the padding
is its own document) and every continuation runs from that cache (`model.extend`, which reads
the cache and leaves it as it was). The scores equal `score_tails` on the joined sequences up to
float rounding (tests hold them together for every model family).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from hnetbench.evals.bpb import model_device


def can_extend(model: torch.nn.Module) -> bool:
    """Whether `model` can score continuations from a cache (H-Nets with pooled downsampling,
    and foreign models without `extend`, cannot)."""
    return callable(getattr(model, "extend", None)) and model.can_extend()


@torch.no_grad()
def score_continuations(
    model: torch.nn.Module,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    bos_id: int | None,
    batch_size: int = 8,
    pad_id: int = 0,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """For each (context, continuation), (nats, greedy) of the continuation's tokens, each given
    the context and the continuation tokens before it: float64 (n,) of -log p and bool (n,)
    whether each was the argmax. Contexts must be non-empty (they start with BOS), continuations
    too. `batch_size` distinct contexts are prefilled together."""
    device = model_device(model)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (ctx, cont) in enumerate(pairs):
        if not ctx or not cont:
            raise ValueError(f"score_continuations: pair {i} has an empty context or continuation")
        groups.setdefault(tuple(ctx), []).append(i)
    contexts = sorted(groups, key=len, reverse=True)  # similar lengths share a batch
    out: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(pairs)
    for b in range(0, len(contexts), batch_size):
        part = contexts[b : b + batch_size]
        T = len(part[0])
        ids = torch.full((len(part), T), pad_id, dtype=torch.long)
        doc_start = torch.zeros((len(part), T), dtype=torch.bool)
        for r, ctx in enumerate(part):
            ids[r, T - len(ctx):] = torch.tensor(ctx, dtype=torch.long)
            doc_start[r, T - len(ctx)] = True
            if bos_id is not None:  # as score_tails: every BOS starts a document
                doc_start[r, T - len(ctx):] |= ids[r, T - len(ctx):] == bos_id
        last, cache = model.prefill(ids.to(device), doc_start.to(device), capacity=T)
        todo = [(r, i) for r, ctx in enumerate(part) for i in groups[ctx]]
        width = max(len(pairs[i][1]) for _, i in todo) - 1
        logits = None
        if width > 0:  # the continuations' own tokens as inputs, right-padded
            ext = torch.full((len(todo), width), pad_id, dtype=torch.long)
            for j, (_, i) in enumerate(todo):
                cont = pairs[i][1]
                ext[j, : len(cont) - 1] = torch.tensor(cont[:-1], dtype=torch.long)
            rows = torch.tensor([r for r, _ in todo], device=device)
            lengths = torch.tensor([len(pairs[i][1]) - 1 for _, i in todo], device=device)
            logits = model.extend(ext.to(device), rows, lengths, cache)
        for j, (r, i) in enumerate(todo):
            n = len(pairs[i][1])
            lg = last[r][None] if logits is None else torch.cat([last[r][None], logits[j, : n - 1]])
            lg = lg.float()
            tgt = torch.tensor(pairs[i][1], dtype=torch.long, device=device)
            nats = F.cross_entropy(lg, tgt, reduction="none")
            out[i] = (nats.double().cpu(), (lg.argmax(-1) == tgt).cpu())
    return out  # type: ignore[return-value]
