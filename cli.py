"""`hnetbench` command line: a thin dispatcher.

Each subcommand lives in its own module exposing `add_arguments(parser)` and `main(args) -> int`;
this file only lists them, so the library stays importable without the CLI.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hnetbench import __version__

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("hnetbench.data.commands", "corpora and tokenizers: build, stats, prepare, verify"),
    "models": ("hnetbench.models.commands", "list model presets with parameters and FLOPs/byte"),
    "flops": ("hnetbench.flops_command", "analytic FLOPs per byte of a preset or config"),
    "train": ("hnetbench.train.commands", "train one model from a config (resumable)"),
    "eval": ("hnetbench.evals.commands",
             "evaluate a checkpoint: bpb, lm (lm-eval tasks), robustness"),
    "lm-eval": ("hnetbench.evals.lm_eval_cli",
                "lm-eval's own CLI with the hnetbench model registered (all flags pass through)"),
    "viz": ("hnetbench.evals.viz_commands", "render chunk boundaries of a checkpoint on a text"),
    "generate": ("hnetbench.models.generate_command", "sample bytes from a checkpoint"),
    "sweep": ("hnetbench.sweeps.commands", "run, inspect or cancel a sweep of runs"),
    "report": ("hnetbench.reports.commands",
               "build tables and figures from a sweep's results"),
    "reproduce": ("hnetbench.sweeps.reproduce", "train, evaluate and report a preset end to end"),
    "convert": ("hnetbench.models.convert_command",
                "turn a goombalab/hnet checkpoint (config JSON + weights) into a run"),
}


class CLIError(Exception):
    """Raised by subcommands for a one-line user-facing error."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with `command`, only that subcommand's module is imported for its
    options (several import torch: ~3 s that `sweep status` or `--help` need not pay), the
    others are listed by name and help line."""
    parser = argparse.ArgumentParser(
        prog="hnetbench",
        description="Benchmark and ablation suite for tokenizer-free hierarchical LMs (H-Net).",
    )
    parser.add_argument("--version", action="version", version=f"hnetbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if command is not None and name != command:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is None or not module_name.startswith(e.name):
                raise
            p.set_defaults(_missing=name)
            continue
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    from hnetbench.config import ConfigError

    raw = sys.argv[1:] if argv is None else list(argv)
    if raw[:1] == ["lm-eval"]:  # lm-eval parses its own flags, --help included
        from hnetbench.evals.lm_eval_cli import run

        return run(raw[1:])
    parser = build_parser(raw[0] if raw else "")
    args = parser.parse_args(raw)
    if args.command is None:
        parser.print_help()
        return 0
    if getattr(args, "_missing", None):
        print(f"hnetbench {args._missing}: not available yet in this version", file=sys.stderr)
        return 2
    try:
        return int(args._main(args) or 0)
    except (CLIError, ConfigError, FileNotFoundError) as e:
        print(f"hnetbench {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hnetbench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
