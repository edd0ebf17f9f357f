"""Multiple-choice scoring: each context once (the cache) against whole sequences, in one process.

    python benchmarks/eval_continuations.py [--checkpoints RUN ...] [--task hnb_cont_en]
                                            [--limit 100] [--rounds 3] [--json out.json]

The lm-eval adapter's `loglikelihood` over a continuation task's requests (the items' contexts
x choices, as lm-eval builds them for `--limit` items), one thread, timed in CPU seconds:
  whole   every (context + choice) scored as one sequence (`score_tails`)
  shared  each context prefilled once, its choices run from the cache (`score_continuations`)
alternating every round, in rotated order. Models: the run directories given (trained: their
routers compress as in the evals of `reproduce`), else the English trio of the reproduce spec
at init (untrained routers cut ~2 bytes per chunk, so more of an H-Net's work is its inner
stages). Reported per model: median CPU seconds, shared/whole, the largest difference of a
log-likelihood and whether the accuracies (argmax over choices) agree.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def requests(task: str, limit: int) -> tuple[list, list[int]]:
    """lm-eval Instances (context, choice) of the task's first `limit` items, and the golds."""
    from lm_eval.api.instance import Instance

    reqs, golds = [], []
    lines = (ROOT / "evals" / "tasks" / f"{task}.jsonl").read_text().splitlines()[:limit]
    for i, line in enumerate(lines):
        item = json.loads(line)
        golds.append(int(item["label"]))
        reqs += [Instance("loglikelihood", item, (item["context"], c), i) for c in item["choices"]]
    return reqs, golds


def models(checkpoints: list[str]) -> list[tuple[str, torch.nn.Module, object]]:
    if checkpoints:
        from hnetbench.train import load_checkpoint

        out = []
        for path in checkpoints:
            model, cfg, tok = load_checkpoint(path)
            out.append((f"{cfg.preset} ({Path(path).name})", model, tok))
        return out
    from hnetbench.data import get_tokenizer
    from hnetbench.models import build_model
    from hnetbench.sweeps.spec import expand, load_spec

    runs = expand(load_spec(str(ROOT / "sweeps" / "specs" / "cpu.yaml")))
    out = []
    for i in (0, 2, 4):  # English 2-stage, 1-stage, BPE Transformer
        torch.manual_seed(0)
        out.append((runs[i].label.split(",")[1], build_model(runs[i].cfg.model),
                    get_tokenizer(runs[i].cfg.data)))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", nargs="*", default=[])
    ap.add_argument("--task", default="hnb_cont_en")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from hnetbench.evals import lm_adapter
    from hnetbench.evals.continuations import can_extend

    reqs, golds = requests(args.task, args.limit)
    rows = []
    for name, model, tok in models(args.checkpoints):
        lm = lm_adapter.HNetBenchLM(model=model, tokenizer=tok)
        ways = {"whole": lambda m: False, "shared": can_extend}
        times: dict[str, list[float]] = {w: [] for w in ways}
        scores: dict[str, list] = {}
        for r in range(args.rounds):
            order = list(ways)[r % 2:] + list(ways)[: r % 2]
            for way in order:
                lm_adapter.can_extend = ways[way]
                t0 = time.process_time()
                scores[way] = lm.loglikelihood(reqs)
                times[way].append(time.process_time() - t0)
        lm_adapter.can_extend = can_extend
        k = len(reqs) // len(golds)

        def acc(res: list) -> float:
            ll = [s for s, _ in res]
            picks = [max(range(k), key=lambda j: ll[i * k + j]) for i in range(len(golds))]
            return sum(p == g for p, g in zip(picks, golds)) / len(golds)

        whole, shared = (statistics.median(times[w]) for w in ways)
        rows.append({
            "model": name, "whole_cpu_s": round(whole, 3), "shared_cpu_s": round(shared, 3),
            "shared/whole": round(shared / whole, 3),
            "max_ll_diff": max(abs(a - b) for (a, _), (b, _) in zip(scores["whole"],
                                                                      scores["shared"])),
            "acc_whole": acc(scores["whole"]), "acc_shared": acc(scores["shared"]),
            "times": times,
        })
    print_table(rows, ["model", "whole_cpu_s", "shared_cpu_s", "shared/whole", "max_ll_diff",
                       "acc_whole", "acc_shared"])
    write_json(args.json, {"machine": machine(), "task": args.task, "limit": args.limit,
                           "requests": len(reqs), "rounds": args.rounds, "rows": rows})


if __name__ == "__main__":
    main()
