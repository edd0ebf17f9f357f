"""Sweep specs: a YAML file naming a base config, axes to vary, compute matching, evals, Slurm.

    name: paper-L
    base: {data: {domain: en}, train: {lr: 6.25e-4}}   # or a path to a config YAML
    axes:
      grid: {preset: [transformer-bpe@paper-L, hnet-1stage@paper-L], train.seed: [0, 1]}
      zip: [{data.domain: [en, zh], train.train_bytes: [1e9, 5e8]}]
    match: {group_by: [data.domain, scale], reference: transformer-bpe}
    eval: {bpb: true, tasks: [hellaswag], robustness: false}
    slurm: {partition: gpu, gpus_per_node: 8, time_min: 2880}

Expansion gives one resolved RunConfig per point of grid x zip; its hash is the run id.

Tokenizer axes (`data.tokenizer`, `data.bpe_vocab_size`, `data.sp_model_type`,
`data.tokenizer_path`) set the input of tokenized runs only (their model.vocab_size follows unless
an axis sets it); a byte-level run ignores them as input, and they pick which reference it is
compute-matched to: each tokenizer's reference, at its own measured bytes per token, gets its own
matched H-Nets (runs that come out identical are planned once).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hnetbench.config import (
    ConfigError,
    RunConfig,
    config_hash,
    from_dict,
    read_yaml,
    resolve,
    set_path,
    to_dict,
)


@dataclass
class AxesSpec:
    grid: dict = field(default_factory=dict)  # key -> list of values (cartesian product)
    zip: list = field(default_factory=list)  # list of {key: list}; lists in one block zip together


@dataclass
class MatchSpec:
    # Runs that agree on these keys form a group ("scale"/"family" come from the preset name).
    group_by: list[str] = field(default_factory=lambda: ["data.domain", "scale"])
    # preset family of the reference run in each group; a list = the first one the group has
    # (e.g. [transformer-bpe, transformer-dna] for a sweep over text and DNA)
    reference: str | list[str] = "transformer-bpe"
    compute: bool = True  # size other models' main-network depth to the reference's FLOPs/byte
    data: bool = True  # require the same bytes per batch and training bytes as the reference
    width: bool = False  # also allow the main network's width to change (flops.match_depth)
    tolerance: float = 0.03  # relative FLOPs/byte error allowed
    # family -> compression used for sizing (one number = bytes per innermost chunk, or a list
    # per stage); families not listed use their ratio targets. The paper sized with the
    # compression its models reached (Table 1 BPIC: 1-stage 4.8, 2-stage 7.0 at L scale).
    compression: dict = field(default_factory=dict)
    # bytes per token of the references: one number, or {data.tokenizer value: number}; None =
    # measured on the embedded corpus (per tokenizer and vocabulary), 4.6 for GPT-2 and the
    # paper's Table 4 BPIC for Llama-3 on zh/code (paper values, for non-embedded sources)
    bytes_per_token: float | dict | None = None


@dataclass
class BranchSpec:
    """WSD cool-down branches (train/branch.py) of the sweep's finished runs: each selected run
    also gets its final loss at these fractions of its budget. Runs are selected by domain and
    seed; the runs' train.ckpt_every must hit the branch steps and train.keep_last be 0."""

    fractions: list[float] = field(default_factory=lambda: [0.25, 0.5])
    domains: list[str] = field(default_factory=lambda: ["en"])
    seeds: list[int] = field(default_factory=lambda: [0])
    # evals of a branch: BPB only by default (the data-scaling fit needs nothing else)
    tasks: bool = False


@dataclass
class RobustnessSpec:
    """Robustness evals on selected runs only, run by those runs' jobs after their other evals
    (`reproduce` catches up any selected run that lacks one): a robustness eval scores every
    item once per perturbation, so a preset spends it where a claim needs it."""

    domains: list[str] = field(default_factory=lambda: ["en"])
    seeds: list[int] = field(default_factory=lambda: [0])
    tasks: list[str] = field(default_factory=lambda: ["hnb_cont_{domain}"])
    limit: int | None = None


@dataclass
class SweepEval:
    bpb: bool = True
    splits: list[str] = field(default_factory=lambda: ["val"])
    tasks: list[str] = field(default_factory=list)  # lm-eval task names
    robustness: bool = False
    limit: int | None = None  # examples per task (None = all)


