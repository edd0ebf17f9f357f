"""Thin glue over lm-eval: find tasks (ours, the user's, lm-eval's own), load them, run them.

Task specs are names (tasks, groups, tags) or paths to task YAML files; `include_paths` adds
directories of the user's own task YAMLs (as lm-eval's --include_path). Every spec is checked
before anything is loaded: an unknown one is a one-line ValueError. lm-eval's own index of
14k+ built-in tasks (~15 s to build, once per process) is consulted only when a spec is not
found in ours or the user's directories. A known task whose data cannot be loaded (e.g. a
Hugging Face dataset with no network) is reported as one line and skipped; the rest still run.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
MAIN_METRICS = ("acc", "acc_norm", "acc_bytes", "bits_per_byte", "word_perplexity",
                "byte_perplexity", "perplexity", "exact_match")


class _QuietCustomDataset(logging.Filter):
    """Drop lm-eval's per-task hint about custom-dataset kwargs (our loader takes none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Custom kwargs can be passed" not in record.getMessage()


def _quiet() -> None:
    log = logging.getLogger("lm_eval.api.task")
    if not any(isinstance(f, _QuietCustomDataset) for f in log.filters):
        log.addFilter(_QuietCustomDataset())


def offline_tasks() -> list[str]:
    """Names of the tasks (and tags) shipped in evals/tasks/."""
    import yaml

    names: set[str] = set()
    for p in sorted(TASKS_DIR.glob("*.yaml")):
        text = p.read_text(encoding="utf-8").replace("!function", "")
        cfg = yaml.safe_load(text) or {}
        names.add(cfg["task"])
        names.update(cfg.get("tag") or [])
    return sorted(names)


def _is_yaml_path(spec: str) -> bool:
    return spec.endswith((".yaml", ".yml")) or os.sep in spec


def _paths(specs: list[str], include_paths: list[str] | None) -> list[str]:
    """Task directories to index: ours, the user's, and the folder of every YAML spec given."""
    out = [str(TASKS_DIR)]
    for d in include_paths or []:
        if not Path(d).is_dir():
            raise ValueError(f"--include-path {d}: not a directory")
        out.append(str(Path(d).resolve()))
    for s in specs:
        if _is_yaml_path(s):
            if not Path(s).is_file():
                raise ValueError(f"task file {s}: not found")
            out.append(str(Path(s).resolve().parent))
    return list(dict.fromkeys(out))


def task_manager(names: list[str], include_paths: list[str] | None = None):
    """A TaskManager that knows every spec in `names`; raises ValueError (one line) otherwise.

    lm-eval's built-in index is built only if some name is not ours / the user's."""
    from lm_eval.tasks import TaskManager

    _quiet()
    paths = _paths(names, include_paths)
    tm = TaskManager(include_path=paths, include_defaults=False)

    def missing(tm) -> list[str]:
        return [n for n in names if not _is_yaml_path(n) and n not in tm.all_tasks]

    local = list(tm.all_tasks)
    ours = [n for n in missing(tm) if n.startswith(OUR_PREFIX)]  # a typo of ours: no indexing
    if ours:
        _unknown(ours, local, include_paths, defaults=False)
    if missing(tm):
        tm = _with_builtins(tuple(paths))
    if missing(tm):
        _unknown(missing(tm), tm.all_tasks, include_paths, defaults=True)
    return tm


