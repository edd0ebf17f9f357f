"""lm-evaluation-harness model `hnetbench`: any hnetbench checkpoint (byte or BPE) as an lm-eval LM.

    lm_eval --model hnetbench --model_args checkpoint=results/x/ckpt --tasks ...
    HNetBenchLM(model=model, tokenizer=tok)          # from Python, in memory

Continuation boundaries: the context and the continuation are encoded separately and the
continuation's log-probability is the sum over exactly its own tokens. For byte models this is
exact by construction. For BPE models trailing whitespace of the context moves to the front of
the continuation first (as lm-eval's HF model does: BPE vocabularies carry the space on the
following word). Every sequence starts with BOS; too-long inputs are truncated from the left to
`max_length` model tokens (byte models default to 4x a token model's length, as in the paper).
"""

from __future__ import annotations

from typing import Any

import torch
from hnetbench.evals.bpb import check_vocab, model_device, score_tails, windows
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

DEFAULT_MAX_LENGTH = {"bytes": 8192, "bpe": 2048}


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
        **_ignored: Any,
    ) -> None:
        super().__init__()
        if checkpoint is not None:
            from hnetbench.train import load_checkpoint

            model, _, tokenizer = load_checkpoint(checkpoint)
        if model is None or tokenizer is None:
            raise ValueError("hnetbench LM: give checkpoint=PATH or both model and tokenizer")
        check_vocab(model, tokenizer)
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
        self._device = model_device(model)

    # ------------------------------------------------------------------ encoding
    def _encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text.encode("utf-8"))) if text else []

    def _pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if not self.byte_level:
            n = len(context) - len(context.rstrip())
            if n:
                context, continuation = context[:-n], context[-n:] + continuation
        return [self.tok.bos_id] + self._encode(context), self._encode(continuation)

    # ------------------------------------------------------------------ lm-eval API
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        seqs, tails = [], []
        for req in requests:
            context, continuation = req.args[0], req.args[1]
            ctx, cont = self._pair(context, continuation)
            if not cont:
                raise ValueError(f"hnetbench LM: empty continuation for context {context[-40:]!r}")
            cont = cont[-self.max_length :]
            seqs.append((ctx + cont)[-(self.max_length + 1) :])
            tails.append(len(cont))
        scored = score_tails(self.model, seqs, tails, 0, self.tok.bos_id,
                             self.batch_size)
        out = []
        for req, (nats, hit) in zip(requests, scored):
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
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kw.get("max_gen_toks", 256))
            sample = bool(kw.get("do_sample", False)) and float(kw.get("temperature", 1.0)) > 0
            keep = max(1, self.max_length - max_new)
            for b in range(0, len(idx), self.batch_size):
                part = idx[b : b + self.batch_size]
                prompts = [([self.tok.bos_id] + self._encode(requests[i].args[0]))[-keep:]
                           for i in part]
                gen = self.model.generate(
                    prompts, max_new_tokens=max_new, greedy=not sample,
                    temperature=float(kw.get("temperature", 1.0)) if sample else 1.0,
                    top_p=float(kw.get("top_p", 1.0)),
                )
                for i, ids in zip(part, gen):
                    ids = list(ids)
                    special = [j for j, t in enumerate(ids) if self.tok.token_bytes(int(t)) == b""]
                    ids = ids[: special[0]] if special else ids  # BOS/EOS ends the document
                    text = self.tok.decode(ids).decode("utf-8", errors="replace")
                    for stop in until:
                        if stop and stop in text:
                            text = text[: text.index(stop)]
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                    out[i] = text
        return out  # type: ignore[return-value]

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tok, "name", "hnetbench"))