@dataclass
class SlurmSpec:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    nodes: int = 1
    gpus_per_node: int = 1  # 0: a CPU partition (no --gpus-per-node)
    tasks_per_node: int = 0  # processes per node; 0 = one per GPU (one when gpus_per_node is 0)
    cpus_per_task: int = 8
    mem_gb: int = 64
    time_min: int = 1440
    array_parallelism: int = 32
    max_requeue: int = 3  # preemption/timeout requeues per job
    signal_delay_s: int = 90  # Slurm sends USR2 this long before the time limit (--signal)
    setup: list[str] = field(default_factory=list)  # shell lines before the job (module load, ...)
    additional: dict = field(default_factory=dict)  # extra #SBATCH options, e.g. {mail-type: END}


@dataclass
class EstimateSpec:
    flops_per_s: float = 0.0  # sustained training FLOP/s per run; 0 = guess from the executor
    mfu: float = 0.35  # used with the accelerator peak when flops_per_s is 0
    gpu_peak_flops: float = 989e12  # one GPU's peak (default: H100 bf16 dense; A100: 312e12)


@dataclass
class SweepSpec:
    name: str = ""
    base: Any = field(default_factory=dict)  # partial RunConfig dict or a config YAML path
    axes: AxesSpec = field(default_factory=AxesSpec)
    match: MatchSpec | None = None
    eval: SweepEval = field(default_factory=SweepEval)
    slurm: SlurmSpec = field(default_factory=SlurmSpec)
    estimate: EstimateSpec = field(default_factory=EstimateSpec)
    branch: BranchSpec | None = None
    robustness: RobustnessSpec | None = None
    path: str = ""  # where the spec was read from (filled in by load_spec)


@dataclass
class PlannedRun:
    run_id: str
    label: str  # human name from the axis values, e.g. "hnet-1stage@paper-L,domain=en"
    cfg: RunConfig
    axes: dict[str, Any]  # axis key -> value for this run
    match: dict[str, Any] | None = None  # reference run id, target/achieved FLOPs per byte


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _check_key(key: Any, where: str) -> None:
    """An axis key must be a config path such as `model.smoothing` or `preset`."""
    if not isinstance(key, str) or not key:
        raise ConfigError(f"{where}: axis key {key!r} must be a config path like 'train.seed'")
    cls: Any = RunConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        names = {f.name for f in dataclasses.fields(cls)}
        if part not in names:
            raise ConfigError(
                f"{where}.{key}: unknown config key '{'.'.join(parts[: i + 1])}'"
                f" (valid: {', '.join(sorted(names))})"
            )
        tp = next(f.type for f in dataclasses.fields(cls) if f.name == part)
        sub = {"data": "DataConfig", "model": "ModelConfig", "train": "TrainConfig",
               "eval": "EvalConfig"}.get(part) if cls is RunConfig else None
        if i < len(parts) - 1:
            if sub is None:
                raise ConfigError(f"{where}.{key}: '{part}' is not a section")
            import hnetbench.config as C

            cls = getattr(C, sub)
        elif sub is not None or (isinstance(tp, str) and tp.endswith("Config")):
            raise ConfigError(f"{where}.{key}: vary single keys, not the whole '{part}' section")


