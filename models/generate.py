"""Sampling with caches (temperature, top-p, greedy), batch size > 1.

Prompts of different lengths are left-padded, and the padding is its own document: the real
prompt starts a new document, so attention masks it out, Mamba-2 resets its conv window and state,
and the router forces a boundary there. By the model's document isolation this is exact, not an
approximation. In an H-Net the inner network steps only for the rows whose router fired.
"""

from __future__ import annotations

import torch


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_p: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits (B, V) -> token ids (B,)."""
    if greedy or temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:  # keep the smallest set of top tokens whose mass reaches top_p
        sorted_p, order = probs.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p
        sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    prompts: list[list[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    pad_id: int = 0,
) -> tuple[list[list[int]], torch.Tensor]:
    """Returns (new tokens per prompt, logits (B, max_new_tokens, V) that produced them)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate: every prompt needs at least one token")
    if max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be >= 0, got {max_new_tokens}")
    device = next(model.parameters()).device
    B, T = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((B, T), pad_id, dtype=torch.long, device=device)
    doc_start = torch.zeros(B, T, dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        ids[i, T - len(p) :] = torch.tensor(p, dtype=torch.long, device=device)
        doc_start[i, T - len(p)] = True
    was_training = model.training
    model.eval()
    try:
        logits, cache = model.prefill(ids, doc_start, capacity=T + max_new_tokens)
        out, all_logits = [], []
        for i in range(max_new_tokens):
            all_logits.append(logits)
            nxt = sample_next(logits, temperature, top_p, greedy, generator)
            out.append(nxt)
            if i + 1 < max_new_tokens:
                logits = model.step(nxt, cache)
    finally:
        model.train(was_training)
    if not out:
        return [[] for _ in prompts], torch.empty(B, 0, 0)
    tokens = torch.stack(out, 1).tolist()
    return tokens, torch.stack(all_logits, 1)
