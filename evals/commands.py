"""`hnetbench eval`: bits per byte, lm-eval tasks and robustness of a checkpoint.

    hnetbench eval bpb --checkpoint RUN [--domain zh --split test]
    hnetbench eval lm --checkpoint RUN --tasks hnb_cont_en,hellaswag [--limit 50]
    hnetbench eval robustness --checkpoint RUN --tasks hnb_bb_goal_inference [--out DIR]

Results merge into the run directory's eval.json (docs/INTERFACES.md), atomically and under a
file lock, so concurrent evaluations of one run never lose each other's results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from hnetbench.config import atomic_write_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="{bpb,lm,robustness,tasks}")
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--checkpoint", required=True,
                       help="run dir, its ckpt/ dir, or one checkpoint dir")
        p.add_argument("--batch-size", type=int, default=8)
        p.add_argument("--eval-json", help="where to merge results (default: RUN/eval.json)")
        p.add_argument("--no-save", action="store_true", help="print only; do not touch eval.json")

    p = sub.add_parser("bpb", help="bits per byte on a held-out split (DNA: also ppl per bp)")
    common(p)
    p.add_argument("--domain", help="embedded domain en|zh|code|dna (default: the run's data)")
    p.add_argument("--split", default=None, help="train|val|test (default: eval.bpb_split)")
    p.add_argument("--max-bytes", type=int, default=None,
                   help="bytes to score (default: eval.bpb_max_bytes; 0 = all)")
    p.add_argument("--seq-len", type=int, default=None,
                   help="window in model tokens (default: the training window)")
    p.add_argument("--stride", type=int, default=None,
                   help="targets per window step (default: seq_len // 2)")

    def tasks_args(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--tasks", required=True,
                       help=f"comma-separated {what}: names (tasks, groups, tags) or task YAML "
                       "paths; an unknown one is an error (exit 2) before the model loads")
        p.add_argument("--include-path", action="append", default=[], metavar="DIR",
                       help="directory of your own lm-eval task YAMLs, groups included "
                       "(repeatable)")

    p = sub.add_parser("lm", help="lm-eval tasks (lm-eval's names or hnetbench's offline tasks)")
    common(p)
    tasks_args(p, "tasks")
    p.add_argument("--limit", type=float, default=None, help="items per task (testing)")
    p.add_argument("--max-length", type=int, default=None, help="context limit in model tokens")

    p = sub.add_parser("robustness", help="Table-3 perturbations on multiple-choice tasks")
    common(p)
    tasks_args(p, "multiple-choice tasks")
    p.add_argument("--limit", type=float, default=None, help="items per task (testing)")
    p.add_argument("--perturbations", default="antspeak,drop,randomcase,repeat,uppercase",
                   help="comma-separated; also randomcase_blt (BLT's RandomCase: the other "
                   "characters lower-cased); see docs/EVALS.md")
    p.add_argument("--metric", default="acc", choices=["acc", "acc_norm"],
                   help="accuracy measure (default acc, as Table 3)")
    p.add_argument("--perturb-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="e.g. drop_frac=0.2, repeat_max=3, seed=1 (repeatable)")
    p.add_argument("--only", choices=["context", "choices"],
                   help="perturb only the context or only the choices (default both)")
    p.add_argument("--out", help="directory for robustness.csv and robustness.md")
    p.add_argument("--label", default=None, help="model label in the table (default: run name)")
    p.add_argument("--record-tasks", action="store_true",
                   help="also record the clean tasks' results under 'tasks' in eval.json, as "
                   "`hnetbench eval lm` with the same --tasks and --limit would (sweeps use it "
                   "instead of scoring the same items twice)")

    p = sub.add_parser("tasks", help="list hnetbench's offline tasks")
    p.set_defaults(checkpoint=None)


# ----------------------------------------------------------------------------- eval.json


def find_run_dir(checkpoint: str | os.PathLike) -> Path | None:
    """The run directory above a checkpoint path (the one holding config.yaml and ckpt/)."""
    p = Path(checkpoint).resolve()
    for d in [p, *p.parents]:
        if (d / "ckpt").is_dir() and (d / "config.yaml").is_file():
            return d
    return None


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        both = isinstance(v, dict) and isinstance(out.get(k), dict)
        out[k] = _deep_merge(out[k], v) if both else v
    return out


def merge_eval_json(path: str | os.PathLike, update: dict) -> dict:
    """Merge `update` into the JSON file at `path` (created if missing) under an flock."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data: dict = {}
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                raise ValueError(f"{path}: not valid JSON; fix or remove it") from None
        data = _deep_merge(data, update)
        atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data


