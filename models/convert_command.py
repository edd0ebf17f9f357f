"""`hnetbench convert`: a goombalab/hnet checkpoint (config JSON + weights) -> an hnetbench run
directory that `eval`, `viz` and `generate` read (see models/convert.py for the mapping)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the reference's config JSON "
                   "(e.g. configs/hnet_2stage_L.json)")
    p.add_argument("--weights", required=True,
                   help="the reference's weights: .pt (weights_only=True) or .safetensors")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--ratio-targets", default=None,
                   help="comma-separated N_s per stage for further training (default: the "
                        "paper's, 6 for 1-stage, 3,3 for 2-stage)")
    p.add_argument("--seq-len", type=int, default=8192, help="data.seq_len of the run's config")
    p.add_argument("--force", action="store_true", help="overwrite an existing run directory")


def main(args: argparse.Namespace) -> int:
    from hnetbench.cli import CLIError
    from hnetbench.models.convert import convert

    targets = None
    if args.ratio_targets:
        try:
            targets = [float(x) for x in args.ratio_targets.split(",")]
        except ValueError:
            raise CLIError(f"--ratio-targets: expected numbers like 3,3, got "
                           f"{args.ratio_targets!r}") from None
    out = Path(args.out)
    if (out / "ckpt").exists() and not args.force:
        raise CLIError(f"{out}: already holds a run (use --force to overwrite)")
    ckpt = convert(args.config, args.weights, out, targets, args.seq_len)
    sys.stdout.write(json.dumps({"out": str(out), "checkpoint": str(ckpt)}) + "\n")
    return 0
