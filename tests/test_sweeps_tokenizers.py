"""The tokenizer axis of sweeps: tokenized runs read it, byte runs are matched per reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hnetbench.config import ConfigError
from hnetbench.sweeps.spec import bytes_per_token, expand, load_spec

SPECS = Path(__file__).resolve().parents[1] / "sweeps" / "specs"
BASE = {"data": {"domain": "en", "seq_len": 256, "batch_size": 4},
        "train": {"train_bytes": 100_000}}


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HNETBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "hnb-cache"))


def _spec(tmp_path: Path, grid: dict, **match) -> Path:
    spec = {"name": "tok", "base": BASE, "axes": {"grid": grid},
            "match": {"group_by": ["data.domain", "scale"], "reference": "transformer-bpe",
                      "tolerance": 0.05, "width": True, **match}}
    p = tmp_path / "tok.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def test_tokenizer_axes_set_tokenized_runs_and_pick_byte_runs_reference(tmp_path):
    grid = {"preset": ["transformer-bpe@cpu-tiny", "hnet-1stage@cpu-tiny"],
            "data.tokenizer": ["bpe", "sentencepiece"], "data.bpe_vocab_size": [1024, 4096]}
    # given bytes/token per tokenizer: no tokenizer is trained for this plan
    runs = expand(load_spec(_spec(tmp_path, grid,
                                  bytes_per_token={"bpe": 3.0, "sentencepiece": 2.5})))
    refs = [r for r in runs if r.cfg.preset.startswith("transformer")]
    hnets = [r for r in runs if r.cfg.preset.startswith("hnet")]
    assert len(refs) == 4
    for r in refs:  # the tokenizer axes are the reference's input, its vocabulary follows
        assert r.cfg.data.tokenizer == r.axes["data.tokenizer"]
        assert r.cfg.model.vocab_size == r.cfg.data.bpe_vocab_size == r.axes["data.bpe_vocab_size"]
        assert r.match["is_reference"]
    for h in hnets:  # byte-level input whatever the axes; matched to the axes' reference
        assert h.cfg.data.tokenizer == "bytes" and h.cfg.model.vocab_size == 257
        ref = next(r for r in refs if r.label == h.match["reference"])
        assert ref.axes["data.tokenizer"] == h.axes["data.tokenizer"]
        assert ref.axes["data.bpe_vocab_size"] == h.axes["data.bpe_vocab_size"]
        want = {"bpe": 3.0, "sentencepiece": 2.5}[h.axes["data.tokenizer"]]
        assert h.match["ref_bytes_per_token"] == want
        assert abs(h.match["flops_per_byte"] / h.match["target_flops_per_byte"] - 1) <= 0.05
    # four references at different FLOPs per byte: the H-Nets differ, or were planned once
    planned = {h.run_id for h in hnets}
    also = sum(len(h.match.get("also_references", [])) for h in hnets)
    assert len(planned) == len(hnets) and len(hnets) + also == 4
    targets = {round(r.match["target_flops_per_byte"]) for r in refs}
    assert len(targets) == 4


def test_identical_matched_byte_runs_are_planned_once(tmp_path):
    grid = {"preset": ["transformer-bpe@cpu-tiny", "hnet-1stage@cpu-tiny"],
            "data.tokenizer": ["bpe", "sentencepiece"]}
    # same bytes/token and vocabulary: both references need the same H-Net
    runs = expand(load_spec(_spec(tmp_path, grid, bytes_per_token=3.0)))
    hnets = [r for r in runs if r.cfg.preset.startswith("hnet")]
    assert len(runs) == 3 and len(hnets) == 1
    assert len(hnets[0].match["also_references"]) == 1


def test_bytes_per_token_measured_per_reference(tmp_path):
    grid = {"preset": ["transformer-bpe@cpu-tiny", "hnet-1stage@cpu-tiny"],
            "data.bpe_vocab_size": [300, 1024]}
    runs = expand(load_spec(_spec(tmp_path, grid)))
    refs = {r.axes["data.bpe_vocab_size"]: r for r in runs if r.match["is_reference"]}
    hnets = {r.axes["data.bpe_vocab_size"]: r for r in runs if not r.match["is_reference"]}
    bpt = {v: bytes_per_token(refs[v].cfg) for v in refs}
    assert 1.5 < bpt[300] < bpt[1024]  # a larger vocabulary compresses more
    for v, h in hnets.items():
        assert h.match["ref_bytes_per_token"] == round(bpt[v], 4)
    assert hnets[300].match["target_flops_per_byte"] != hnets[1024].match["target_flops_per_byte"]


def test_llama3_reference_uses_papers_bytes_per_token_off_the_embedded_corpora(tmp_path):
    runs = expand(load_spec(SPECS / "chinese-code.yaml"))
    refs = [r for r in runs if r.cfg.preset.startswith("transformer")]
    assert {r.cfg.data.tokenizer for r in refs} == {"llama3"}
    assert {r.cfg.model.vocab_size for r in refs} == {128256}
    byte_runs = [r for r in runs if not r.cfg.preset.startswith("transformer")]
    assert {r.cfg.data.tokenizer for r in byte_runs} == {"bytes"}
    assert {(r.cfg.data.domain, r.match["ref_bytes_per_token"]) for r in byte_runs} == {
        ("zh", 3.62), ("code", 3.58)}  # the paper's Table 4 BPIC of its Llama-3 Transformer


def test_tokenizer_axis_errors_are_one_line(tmp_path):
    grid = {"preset": ["transformer-bpe@cpu-tiny", "hnet-1stage@cpu-tiny"],
            "data.tokenizer": ["hf"]}
    with pytest.raises(ConfigError) as e:
        expand(load_spec(_spec(tmp_path, grid, bytes_per_token=3.0)))
    assert "set data.tokenizer_path" in str(e.value) and "\n" not in str(e.value)
    assert "tok.yaml: run tokenizer=hf,transformer-bpe@cpu-tiny: data.tokenizer hf" in str(e.value)


def test_tokenizers_preset_expands_matched():
    """The preset (bytes/token given here, measured in the real sweep): four domains, BPE and
    SentencePiece unigram at two vocabulary sizes, each with its own matched 1-stage H-Net."""
    spec = load_spec(SPECS / "tokenizers.yaml")
    assert spec.axes.zip[0]["data.domain"] == ["en", "en", "zh", "zh", "code", "code", "dna", "dna"]
    spec.match.bytes_per_token = {"bpe": 3.0, "sentencepiece": 2.6}
    runs = expand(spec)
    refs = [r for r in runs if r.match["is_reference"]]
    assert len(refs) == 16 and {r.cfg.data.sp_model_type for r in refs} == {"unigram"}
    assert {(r.cfg.data.domain, r.cfg.data.tokenizer, r.cfg.model.vocab_size) for r in refs} == {
        (d, t, v) for t in ("bpe", "sentencepiece")
        for d, v in zip(*spec.axes.zip[0].values())}
    hnets = [r for r in runs if not r.match["is_reference"]]
    assert {r.cfg.preset for r in hnets} == {"hnet-1stage@cpu-tiny"}
    assert len(hnets) + sum(len(h.match.get("also_references", [])) for h in hnets) == 16
    for h in hnets:
        assert abs(h.match["rel_error"]) <= spec.match.tolerance
