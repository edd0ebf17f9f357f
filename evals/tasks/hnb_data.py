"""Dataset loader for hnetbench's offline lm-eval tasks (referenced from the YAMLs here).

lm-eval calls `custom_dataset(**metadata, **dataset_kwargs)`; the jsonl file is resolved next to
this module, so the tasks work from a source checkout and from an installed package alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def load(file: str, **_ignored: Any):
    import datasets

    path = HERE / file
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run python3 -m hnetbench.evals.build_tasks")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
