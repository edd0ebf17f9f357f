"""`hnetbench generate`: sample bytes (or tokens) from a checkpoint with cached generation."""

from __future__ import annotations

import argparse
import json
import sys

import torch


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="run dir, its ckpt/ dir or one checkpoint")
    p.add_argument("--prompt", action="append", required=True,
                   help="prompt text (repeat for a batch)")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--greedy", action="store_true", help="argmax instead of sampling")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--format", choices=("text", "json"), default="text")


def main(args: argparse.Namespace) -> int:
    from hnetbench.cli import CLIError
    from hnetbench.train import load_checkpoint

    if args.max_new_tokens < 0:
        raise CLIError(f"--max-new-tokens: expected >= 0, got {args.max_new_tokens}")
    if not 0 < args.top_p <= 1:
        raise CLIError(f"--top-p: expected a value in (0, 1], got {args.top_p}")
    model, _, tok = load_checkpoint(args.checkpoint, device=args.device)
    prompts = [[tok.bos_id] + tok.encode(text) for text in args.prompt]
    gen = torch.Generator(device=args.device).manual_seed(args.seed)
    outs = model.generate(prompts, args.max_new_tokens, temperature=args.temperature,
                          top_p=args.top_p, greedy=args.greedy, generator=gen)
    rows = []
    for text, ids in zip(args.prompt, outs):
        special = [j for j, t in enumerate(ids) if tok.token_bytes(int(t)) == b""]
        ids = ids[: special[0]] if special else ids  # a BOS ends the document
        completion = tok.decode(ids).decode("utf-8", errors="replace")
        rows.append({"prompt": text, "completion": completion})
    if args.format == "json":
        sys.stdout.write(json.dumps(rows, ensure_ascii=False) + "\n")
    else:
        for r in rows:
            sys.stdout.write(r["prompt"] + r["completion"] + "\n")
    return 0