def _save(args: argparse.Namespace, update: dict) -> None:
    if args.no_save:
        return
    target = args.eval_json
    if target is None:
        run = find_run_dir(args.checkpoint)
        if run is None:
            print("(no run directory above the checkpoint; pass --eval-json to save results)")
            return
        target = run / "eval.json"
    merge_eval_json(target, update)
    print(f"merged into {target}")


def _load(args: argparse.Namespace):
    from hnetbench.train import load_checkpoint

    return load_checkpoint(args.checkpoint)


# ----------------------------------------------------------------------------- subcommands


def _bpb(args: argparse.Namespace) -> int:
    from hnetbench.data import build_loader, load_documents, prepared_documents
    from hnetbench.evals.bpb import evaluate_bpb

    model, run_cfg, tok = _load(args)
    split = args.split or run_cfg.eval.bpb_split
    domain = args.domain or run_cfg.data.domain
    if args.domain and (args.domain != run_cfg.data.domain or run_cfg.data.source != "embedded"):
        docs = load_documents(args.domain, split)
    else:
        docs = prepared_documents(run_cfg.data, split, tok)  # memmapped shards, read lazily
    max_bytes = run_cfg.eval.bpb_max_bytes if args.max_bytes is None else args.max_bytes
    seq_len = args.seq_len
    if seq_len is None:  # the training window (BPE: the loader's matched token count)
        seq_len = (run_cfg.data.seq_len if tok.name == "bytes"
                   else build_loader(run_cfg.data, split, 0, tok).seq_len_tokens)
    res = evaluate_bpb(model, tok, docs, seq_len, stride=args.stride or max(1, seq_len // 2),
                       batch_size=args.batch_size, max_bytes=max_bytes or None)
    key = f"{domain}/{split}"
    extra = f"  ppl/bp {res['ppl']:.4f}" if domain == "dna" else ""
    print(f"{key}: bpb {res['bpb']:.4f} over {res['bytes']} bytes ({res['tokens']} tokens){extra}")
    update: dict[str, Any] = {"bpb": {key: res["bpb"]}}
    if res.get("ci95"):  # beside "bpb" (whose values stay plain numbers for every reader)
        update["bpb_ci95"] = {key: res["ci95"]}
    if domain == "dna":
        update["ppl_per_bp"] = {key: res["ppl"]}
    if res.get("bytes_per_chunk") and domain == run_cfg.data.domain:  # the run's own domain
        update["bytes_per_chunk"] = res["bytes_per_chunk"]
    _save(args, update)
    return 0


def _lm_from(args: argparse.Namespace):
    from hnetbench.evals.lm_adapter import HNetBenchLM

    model, run_cfg, tok = _load(args)
    lm = HNetBenchLM(model=model, tokenizer=tok, batch_size=args.batch_size,
                     max_length=getattr(args, "max_length", None))
    return lm, run_cfg


def _tasks(names: str) -> list[str]:
    out = [t.strip() for t in names.split(",") if t.strip()]
    if not out:
        raise ValueError("--tasks: expected a comma-separated list of task names")
    return out


def _limit(x: float | None) -> int | float | None:
    return None if x is None else (int(x) if x >= 1 else x)


def _print_tasks(results: dict[str, dict]) -> None:
    """One line per task: accuracies with their intervals, then its other metrics."""
    from hnetbench.evals.intervals import format_acc

    for name, m in results.items():
        n = (m.get("ci95") or {}).get("n")
        accs = [f"{k} {format_acc(m[k], n)}" for k in ("acc", "acc_norm") if k in m]
        rest = [f"{k} {v:.4f}" for k, v in sorted(m.items())
                if isinstance(v, float) and k not in ("acc", "acc_norm")]
        print(f"{name}: " + ", ".join(accs + rest))


def _lm(args: argparse.Namespace) -> int:
    from hnetbench.evals.harness import load_specs, run_tasks

    names = _tasks(args.tasks)
    tm, specs, _ = load_specs(names, args.include_path)  # unknown names fail before the model
    if not specs:
        return 1
    lm, _ = _lm_from(args)
    results = run_tasks(lm, specs, limit=_limit(args.limit), tm=tm)
    _print_tasks(results)
    if results:
        _save(args, {"tasks": results})
    return 0 if results else 1


def _robustness(args: argparse.Namespace) -> int:
    from hnetbench.evals.harness import load_specs, run_tasks
    from hnetbench.evals.perturb import ALL_PERTURBATIONS, PerturbConfig
    from hnetbench.evals.robustness import run_robustness, table

    perts = [p.strip() for p in args.perturbations.split(",") if p.strip()]
    bad = [p for p in perts if p not in ALL_PERTURBATIONS]
    if bad:
        raise ValueError(
            f"--perturbations: unknown '{bad[0]}' (expected {', '.join(ALL_PERTURBATIONS)})"
        )
    cfg = PerturbConfig.from_overrides(args.perturb_opt)
    names = _tasks(args.tasks)
    tm, specs, tasks = load_specs(names, args.include_path)  # unknown names fail first
    if not tasks:
        return 1
    lm, run_cfg = _lm_from(args)
    clean: dict[str, dict] = {}
    res = run_robustness(lm, tasks, perts, cfg, limit=_limit(args.limit), metric=args.metric,
                         context=args.only != "choices", choices=args.only != "context",
                         clean_results=clean)
    csv_text, md = table(res, perts, label=args.label or run_cfg.name)
    print(md, end="")
    if args.out:
        out = Path(args.out)
        atomic_write_text(out / "robustness.csv", csv_text)
        meta = {"perturb_config": dataclasses.asdict(cfg), "metric": args.metric,
                "limit": args.limit, "perturb": args.only or "context+choices"}
        atomic_write_text(out / "robustness.md",
                          md + "\nsettings: `" + json.dumps(meta, sort_keys=True) + "`\n")
        print(f"wrote {out / 'robustness.csv'} and {out / 'robustness.md'}")
    keep = ("clean", *perts, "avg", "score", "chance", "ci95", "na", "changed")
    update: dict[str, Any] = {"robustness": {t: {k: r.get(k) for k in keep if k in r}
                                             for t, r in res.items()}} if res else {}
    if args.record_tasks:
        if sorted(names) != sorted(clean):
            # groups, tags or paths name no leaf: lm-eval's own run over the names, as `eval lm`
            # does (group aggregates included)
            clean = run_tasks(lm, specs, limit=_limit(args.limit), tm=tm)
        _print_tasks(clean)
        if clean:
            update["tasks"] = clean
    if update:
        _save(args, update)
    return 0 if res else 1


def main(args: argparse.Namespace) -> int:
    from hnetbench.cli import CLIError

    if args.eval_command == "tasks":
        from hnetbench.evals.harness import offline_tasks

        print("\n".join(offline_tasks()))
        return 0
    try:
        return {"bpb": _bpb, "lm": _lm, "robustness": _robustness}[args.eval_command](args)
    except ValueError as e:
        raise CLIError(str(e).splitlines()[0]) from None
