"""`hnetbench flops PRESET_OR_CONFIG_YAML`: parameters and analytic FLOPs per byte per stage."""

from __future__ import annotations

import argparse
import json
from functools import lru_cache
from pathlib import Path

from hnetbench.config import ConfigError, DataConfig, RunConfig, resolve
from hnetbench.flops import FlopsReport, flops_per_byte

GPT2_BYTES_PER_TOKEN = 4.6  # paper: GPT-2 tokens on FineWeb-Edu (Table 1 BPIC)


def load_run_config(target: str, overrides: list[str] | None = None) -> RunConfig:
    """A preset name (`family@scale`) or a YAML config path -> resolved RunConfig."""
    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        return resolve(target, overrides)
    return resolve(None, overrides, base={"preset": target})


@lru_cache(maxsize=8)
def _measured_bpt(domain: str, source: str, path: str | None, bpe_vocab_size: int) -> float:
    from hnetbench.data import get_tokenizer, load_documents
    from hnetbench.data.tokenizers import bytes_per_token

    cfg = DataConfig(domain=domain, source=source, path=path, tokenizer="bpe",
                     bpe_vocab_size=bpe_vocab_size)
    return bytes_per_token(get_tokenizer(cfg), load_documents(domain, "val"))


def default_bytes_per_token(data: DataConfig) -> float:
    """Bytes per model token: 1 for bytes, the paper's 4.6 for GPT-2, measured on the domain's
    validation split for a trained BPE."""
    if data.tokenizer == "bytes":
        return 1.0
    if data.tokenizer == "gpt2":
        return GPT2_BYTES_PER_TOKEN
    if data.tokenizer != "bpe":  # sentencepiece, llama3, hf: measured (or the paper's) per kind
        from hnetbench.sweeps.spec import bytes_per_token

        return bytes_per_token(RunConfig(data=data))
    return _measured_bpt(data.domain, data.source, data.path, data.bpe_vocab_size)


def parse_compression(text: str | None) -> float | list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"--compression: expected numbers like '4.8' or '2.65,2.65', got {text!r}"
        ) from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"--compression: expected positive numbers, got {text!r}")
    return values[0] if len(values) == 1 else values


def _g(x: float) -> str:
    return f"{x / 1e9:.4f}"


def format_table(name: str, rep: FlopsReport) -> str:
    comp = ", ".join(f"{c:.2f}" for c in rep.compression) or "-"
    params = f"{rep.params / 1e6:.2f}M" if rep.params is not None else "?"
    lines = [
        f"{name}: params {params}, seq_len {rep.seq_len} bytes, "
        f"bytes/token {rep.bytes_per_token:.2f}, "
        f"compression per stage {comp}",
        "GFLOPs per byte (forward)",
        f"{'stage':>5} {'d_model':>7} {'pos/byte':>8} {'matmul':>8} {'(attn)':>8} {'ssd':>8} "
        f"{'embed':>8} {'other':>8} {'forward':>8}",
    ]
    for st in rep.stages:
        lines.append(
            f"{st['stage']:>5} {st['d_model']:>7} {st['positions_per_byte']:>8.4f} "
            f"{_g(st['matmul']):>8} "
            f"{_g(st['attention']):>8} {_g(st['ssd']):>8} {_g(st['embedding']):>8} "
            f"{_g(st['other']):>8} {_g(st['forward']):>8}"
        )
    lines.append(
        f"{'total':>5} {'':>7} {'':>8} {_g(rep.matmul_per_byte):>8} "
        f"{_g(rep.attention_per_byte):>8} "
        f"{_g(rep.ssd_per_byte):>8} {_g(rep.embedding_per_byte):>8} {_g(rep.other_per_byte):>8} "
        f"{_g(rep.forward_per_byte):>8}"
    )
    lines.append(f"training (3 x forward): {_g(rep.train_per_byte)} GFLOPs per byte")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="PRESET_OR_CONFIG_YAML",
                   help="a preset (see `hnetbench models list`) or a run config YAML")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--bytes-per-token", type=float, default=None,
                   help="bytes per model token (default: 1 for bytes, 4.6 for GPT-2, "
                   "measured for BPE)")
    p.add_argument("--compression", default=None,
                   help="N_s per stage ('2.65,2.65') or one number = innermost bytes per chunk "
                        "(default: the ratio targets / pool size)")
    p.add_argument("--seq-len", type=int, default=None,
                   help="bytes per sequence (default: data.seq_len)")
    p.add_argument("--format", choices=("table", "json"), default="table")


def main(args: argparse.Namespace) -> int:
    cfg = load_run_config(args.target, args.overrides)
    from hnetbench.baselines import validate_model_config

    validate_model_config(cfg.model)
    bpt = args.bytes_per_token
    if bpt is None:
        bpt = default_bytes_per_token(cfg.data)
    seq_len = args.seq_len if args.seq_len is not None else cfg.data.seq_len
    rep = flops_per_byte(cfg.model, bpt, parse_compression(args.compression), seq_len)
    if args.format == "json":
        print(json.dumps({"name": args.target, **rep.to_dict()}, indent=2))
    else:
        print(format_table(args.target, rep))
    return 0
