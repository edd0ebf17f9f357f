"""`hnetbench lm-eval ...`: lm-eval's own command line with the `hnetbench` model registered.

    hnetbench lm-eval run --model hnetbench --model_args checkpoint=RUN --tasks hnb_cont_en
    hnetbench lm-eval --model hnetbench --model_args checkpoint=RUN --tasks my.yaml --limit 10
    hnetbench lm-eval ls tasks

Every argument goes to lm-eval unchanged. When no --include_path is given, hnetbench's shipped
tasks (evals/tasks/) are added as the include path, so their names work as lm-eval's do.
"""

from __future__ import annotations

import argparse
import sys

SUBCOMMANDS = ("run", "ls", "validate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # cli.main hands `lm-eval ...` straight to run(); this only documents it in --help
    parser.add_argument("lm_eval_args", nargs=argparse.REMAINDER,
                        help="arguments of lm-eval's CLI (see `hnetbench lm-eval --help`)")


def lm_eval_argv(argv: list[str]) -> list[str]:
    """lm-eval's argv: ours unchanged, plus our tasks as --include_path if none is given."""
    from hnetbench.evals.harness import TASKS_DIR

    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        return argv
    if any(a == "--include_path" or a.startswith("--include_path=") for a in argv):
        return argv
    if argv[0] == "ls" or argv[0] == "validate" or argv[0] == "run" or argv[0].startswith("-"):
        return [*argv, "--include_path", str(TASKS_DIR)]
    return argv


def run(argv: list[str]) -> int:
    """Run lm-eval's CLI in this process with `hnetbench` registered; returns the exit code."""
    import hnetbench.evals.lm_adapter  # noqa: F401 -- registers the "hnetbench" model
    from lm_eval.__main__ import cli_evaluate

    old = sys.argv
    sys.argv = ["lm-eval", *lm_eval_argv(argv)]
    try:
        cli_evaluate()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old
    return 0


def main(args: argparse.Namespace) -> int:
    return run(list(args.lm_eval_args))
