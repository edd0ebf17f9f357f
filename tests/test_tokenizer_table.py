"""The report's tokenizer table: bytes/token, BPB and accuracy per domain and tokenizer."""

from __future__ import annotations

import json

import pytest
import yaml
from hnetbench.config import DataConfig
from hnetbench.data import get_tokenizer, load_documents
from hnetbench.data.tokenizers import bytes_per_token, train_bpe
from hnetbench.evals.tokenizer_table import COLUMNS, tokenizer_table


def _run(root, run_id: str, config: dict, ev: dict) -> None:
    d = root / run_id
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    (d / "eval.json").write_text(json.dumps(ev))


def test_table_from_run_dirs_and_records(tmp_path):
    tj = tmp_path / "tokenizer.json"
    tj.write_text(train_bpe(load_documents("code", "train")[:8], 300)._tok.to_str())
    sweep = tmp_path / "sweep"
    ref_data = {"domain": "code", "tokenizer": "hf", "tokenizer_path": str(tj)}
    _run(sweep, "ref1", {"preset": "transformer-bpe@cpu-tiny", "data": ref_data,
                         "model": {"vocab_size": 300}},
         {"bpb": {"code/test": 1.5, "code/val": 1.6},
          "tasks": {"hnb_cont_code": {"acc,none": 0.5, "acc_stderr,none": 0.1}}})
    _run(sweep, "hnet1", {"preset": "hnet-1stage@cpu-tiny", "data": {"domain": "code"},
                          "model": {"vocab_size": 257}},
         {"bpb": {"code/test": 1.4}, "bytes_per_chunk": {"stage1": 5.25},
          "tasks": {"hnb_cont_code": {"acc_norm,none": 0.625, "ci95": {
              "n": 16, "method": "Wilson score", "acc_norm": [0.386, 0.815]}}}})
    plan = {"runs": [
        {"run_id": "ref1", "match": {"reference": "tokenizer=hf,transformer",
                                     "is_reference": True}},
        {"run_id": "hnet1", "match": {"reference": "tokenizer=hf,transformer",
                                      "is_reference": False, "ref_bytes_per_token": 2.1}}]}
    (sweep / "plan.json").write_text(json.dumps(plan))
    record = {"run_id": "zh-bpe", "config": {"preset": "transformer-bpe@cpu-tiny",
                                             "data": {"domain": "zh", "tokenizer": "bpe",
                                                      "bpe_vocab_size": 1536}},
              "summary": {"bytes_per_token": 2.5}, "eval": {"bpb": {"zh/val": 2.0}}}
    df = tokenizer_table([sweep / "hnet1", sweep / "ref1", record])
    assert list(df.columns) == COLUMNS and len(df) == 3
    assert list(df["domain"]) == ["zh", "code", "code"]  # domain order, tokenizers before bytes
    zh, ref, hnet = (df.iloc[i] for i in range(3))
    assert (zh["tokenizer"], zh["bytes_per_token"], zh["bpb"]) == ("bpe1536", 2.5, 2.0)
    assert zh["accuracy"] is None or zh["accuracy"] != zh["accuracy"]  # no task: missing
    tok = get_tokenizer(DataConfig(**ref_data))
    assert ref["tokenizer"] == "hf" and ref["vocab_size"] == 300
    assert ref["bytes_per_token"] == pytest.approx(
        bytes_per_token(tok, load_documents("code", "val")), abs=1e-4)  # measured, not given
    assert (ref["bpb"], ref["accuracy"], ref["task"]) == (1.5, 0.5, "hnb_cont_code:acc")
    assert (hnet["tokenizer"], hnet["bytes_per_token"], hnet["bytes_per_chunk"]) == (
        "bytes", 1.0, 5.25)
    assert (hnet["accuracy"], hnet["matched_to"]) == (0.625, "tokenizer=hf,transformer")
    assert hnet["reference_bytes_per_token"] == 2.1
    assert (hnet["acc_lo"], hnet["acc_hi"], hnet["n_items"]) == (0.386, 0.815, 16)  # eval.json's
    assert tokenizer_table([]).empty


def test_report_shows_the_tokenizer_table_only_when_the_sweep_varies_it(tmp_path):
    from hnetbench.reports.report import EXTRA_TABLES
    from hnetbench.reports.runs import Run

    sweep = tmp_path / "sweep"
    runs = []
    for rid, vocab, bpb in (("bpe1536", 1536, 2.4), ("bpe4096", 4096, 2.1)):
        cfg = {"preset": "transformer-bpe@cpu-tiny", "data": {
            "domain": "en", "tokenizer": "bpe", "bpe_vocab_size": vocab}}
        _run(sweep, rid, cfg, {"bpb": {"en/test": bpb}})
        runs.append(Run(run_id=rid, path=sweep / rid, config=cfg,
                        summary={"bytes_per_token": 3.0}))
    builder = EXTRA_TABLES["tokenizers"]
    table = builder(runs)
    assert table is not None and len(table.rows) == 2
    assert sorted(table.value(i, "bpb") for i in range(2)) == [2.1, 2.4]
    assert "bpe4096" in table.to_markdown()
    assert builder(runs[:1]) is None  # one tokenizer: no axis, no table
