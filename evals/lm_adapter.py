"""lm-evaluation-harness model `hnetbench`: any hnetbench checkpoint (byte or BPE) as an lm-eval LM.

    lm_eval --model hnetbench --model_args checkpoint=results/x/ckpt --tasks ...
    HNetBenchLM(model=model, tokenizer=tok)          # from Python, in memory

Continuation boundaries (lm-eval's convention for tokenized models): context + continuation
are encoded together -- the segmentation the model saw in training -- and split at the
continuation's first byte: the continuation's tokens are the one holding that byte and all
after it (a BPE token that straddles the seam, e.g. " sat" after "The cat ", is scored as part
of the continuation). For byte models this is exactly the continuation's bytes. Every sequence
starts with BOS; too-long inputs are truncated from the left to `max_length` model tokens (byte
models default to 4x a token model's length, as in the paper).

Generation (`generate_until`) stops as soon as every sequence of the batch contains a stop
string (or emitted BOS/EOS), else after `max_gen_toks` model tokens. A task's own max_gen_toks
counts tokens of *this model's* tokenizer: 256 (lm-eval's default) is 256 bytes for a byte
model but ~1,000 bytes for a BPE model. When a task sets none, the default is
DEFAULT_MAX_GEN_TOKS per tokenizer (bytes 1024, BPE 256: about the same text); model_args
`max_gen_toks=N` overrides it.

model_args: checkpoint, batch_size, max_length, max_gen_toks, device (and lm-eval's own
max_batch_size); any other key is an error.
"""

from __future__ import annotations

from typing import Any

import torch
from hnetbench.evals.bpb import check_vocab, model_device, score_tails, windows
from hnetbench.evals.continuations import can_extend, score_continuations
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

DEFAULT_MAX_LENGTH = {"bytes": 8192, "bpe": 2048}
DEFAULT_MAX_GEN_TOKS = {"bytes": 1024, "bpe": 256}
MODEL_ARGS = ("checkpoint", "batch_size", "max_length", "max_gen_toks", "device",
              "max_batch_size")


def _is_bytes(tokenizer) -> bool:
    return getattr(tokenizer, "name", "") == "bytes" or tokenizer.vocab_size <= 257


