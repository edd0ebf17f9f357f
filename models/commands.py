"""`hnetbench models list|show`: the model presets with parameters and FLOPs per byte."""

from __future__ import annotations

import argparse
import json

import yaml
from hnetbench.baselines import list_presets, list_scales, validate_model_config
from hnetbench.cli import CLIError
from hnetbench.config import ConfigError, to_dict
from hnetbench.flops import flops_per_byte
from hnetbench.flops_command import default_bytes_per_token, load_run_config


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="models_command", metavar="{list,show}")
    ls = sub.add_parser("list", help="every preset with parameters and FLOPs per byte")
    ls.add_argument("--scale", default=None, help="only presets of this scale (e.g. cpu-tiny)")
    ls.add_argument("--format", choices=("table", "json"), default="table")
    show = sub.add_parser("show", help="the resolved config of one preset")
    show.add_argument("preset")
    show.add_argument("--format", choices=("yaml", "json"), default="yaml")


def preset_rows(scale: str | None = None) -> list[dict]:
    """One row per preset: params and forward FLOPs per byte at the preset's own seq_len, its
    tokenizer's bytes per token and the default compression (ratio targets / pool size)."""
    if scale is not None and scale not in list_scales():
        raise ConfigError(f"--scale: unknown scale '{scale}' (valid: {', '.join(list_scales())})")
    rows = []
    for name in list_presets(scale):
        cfg = load_run_config(name)
        validate_model_config(cfg.model)
        bpt = default_bytes_per_token(cfg.data)
        rep = flops_per_byte(cfg.model, bpt, None, cfg.data.seq_len)
        family, sc = name.split("@", 1)
        rows.append(
            {
                "preset": name,
                "family": family,
                "scale": sc,
                "params": rep.params,
                "tokenizer": cfg.data.tokenizer,
                "bytes_per_token": round(bpt, 3),
                "compression": rep.compression,
                "seq_len": cfg.data.seq_len,
                "flops_per_byte": rep.forward_per_byte,
            }
        )
    return rows


def main(args: argparse.Namespace) -> int:
    cmd = getattr(args, "models_command", None)
    if cmd == "list":
        rows = preset_rows(args.scale)
        if args.format == "json":
            print(json.dumps(rows, indent=2))
            return 0
        print(
            f"{'preset':<34} {'params':>9} {'tokenizer':>9} {'bytes/tok':>9} {'N_s':>11} "
            f"{'seq_len':>7} {'MFLOPs/byte':>11}"
        )
        for r in rows:
            comp = ",".join(f"{c:g}" for c in r["compression"]) or "-"
            print(
                f"{r['preset']:<34} {r['params'] / 1e6:>8.2f}M {r['tokenizer']:>9} "
                f"{r['bytes_per_token']:>9.2f} {comp:>11} {r['seq_len']:>7} "
                f"{r['flops_per_byte'] / 1e6:>11.2f}"
            )
        return 0
    if cmd == "show":
        cfg = load_run_config(args.preset)
        validate_model_config(cfg.model)
        d = {
            "preset": args.preset,
            "model": to_dict(cfg.model),
            "data": to_dict(cfg.data),
            "train": to_dict(cfg.train),
        }
        print(
            json.dumps(d, indent=2) if args.format == "json" else yaml.safe_dump(d, sort_keys=False)
        )
        return 0
    raise CLIError("expected a subcommand: list or show")