def _check_values(values: Any, where: str) -> list:
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: expected a non-empty list of values, got {values!r}")
    return values


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec; every error is one line naming the file and key."""
    p = Path(path)
    data = read_yaml(p)
    try:
        fields = {k: v for k, v in data.items() if k != "path"}
        spec = from_dict(SweepSpec, {**fields, "path": str(p)})
        if not isinstance(spec.name, str) or not _NAME_RE.match(spec.name):
            raise ConfigError(f"name: expected a directory-safe sweep name, got {spec.name!r}")
        if not isinstance(spec.base, (dict, str)):
            raise ConfigError(f"base: expected a mapping or a config file path, got {spec.base!r}")
        if not isinstance(spec.axes.grid, dict):
            raise ConfigError(f"axes.grid: expected a mapping of key: [values], "
                              f"got {spec.axes.grid!r}")
        for key, values in spec.axes.grid.items():
            _check_key(key, "axes.grid")
            _check_values(values, f"axes.grid.{key}")
        if not isinstance(spec.axes.zip, list):
            raise ConfigError(f"axes.zip: expected a list of mappings, got {spec.axes.zip!r}")
        seen = set(spec.axes.grid)
        for i, block in enumerate(spec.axes.zip):
            where = f"axes.zip[{i}]"
            if not isinstance(block, dict) or not block:
                raise ConfigError(f"{where}: expected a mapping of key: [values], got {block!r}")
            lengths = {}
            for key, values in block.items():
                _check_key(key, where)
                lengths[key] = len(_check_values(values, f"{where}.{key}"))
                if key in seen:
                    raise ConfigError(f"{where}.{key}: key is varied twice")
                seen.add(key)
            if len(set(lengths.values())) > 1:
                desc = ", ".join(f"{k} has {n}" for k, n in lengths.items())
                raise ConfigError(f"{where}: zipped lists differ in length ({desc})")
        if spec.match is not None:
            for key in spec.match.group_by:
                if key not in ("scale", "family"):
                    _check_key(key, "match.group_by")
        for key in ("nodes", "cpus_per_task", "mem_gb", "time_min", "array_parallelism"):
            if getattr(spec.slurm, key) < 1:
                raise ConfigError(f"slurm.{key}: expected a positive integer")
        for key in ("gpus_per_node", "tasks_per_node", "signal_delay_s"):
            if getattr(spec.slurm, key) < 0:
                raise ConfigError(f"slurm.{key}: expected an integer >= 0")
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
    return spec


def _base_dict(spec: SweepSpec) -> dict:
    if isinstance(spec.base, dict):
        return spec.base
    base_path = Path(spec.base)
    if not base_path.is_absolute() and spec.path:
        # relative to the spec file, then to the working directory
        candidate = Path(spec.path).parent / base_path
        base_path = candidate if candidate.is_file() else base_path
    return read_yaml(base_path)


def _points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every combination of axis values: grid keys crossed with each zip block."""
    dims: list[list[dict[str, Any]]] = []
    for key, values in spec.axes.grid.items():
        dims.append([{key: v} for v in values])
    for block in spec.axes.zip:
        keys = list(block)
        dims.append([dict(zip(keys, vals)) for vals in zip(*(block[k] for k in keys))])
    return [dict(kv for d in combo for kv in d.items()) for combo in itertools.product(*dims)]


def _label(point: dict[str, Any]) -> str:
    parts = []
    for key, value in point.items():
        short = key.rsplit(".", 1)[-1]
        parts.append(str(value) if key == "preset" else f"{short}={value}")
    return ",".join(parts) or "base"


def family_scale(cfg: RunConfig) -> tuple[str, str]:
    """`hnet-1stage@paper-L` -> ("hnet-1stage", "paper-L"); no preset -> (arch, "")."""
    if cfg.preset and "@" in cfg.preset:
        fam, scale = cfg.preset.split("@", 1)
        return fam, scale
    return (cfg.preset or cfg.model.arch), ""


def _get(cfg: RunConfig, key: str) -> Any:
    if key == "family":
        return family_scale(cfg)[0]
    if key == "scale":
        return family_scale(cfg)[1]
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


TOKENIZER_KEYS = ("data.tokenizer", "data.bpe_vocab_size", "data.sp_model_type",
                  "data.tokenizer_path")


def _resolve_point(base: dict, point: dict[str, Any], label: str, spec: SweepSpec) -> RunConfig:
    layered = copy.deepcopy(base)  # set_path writes into nested dicts: never into the spec's
    for key, value in point.items():
        set_path(layered, key.split("."), value)
    layered["name"] = label
    try:
        return resolve(base=layered)
    except ConfigError as e:
        raise ConfigError(f"{spec.path}: run {label}: {e}") from None


def _apply_tokenizer_axes(base: dict, point: dict, label: str, spec: SweepSpec) -> RunConfig:
    """A point with tokenizer axes: byte-level runs keep bytes (the axes only pick their
    reference); tokenized runs take the tokenizer and a model.vocab_size that fits it."""
    plain = _resolve_point(base, {k: v for k, v in point.items() if k not in TOKENIZER_KEYS},
                           label, spec)
    if plain.data.tokenizer == "bytes":
        return plain
    cfg = _resolve_point(base, point, label, spec)
    if "model.vocab_size" not in point:
        from hnetbench.data.corpus import DataError
        from hnetbench.data.tokenizers import vocab_size_of

        try:
            vocab = vocab_size_of(cfg.data)
        except DataError as e:
            raise ConfigError(f"{spec.path}: run {label}: {e}") from None
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=vocab))
    return cfg


