"""`sweep run SPEC --check` preflight, its automatic run before Slurm submission, the paper-L
spec trained end to end from a tiny prepared corpus (reduced width, a few steps), and
`reproduce`'s free-disk check."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from hnetbench.cli import main
from hnetbench.config import DataConfig
from hnetbench.data.prepare import prepare
from hnetbench.sweeps.reproduce import SPECS


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HNETBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "hnb-cache"))
    monkeypatch.delenv("HNETBENCH_GPT2_BPE", raising=False)


def _tiny_corpus(folder: Path, n_docs: int = 300) -> str:
    rng = random.Random(0)
    words = "the a hierarchical model learns to chunk bytes into words and then ideas".split()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "docs.jsonl", "w") as f:
        for i in range(n_docs):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(20, 200)))
            f.write(json.dumps({"text": f"{i}: {text}."}) + "\n")
    return str(folder / "docs.jsonl")


def _prepare_tiny(tmp_path: Path) -> Path:
    """A prepared folder laid out like the paper's: OUT/bytes/ (what `data prepare` writes)."""
    src = _tiny_corpus(tmp_path / "raw")
    out = tmp_path / "prepared"
    prepare(DataConfig(source="files", path=src), out / "bytes", workers=1, log=None)
    return out


def _write(path: Path, spec: dict) -> str:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def _check(capsys, spec_path: str, *extra: str) -> tuple[int, list[str]]:
    rc = main(["sweep", "run", spec_path, "--check", *extra])
    return rc, capsys.readouterr().out.strip().splitlines()


def test_check_reports_each_problem_on_one_line_and_exits_2(tmp_path, capsys):
    prepared = _prepare_tiny(tmp_path)
    spec = {
        "name": "chk",
        "base": {"data": {"source": "prepared", "path": str(prepared), "seq_len": 128,
                          "batch_size": 6},
                 "train": {"train_bytes": 10_000_000}},  # more than the tiny corpus holds
        "axes": {"grid": {"preset": ["hnet-1stage@cpu-tiny"]},
                 "zip": [{"data.path": [str(prepared), str(tmp_path / "missing")]}]},
        "slurm": {"nodes": 1, "gpus_per_node": 4},
    }
    rc, lines = _check(capsys, _write(tmp_path / "s.yaml", spec), "--executor", "slurm")
    assert rc == 2
    text = "\n".join(lines)
    # the first run: data present but smaller than its budget; the second: not prepared
    assert f"path={prepared}: data:" in text and "less than the run's budget" in text
    assert "missing/bytes: not prepared (run `hnetbench data prepare" in text
    assert "data.batch_size 6 is not a multiple of the job's 4 ranks" in text
    assert lines[-1] == f"check: chk: 2 runs, {len(lines) - 1} problem(s)"
    assert all(line.startswith("check: ") for line in lines)
    # a missing GPT-2 file is reported, not a traceback
    spec["base"]["data"].update(tokenizer="gpt2", tokenizer_path=str(tmp_path / "none.tiktoken"))
    spec["axes"] = {"grid": {"train.seed": [0]}}
    rc, lines = _check(capsys, _write(tmp_path / "g.yaml", spec))
    assert rc == 2 and "none.tiktoken: GPT-2 BPE file not found" in lines[0]
    # fixed: enough data for the budget, a batch that divides
    spec = {"name": "ok", "base": {"data": {"source": "prepared", "path": str(prepared),
                                            "seq_len": 128, "batch_size": 4},
                                   "train": {"train_bytes": 4096}},
            "axes": {"grid": {"preset": ["hnet-1stage@cpu-tiny"]}}}
    rc, lines = _check(capsys, _write(tmp_path / "ok.yaml", spec))
    assert rc == 0 and lines == ["check: ok: 1 runs, no problems found"]


def test_a_slurm_submission_is_checked_first_and_nothing_is_submitted(tmp_path, capsys):
    spec = {"name": "sub", "base": {"data": {"source": "prepared", "path": str(tmp_path / "no")}},
            "axes": {"grid": {"preset": ["hnet-1stage@cpu-tiny"]}}}
    rc = main(["sweep", "run", _write(tmp_path / "s.yaml", spec), "--executor", "slurm",
               "--results", str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert rc == 2 and "no/bytes: not prepared" in out
    assert not (tmp_path / "results").exists()  # no plan, no jobs.json: nothing submitted


@pytest.mark.slow
def test_paper_L_spec_trains_from_a_tiny_prepared_corpus(tmp_path, capsys):
    """paper-L.yaml as shipped, with the prepared folder swapped for a tiny one, the two byte-level
    H-Nets at reduced width (paper-L layouts kept), CPU, a few steps, local executor."""
    spec = yaml.safe_load((SPECS / "paper-L.yaml").read_text())
    assert spec["base"]["data"]["source"] == "prepared"  # the paper specs read prepared shards
    prepared = _prepare_tiny(tmp_path)
    spec["base"]["data"].update(path=str(prepared), seq_len=128, batch_size=2)
    spec["base"]["train"].update(train_bytes=3 * 2 * 128, device="cpu", dtype="fp32",
                                 ckpt_every=2, eval_every=0, log_every=1, eval_batches=1)
    spec["base"]["model"] = {"mamba_d_state": 8, "mamba_headdim": 8, "mamba_chunk_size": 32}
    spec["base"]["eval"] = {"bpb_max_bytes": 512}
    spec["axes"] = {"zip": [{
        "preset": ["hnet-1stage@paper-L", "hnet-2stage@paper-L"],
        "model.d_model": [[16, 24], [16, 16, 24]],
        "model.d_intermediate": [[0, 32], [0, 32, 48]],
        "model.attn_num_heads": [[2, 2], [2, 2, 2]],
        "model.attn_rotary_dim": [[4, 6], [4, 4, 6]],
    }]}
    spec.pop("match")  # the GPT-2 reference is left out (no GPT-2 file offline)
    spec["eval"] = {"bpb": True, "splits": ["val"], "tasks": [], "robustness": False}
    path = _write(tmp_path / "paper-L-tiny.yaml", spec)
    assert _check(capsys, path)[0] == 0
    results = tmp_path / "results"
    rc = main(["sweep", "run", path, "--results", str(results), "--max-parallel", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    runs = [d for d in (results / "paper-L").iterdir() if (d / "summary.json").exists()]
    assert len(runs) == 2
    for rd in runs:
        summary = json.loads((rd / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["steps"] == 3
        assert 0 < summary["bytes_seen"] <= 3 * 2 * 128  # real bytes only (BOS targets excluded)
        cfg = yaml.safe_load((rd / "config.yaml").read_text())
        assert cfg["data"]["source"] == "prepared" and cfg["data"]["path"] == str(prepared)
        assert cfg["model"]["layout"][1] in (["T22"], ["T1m4", ["T26"], "m4T1"])


def test_reproduce_refuses_a_disk_too_small_with_one_line(tmp_path: Path, monkeypatch, capsys):
    """The cpu preset checks free space on the results' disk before any run starts (a full disk
    mid-sweep fails every job and the report alike): one line naming the folder and sizes."""
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 30, 10 << 30, 200 << 20))
    results = tmp_path / "not-yet" / "results"
    rc = main(["reproduce", "--results", str(results)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and str(results) in err[0], err
    assert "200 MiB free" in err[0] and "1024 MiB" in err[0], err
    assert not results.exists()  # nothing started