@functools.lru_cache(maxsize=4)
def _with_builtins(paths: tuple[str, ...]):  # noqa: ANN202
    """A TaskManager over `paths` and lm-eval's built-in tasks: indexing its 14k+ YAML files
    takes ~14 s, so one process (a job's eval lm, then robustness) builds it once."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(paths), include_defaults=True)


OUR_PREFIX = "hnb_"


def _unknown(names: list[str], known: list[str], include_paths: list[str] | None,
             defaults: bool) -> None:
    import difflib

    where = ", ".join(["hnetbench's tasks", *(include_paths or [])]
                      + (["lm-eval's tasks"] if defaults else []))
    near = difflib.get_close_matches(names[0], known, n=1)
    raise ValueError(f"unknown task '{names[0]}'"
                     + (f" (and {len(names) - 1} more)" if len(names) > 1 else "")
                     + f": not found in {where}"
                     + (f"; did you mean '{near[0]}'?" if near else "")
                     + " (list: `hnetbench eval tasks`; own tasks: --include-path DIR)")


def _spec_name(spec: str) -> str:
    """The task/group name a spec refers to (a YAML path: its `task:` or `group:`)."""
    if not _is_yaml_path(spec):
        return spec
    from lm_eval.tasks._index import TaskIndex

    entry = TaskIndex.entry_from_path(Path(spec))
    if entry is None:
        raise ValueError(f"task file {spec}: expected a YAML with a 'task' or 'group' key")
    return entry.name


def load_specs(names: list[str], include_paths: list[str] | None = None, log=print):
    """(TaskManager, loadable specs, leaf Task objects by name); unknown specs raise first."""
    tm = task_manager(names, include_paths)
    ok: list[str] = []
    leaves: dict[str, Any] = {}
    for spec in names:
        label = _spec_name(spec)
        try:
            loaded = tm.load([spec])
        except Exception as e:  # noqa: BLE001 -- datasets raise anything when offline
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            log(f"task {label}: data not available offline ({type(e).__name__}: {msg[:160]}); "
                "skipped")
            continue
        ok.append(spec)
        leaves.update(loaded["tasks"])
    return tm, ok, leaves


def load_tasks(names: list[str], log=print, include_paths: list[str] | None = None
               ) -> dict[str, Any]:
    """name -> Task for every leaf task (groups and tags expanded) that loads."""
    return load_specs(names, include_paths, log)[2]


def _rows(res: dict) -> dict[str, dict[str, Any]]:
    from hnetbench.evals.intervals import METHOD, accuracy_interval

    out: dict[str, dict[str, Any]] = {}
    n_samples = res.get("n-samples", {})
    for name, metrics in (res or {}).get("results", {}).items():
        row: dict[str, Any] = {}
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")
            if metric in MAIN_METRICS and isinstance(value, (int, float)):
                row[metric] = float(value)
        n = (n_samples.get(name) or {}).get("effective")
        if row and n:  # nested, so readers that take every number as a metric are unaffected
            ci: dict[str, Any] = {"n": int(n), "method": METHOD}
            for m in ("acc", "acc_norm", "acc_bytes", "exact_match"):
                if m in row:
                    ci[m] = list(accuracy_interval(row[m], int(n)))
            row["ci95"] = ci
        if row:
            out[name] = row
    return out


@contextlib.contextmanager
def _no_env_report() -> Iterator[None]:
    """Skip the environment report `simple_evaluate` appends to its results.

    It is torch's `collect_env` (a `pip list` and a dozen other subprocesses: ~2 s of wall
    clock and ~1.1 CPU-s per call here) and lands in keys `run_tasks` never keeps; runs record
    their machine themselves (`machine.py`). Missing in another lm-eval version: nothing to do."""
    import lm_eval.evaluator as ev

    saved = getattr(ev, "add_env_info", None)
    if saved is None:
        yield
        return
    ev.add_env_info = lambda storage: None
    try:
        yield
    finally:
        ev.add_env_info = saved


def run_tasks(lm, tasks: dict[str, Any] | list[str], limit: int | float | None = None,
              batch_size: int | None = None, tm=None) -> dict[str, dict[str, Any]]:
    """Evaluate zero-shot; returns {task: {metric: value, "ci95": {"n": items, m: [lo, hi]}}}.

    `tasks`: loaded Task objects by name, or specs (names, YAML paths, groups) known to `tm`
    (then group aggregates are reported too). The interval is Wilson's over
    the n items evaluated (evals/intervals.py)."""
    import lm_eval

    if not tasks:
        return {}
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    todo = list(tasks.values()) if isinstance(tasks, dict) else list(tasks)
    with _no_env_report():
        res = lm_eval.simple_evaluate(
            model=lm, tasks=todo, limit=limit, bootstrap_iters=0,
            log_samples=False, task_manager=tm or task_manager([]), batch_size=batch_size,
        )
    return _rows(res or {})