def expand(spec: SweepSpec) -> list[PlannedRun]:
    """Resolve every run of the sweep (compute matching included), in spec order."""
    base = _base_dict(spec)
    runs = []
    for point in _points(spec):
        label = _label(point)
        if any(k in TOKENIZER_KEYS for k in point):
            cfg = _apply_tokenizer_axes(base, point, label, spec)
        else:
            cfg = _resolve_point(base, point, label, spec)
        runs.append(PlannedRun(run_id="", label=label, cfg=cfg, axes=point))
    if spec.match is not None:
        _match(spec, runs)
    ids: dict[str, PlannedRun] = {}
    byte_twins: dict[tuple[str, str], PlannedRun] = {}
    kept = []
    for run in runs:
        if run.cfg.data.tokenizer == "bytes" and any(k in TOKENIZER_KEYS for k in run.axes):
            # a byte-level run matched alike for two tokenizers' references: plan it once
            other = {k: v for k, v in run.axes.items() if k not in TOKENIZER_KEYS}
            key = (config_hash(dataclasses.replace(run.cfg, name="")), repr(sorted(other.items())))
            first = byte_twins.get(key)
            if first is not None:
                if first.match is not None and run.match is not None:
                    first.match.setdefault("also_references", []).append(run.match["reference"])
                continue
            byte_twins[key] = run
        run.run_id = config_hash(run.cfg)
        if run.run_id in ids:
            raise ConfigError(
                f"{spec.path}: runs {ids[run.run_id].label} and {run.label} resolve to the same "
                "config"
            )
        ids[run.run_id] = run
        kept.append(run)
    return kept


# ----------------------------------------------------------------------------- matching

_DATA_KEYS = ("data.seq_len", "data.batch_size", "train.grad_accum", "train.steps",
              "train.train_bytes", "train.train_flops")


def _match(spec: SweepSpec, runs: list[PlannedRun]) -> None:
    """Compute and data matching within each group (paper Section 3: BPE Transformer reference)."""
    m = spec.match
    assert m is not None
    # tokenizer axes always split groups: each tokenizer's reference gets its own matched runs
    varied = {k for r in runs for k in r.axes}
    group_by = list(m.group_by) + [k for k in TOKENIZER_KEYS if k in varied and k not in m.group_by]
    groups: dict[tuple, list[PlannedRun]] = {}
    for run in runs:
        key = tuple(run.axes[k] if k in run.axes else _get(run.cfg, k) for k in group_by)
        groups.setdefault(key, []).append(run)
    for key, members in groups.items():
        gname = ",".join(f"{k}={v}" for k, v in zip(group_by, key))
        wanted = [m.reference] if isinstance(m.reference, str) else list(m.reference)
        present = {family_scale(r.cfg)[0] for r in members}
        ref_family = next((f for f in wanted if f in present), None)
        if ref_family is None:
            raise ConfigError(
                f"{spec.path}: match: group {gname} has no '{' or '.join(wanted)}' run")
        refs = [r for r in members if family_scale(r.cfg)[0] == ref_family]
        ref = refs[0]
        if any(to_dict(r.cfg.model) != to_dict(ref.cfg.model) for r in refs[1:]):
            raise ConfigError(
                f"{spec.path}: match: group {gname} has differing '{ref_family}' models;"
                " add the varied key to match.group_by"
            )
        if m.data:
            for run in members:
                for k in _DATA_KEYS:
                    if _get(run.cfg, k) != _get(ref.cfg, k):
                        raise ConfigError(
                            f"{spec.path}: match: run {run.label} differs from its reference"
                            f" {ref.label} in {k} ({_get(run.cfg, k)} vs {_get(ref.cfg, k)});"
                            " data matching needs equal bytes per batch and training bytes"
                        )
        if not m.compute:
            continue
        target = None
        for run in members:
            if family_scale(run.cfg)[0] == ref_family:
                continue
            try:
                info = _compute_match(ref.cfg, run.cfg, m)
            except ConfigError as e:
                raise ConfigError(f"{spec.path}: match: run {run.label}: {e}") from None
            run.cfg = dataclasses.replace(run.cfg, model=info.pop("model_cfg"))
            run.match = {"reference": ref.label, **info}
            target = info.get("target_flops_per_byte", target)
        for r in refs:
            r.match = {"reference": ref.label, "target_flops_per_byte": target,
                       "is_reference": True}
    for run in runs:
        if run.match is not None and run.match.get("is_reference") is None:
            run.match["is_reference"] = False
    # reference ids are filled in once hashes are known (see runner.write_plan)