@register_model("hnetbench")
class HNetBenchLM(LM):
    def __init__(
        self,
        checkpoint: str | None = None,
        model: torch.nn.Module | None = None,
        tokenizer: Any = None,
        batch_size: int | str = 8,
        max_length: int | str | None = None,
        device: str | None = None,
        max_gen_toks: int | str | None = None,
        max_batch_size: int | str | None = None,  # lm-eval passes it; batches are fixed here
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            raise ValueError(f"hnetbench LM: unknown model_args {', '.join(sorted(unknown))} "
                             f"(expected {', '.join(MODEL_ARGS)})")
        if checkpoint is not None:
            from hnetbench.train import load_checkpoint

            model, _, tokenizer = load_checkpoint(checkpoint)
        if model is None or tokenizer is None:
            raise ValueError("hnetbench LM: give checkpoint=PATH or both model and tokenizer")
        check_vocab(model, tokenizer)
        if device and device.startswith("cuda") and not torch.cuda.is_available():
            device = None  # lm-eval's CLI defaults to cuda; like its HF model, fall back to CPU
        if device and device != "auto":
            model = model.to(device)
        self.model = model.eval()
        self.tok = tokenizer
        self.byte_level = _is_bytes(tokenizer)
        bs = str(batch_size)
        self.batch_size = 8 if bs.startswith("auto") else int(bs)
        default = DEFAULT_MAX_LENGTH["bytes" if self.byte_level else "bpe"]
        limit = getattr(getattr(model, "cfg", None), "max_seq_len", None)
        self.max_length = int(max_length) if max_length else min(default, limit or default)
        kind = "bytes" if self.byte_level else "bpe"
        self.max_gen_toks = int(max_gen_toks) if max_gen_toks else DEFAULT_MAX_GEN_TOKS[kind]
        self._device = model_device(model)

    # ------------------------------------------------------------------ encoding
    def _encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text.encode("utf-8"))) if text else []

    def _pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """([BOS] + context tokens, continuation tokens) of the joint encoding, split at the
        token holding the continuation's first byte."""
        whole = self._encode(context + continuation)
        seam, pos, split = len(context.encode("utf-8")), 0, len(whole)
        for i, t in enumerate(whole):
            pos += len(self.tok.token_bytes(int(t)))
            if pos > seam:
                split = i
                break
        return [self.tok.bos_id] + whole[:split], whole[split:]

    # ------------------------------------------------------------------ lm-eval API
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """Requests that fit in max_length score each distinct context once and its
        continuations from the model's cache (evals/continuations.py) when the model can;
        the others score context + continuation as one sequence, left-truncated."""
        seqs, tails, todo, pairs, shared = [], [], [], [], []
        extend = can_extend(self.model)
        for i, req in enumerate(requests):
            context, continuation = req.args[0], req.args[1]
            if not continuation:  # the empty string: probability 1, nothing to score
                continue
            ctx, cont = self._pair(context, continuation)
            if extend and len(ctx) + len(cont) <= self.max_length + 1:
                pairs.append((ctx, cont))
                shared.append(i)
                continue
            cont = cont[-self.max_length :]
            seqs.append((ctx + cont)[-(self.max_length + 1) :])
            tails.append(len(cont))
            todo.append(i)
        scored = dict(zip(todo, score_tails(self.model, seqs, tails, 0, self.tok.bos_id,
                                            self.batch_size))) if seqs else {}
        if pairs:
            scored.update(zip(shared, score_continuations(self.model, pairs, self.tok.bos_id,
                                                          self.batch_size)))
        out = []
        for i, req in enumerate(requests):
            if i not in scored:
                res = (0.0, True)
                out.append(res)
                self.cache_hook.add_partial("loglikelihood", req.args, res)
                continue
            nats, hit = scored[i]
            res = (-float(nats.sum()), bool(hit.all()))
            self.cache_hook.add_partial("loglikelihood", req.args, res)
            out.append(res)
        return out

    def loglikelihood_rolling(self, requests: list[Instance]) -> list[float]:
        out = []
        for req in requests:
            ids = [self.tok.bos_id] + self._encode(req.args[0])
            if len(ids) == 1:
                out.append(0.0)
                continue
            spans = windows(len(ids), self.max_length)
            scored = score_tails(self.model, [ids[s:e] for s, e, _ in spans],
                                 [n for _, _, n in spans], 0, self.tok.bos_id,
                                 self.batch_size)
            ll = -sum(float(nats.sum()) for nats, _ in scored)
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, ll)
            out.append(ll)
        return out

    def generate_until(self, requests: list[Instance]) -> list[str]:
        out: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):  # batch requests that share generation settings
            groups.setdefault(repr(sorted(req.args[1].items())), []).append(i)
        for idx in groups.values():
            kw = dict(requests[idx[0]].args[1])
            until = kw.get("until") or []
            until = [u for u in ([until] if isinstance(until, str) else list(until)) if u]
            max_new = int(kw.get("max_gen_toks") or self.max_gen_toks)
            sample = bool(kw.get("do_sample", False)) and float(kw.get("temperature", 1.0)) > 0
            keep = max(1, self.max_length - max_new)
            for b in range(0, len(idx), self.batch_size):
                part = idx[b : b + self.batch_size]
                prompts = [([self.tok.bos_id] + self._encode(requests[i].args[0]))[-keep:]
                           for i in part]
                gen = self._generate(prompts, max_new, until, sample,
                                     float(kw.get("temperature", 1.0)) if sample else 1.0,
                                     float(kw.get("top_p", 1.0)))
                for i, ids in zip(part, gen):
                    text = self._text(ids)
                    for stop in until:
                        if stop in text:
                            text = text[: text.index(stop)]
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                    out[i] = text
        return out  # type: ignore[return-value]

    def _text(self, ids: list[int]) -> str:
        """Generated ids as text, cut at the first special token (BOS/EOS ends a document)."""
        special = [j for j, t in enumerate(ids) if self.tok.token_bytes(int(t)) == b""]
        ids = ids[: special[0]] if special else ids
        return self.tok.decode(ids).decode("utf-8", errors="replace")

    def _done(self, ids: list[int], until: list[str]) -> bool:
        if any(self.tok.token_bytes(int(t)) == b"" for t in ids):
            return True
        text = self._text(ids)
        return any(stop in text for stop in until)

    @torch.no_grad()
    def _generate(self, prompts: list[list[int]], max_new: int, until: list[str], sample: bool,
                  temperature: float, top_p: float) -> list[list[int]]:
        """Decode with the model's cache; stop once every row is done (stop string / special
        token) or after max_new tokens."""
        model = self.model
        if not hasattr(model, "prefill") or not hasattr(model, "step"):  # no cache: no early stop
            return [list(g) for g in model.generate(prompts, max_new_tokens=max_new,
                                                    greedy=not sample, temperature=temperature,
                                                    top_p=top_p)]
        from hnetbench.models.generate import sample_next

        B, T = len(prompts), max(len(p) for p in prompts)
        ids = torch.zeros(B, T, dtype=torch.long, device=self._device)
        doc_start = torch.zeros(B, T, dtype=torch.bool, device=self._device)
        for i, p in enumerate(prompts):  # left-padded, as models.generate does
            ids[i, T - len(p):] = torch.tensor(p, dtype=torch.long, device=self._device)
            doc_start[i, T - len(p)] = True
        out: list[list[int]] = [[] for _ in prompts]
        if max_new <= 0:
            return out
        logits, cache = model.prefill(ids, doc_start, capacity=T + max_new)
        for step in range(max_new):
            nxt = sample_next(logits, temperature, top_p, not sample, None)
            for i, t in enumerate(nxt.tolist()):
                out[i].append(int(t))
            if all(self._done(o, until) for o in out) or step + 1 == max_new:
                break
            logits = model.step(nxt, cache)
        return out

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tok, "name", "hnetbench"))
