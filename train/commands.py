"""`hnetbench train CONFIG [key=value ...] --out DIR [--force] [--max-steps N]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a YAML file or a preset name such as hnet-1stage@cpu-tiny")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. train.steps=100 model.d_model=[64,96]")
    parser.add_argument("--out", default=None,
                        help="run directory (default results/train/<run_id>); "
                             "resumes from its checkpoint if it has one")
    parser.add_argument("--force", action="store_true",
                        help="resume even though the config differs from the checkpointed run")
    parser.add_argument("--max-steps", type=int, default=None, metavar="N",
                        help="stop (with a checkpoint) after N steps in total; "
                             "the LR schedule still spans the full budget")


def resolve_run_config(config: str, overrides: list[str]):
    """CONFIG is a YAML path, or a preset name (anything with '@' that is not a file)."""
    from hnetbench.config import ConfigError, resolve

    path = Path(config)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return resolve(path, overrides)
    if "@" in config:
        return resolve(None, overrides, base={"preset": config})
    raise ConfigError(f"{config}: not a YAML file or a preset name (<family>@<scale>)")


def main(args: argparse.Namespace) -> int:
    from hnetbench.cli import CLIError
    from hnetbench.config import config_hash
    from hnetbench.train.distributed import env_world
    from hnetbench.train.trainer import TrainingDiverged, train

    run_cfg = resolve_run_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("results") / "train" / config_hash(run_cfg)
    if args.max_steps is not None and args.max_steps < 1:
        raise CLIError(f"--max-steps: expected a positive integer, got {args.max_steps}")
    try:
        summary = train(run_cfg, out, force=args.force, max_steps=args.max_steps)
    except TrainingDiverged as e:
        raise CLIError(str(e)) from None
    if env_world()[0] == 0:  # one summary line per run, not per rank
        print(json.dumps({"out": str(out), **summary}), file=sys.stdout)
    return 0