GPT2_BYTES_PER_TOKEN = 4.6  # paper App. C: GPT-2 tokenizer on FineWeb-Edu
# the paper's Table 4: its Transformer's bytes per token (BPIC) with the Llama-3 tokenizer
LLAMA3_BYTES_PER_TOKEN = {"zh": 3.62, "code": 3.58}
_BPT_CACHE: dict[str, float] = {}


def bytes_per_token(cfg: RunConfig, override: float | dict | None = None) -> float:
    """Bytes per model token of a run's tokenizer (1 for byte models); measured per tokenizer
    (kind, vocabulary, model type) on the run's whole training split (embedded corpora) unless
    `override` gives it (one number, or a mapping from data.tokenizer to a number)."""
    d = cfg.data
    if d.tokenizer == "bytes":
        return 1.0
    if isinstance(override, dict):
        override = override.get(d.tokenizer)
    if override:
        return float(override)
    if d.tokenizer == "gpt2":
        return GPT2_BYTES_PER_TOKEN
    if d.source != "embedded":
        if d.tokenizer == "llama3" and d.domain in LLAMA3_BYTES_PER_TOKEN:
            return LLAMA3_BYTES_PER_TOKEN[d.domain]
        raise ConfigError(f"match.bytes_per_token: set it for tokenizer '{d.tokenizer}' on "
                          f"data.source '{d.source}' (measured only on embedded corpora)")
    key = config_hash(d)
    if key not in _BPT_CACHE:
        from hnetbench.data import corpus_documents, get_tokenizer
        from hnetbench.data.corpus import DataError
        from hnetbench.data.tokenizers import bytes_per_token as measure

        # the training split itself, whole: what the loader measures and the FLOP counter
        # uses for the realised FLOPs/byte (a val sample misjudged zh by 17%)
        try:
            _BPT_CACHE[key] = measure(get_tokenizer(d), corpus_documents(d, "train"))
        except DataError as e:
            raise ConfigError(f"match.bytes_per_token: {e}") from None
    return _BPT_CACHE[key]


def forward_flops_per_byte(cfg: RunConfig, override: float | dict | None = None) -> float:
    from hnetbench.flops import flops_per_byte

    rep = flops_per_byte(cfg.model, bytes_per_token(cfg, override), None, cfg.data.seq_len, False)
    return rep.forward_per_byte


def _compute_match(ref: RunConfig, cfg: RunConfig, m: MatchSpec) -> dict[str, Any]:
    """Resize `cfg`'s main network to `ref`'s FLOPs per byte; returns the new model config too."""
    from hnetbench.flops import flops_per_byte, main_depth, match_depth

    ref_bpt = bytes_per_token(ref, m.bytes_per_token)
    bpt = bytes_per_token(cfg, m.bytes_per_token)
    seq = cfg.data.seq_len
    comp = m.compression.get(family_scale(cfg)[0])
    model, err = match_depth(ref.model, cfg.model, ref_bpt, comp, seq, bpt, m.width, m.tolerance)
    return {
        "model_cfg": model,
        "target_flops_per_byte": forward_flops_per_byte(ref, m.bytes_per_token),
        "flops_per_byte": flops_per_byte(model, bpt, comp, seq, False).forward_per_byte,
        "compression": comp,
        "rel_error": round(err, 5),
        "ref_bytes_per_token": round(ref_bpt, 4),
        "main_depth": [main_depth(cfg.model), main_depth(model)],
        "main_width": [cfg.model.d_model[-1], model.d_model[-1]],
    }


def run_overrides(run: PlannedRun) -> dict:
    """The axis values of a run as a nested dict (for the plan file)."""
    out: dict = {}
    for key, value in run.axes.items():
        set_path(out, key.split("."), value)
    return out
