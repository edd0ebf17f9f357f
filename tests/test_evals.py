"""BPB, the lm-eval adapter, the shipped offline tasks, `hnetbench eval` and boundary pictures."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from hnetbench.config import DataConfig, resolve
from hnetbench.data import get_tokenizer, load_documents
from hnetbench.evals.bpb import evaluate_bpb, windows

TINY = ["model.vocab_size=257", "model.d_model=[32,48]", "model.d_intermediate=[0,96]",
        'model.layout=["m1",["T1"],"m1"]', "model.attn_num_heads=[2]", "model.attn_rotary_dim=[8]",
        "model.mamba_d_state=8", "model.mamba_headdim=16", "model.mamba_chunk_size=32",
        "data.seq_len=128", "data.batch_size=4", "train.steps=20", "train.ckpt_every=20",
        "train.eval_every=1000", "train.lr=3e-3", "train.log_every=10", "name=tiny",
        "eval.bpb_max_bytes=3000"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from hnetbench.train import train

    out = tmp_path_factory.mktemp("evals") / "run"
    train(resolve(overrides=TINY), out)
    return out


@pytest.fixture(scope="module")
def trained(run_dir):
    from hnetbench.train import load_checkpoint

    return load_checkpoint(run_dir)


@pytest.fixture(scope="module")
def bpe_tok():
    from hnetbench.data.tokenizers import train_bpe

    return train_bpe(load_documents("en", "train")[:40], 400)


# ----------------------------------------------------------------------------- bpb


def test_windows_score_each_target_once_with_context():
    for n, w, s in [(1, 4, 4), (2, 4, 4), (10, 4, 4), (50, 8, 3), (9, 8, 8), (100, 16, 5)]:
        scored = []
        for start, end, k in windows(n, w, s):
            assert 0 < end - 1 - start <= w and k <= end - 1 - start
            targets = list(range(start + 1, end))[-k:]
            scored += targets
            if start > 0:  # past the first window: at least w - s tokens of context
                assert all(t - start >= w - s for t in targets)
        assert scored == list(range(1, n))


def test_uniform_model_is_exactly_8_bpb(uniform_lm):
    tok = get_tokenizer(DataConfig())
    docs = load_documents("zh", "test")[:3] + ["héllo 👍🏽 wörld"]
    res = evaluate_bpb(uniform_lm(), tok, docs, seq_len=64, stride=24)
    n_bytes = sum(len(d.encode() if isinstance(d, str) else d) for d in docs)
    assert res["bytes"] == n_bytes == res["tokens"]
    assert res["bpb"] == pytest.approx(8.0, rel=1e-7)  # float32 logits
    assert res["ppl"] == pytest.approx(256.0)
    assert res["bytes_per_chunk"] == {}
    # every document costs 8 bits per byte: the interval over documents has no width
    assert res["ci95"]["n"] == len(docs)
    assert res["ci95"]["bpb"] == pytest.approx([8.0, 8.0], rel=1e-6)


def test_bpe_and_byte_models_score_the_same_bytes(uniform_lm, bpe_tok):
    byte_tok = get_tokenizer(DataConfig())
    docs = load_documents("en", "test")[:4]
    rb = evaluate_bpb(uniform_lm(256), byte_tok, docs, seq_len=128, stride=64, max_bytes=5000)
    rt = evaluate_bpb(uniform_lm(bpe_tok.vocab_size), bpe_tok, docs, 64, stride=32, max_bytes=5000)
    assert rb["bytes"] == rt["bytes"] == min(5000, sum(map(len, docs)))
    assert rt["tokens"] < rb["tokens"]  # BPE merges bytes, BOS excluded from both
    # uniform over V tokens: every scored token costs log2(V) bits, divided by the same bytes
    assert rt["bpb"] == pytest.approx(rt["tokens"] * math.log2(bpe_tok.vocab_size) / rt["bytes"])
    # documents compress differently under the BPE: a real interval around the ratio
    lo, hi = rt["ci95"]["bpb"]
    assert rt["ci95"]["n"] == 2 and lo < rt["bpb"] < hi  # 5000 bytes: the first 2 documents


def test_bpb_matches_the_models_own_loss(trained):
    """One window covering the document == the model's nats_sum on [BOS] + bytes."""
    model, _, tok = trained
    doc = load_documents("en", "test")[0][:300]
    ids = torch.tensor([[tok.bos_id] + tok.encode(doc)])
    with torch.no_grad():
        out = model(ids[:, :-1], targets=ids[:, 1:], doc_start=ids[:, :-1] == tok.bos_id)
    res = evaluate_bpb(model, tok, [doc], seq_len=512)
    assert res["bytes"] == len(doc) == out.n_targets
    assert res["nats"] == pytest.approx(float(out.nats_sum), rel=1e-5)
    # sliding windows give every byte less context: a different, still finite, number
    short = evaluate_bpb(model, tok, [doc], seq_len=64, stride=16)
    assert short["bytes"] == len(doc) and math.isfinite(short["bpb"])
    assert 1.0 < res["bpb"] < 8.0 and set(res["bytes_per_chunk"]) == {"stage0"}


# ----------------------------------------------------------------------------- adapter


def test_adapter_boundaries_byte_and_bpe(uniform_lm, bpe_tok):
    from hnetbench.evals.lm_adapter import HNetBenchLM
    from lm_eval.api.instance import Instance

    def req(ctx, cont):
        return Instance("loglikelihood", {}, (ctx, cont), 0)

    byte = HNetBenchLM(model=uniform_lm(256), tokenizer=get_tokenizer(DataConfig()))
    reqs = [req("The cat", " sat"), req("", "x"), req("你好", "世界"), req("a" * 9000, "bc")]
    for (ll, greedy), n in zip(byte.loglikelihood(reqs), [4, 1, 6, 2]):
        assert ll == pytest.approx(-n * math.log(256)) and greedy is False
    assert byte._pair("The cat ", "sat") == ([256] + list(b"The cat "), list(b"sat"))
    bpe = HNetBenchLM(model=uniform_lm(bpe_tok.vocab_size), tokenizer=bpe_tok)
    ctx, cont = bpe._pair("The cat ", "sat")  # joint encoding: " sat" straddles the seam
    assert ctx[1:] + cont == bpe_tok.encode(b"The cat sat")
    assert bpe_tok.decode(ctx[1:]) == b"The cat" and bpe_tok.decode(cont) == b" sat"
    (ll, _), = bpe.loglikelihood([req("The cat ", "sat")])
    assert ll == pytest.approx(-len(cont) * math.log(bpe_tok.vocab_size))
    (roll,) = bpe.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("abc " * 700,), 0)])
    n_tok = len(bpe_tok.encode("abc " * 700))
    assert roll == pytest.approx(-n_tok * math.log(bpe_tok.vocab_size))


def test_adapter_generate_until(trained):
    from hnetbench.evals.lm_adapter import HNetBenchLM
    from lm_eval.api.instance import Instance

    model, _, tok = trained
    lm = HNetBenchLM(model=model, tokenizer=tok, batch_size=2)
    kw = {"until": ["\n"], "max_gen_toks": 12, "do_sample": False}
    reqs = [Instance("generate_until", {}, (p, dict(kw)), 0) for p in ["The ", "In the", "A"]]
    outs = lm.generate_until(reqs)
    assert len(outs) == 3 and all(isinstance(o, str) and "\n" not in o for o in outs)
    assert all(len(o.encode()) <= 12 for o in outs)
    assert lm.generate_until(reqs) == outs  # greedy is deterministic
    direct = model.generate([[tok.bos_id] + tok.encode("The ")], 12, greedy=True)[0]
    assert tok.decode(direct).decode("utf-8", "replace").split("\n")[0] == outs[0]


def test_uniform_model_scores_chance_on_a_shipped_task(uniform_lm):
    """Ties everywhere (equal-length candidates): lm-eval picks choice 0, so accuracy is the
    share of gold index 0 -- exactly 0.25 over the whole task, whose positions are balanced."""
    import lm_eval
    from hnetbench.evals.harness import TASKS_DIR, task_manager
    from hnetbench.evals.lm_adapter import HNetBenchLM

    lm = HNetBenchLM(model=uniform_lm(256), tokenizer=get_tokenizer(DataConfig()))
    res = lm_eval.simple_evaluate(model=lm, tasks=["hnb_cont_en"], limit=40, bootstrap_iters=0,
                                  task_manager=task_manager(["hnb_cont_en"]))
    rows = [json.loads(x) for x in (TASKS_DIR / "hnb_cont_en.jsonl").read_text().splitlines()]
    share0 = sum(r["label"] == 0 for r in rows[:40]) / 40
    assert res["results"]["hnb_cont_en"]["acc,none"] == pytest.approx(share0)
    assert sum(r["label"] == 0 for r in rows) / len(rows) == 0.25


def test_run_tasks_skips_lm_evals_environment_report(uniform_lm, monkeypatch):
    """simple_evaluate appends torch's collect_env report (a `pip list` and more: ~2 s a call)
    to results run_tasks does not keep; run_tasks skips it and scores the same."""
    import lm_eval
    import lm_eval.evaluator as ev
    from hnetbench.evals.harness import run_tasks, task_manager
    from hnetbench.evals.lm_adapter import HNetBenchLM
    from torch.utils import collect_env

    calls: list[int] = []
    monkeypatch.setattr(collect_env, "get_pretty_env_info", lambda: calls.append(1) or "env")
    lm = HNetBenchLM(model=uniform_lm(256), tokenizer=get_tokenizer(DataConfig()))
    direct = lm_eval.simple_evaluate(model=lm, tasks=["hnb_cont_en"], limit=8, bootstrap_iters=0,
                                     task_manager=task_manager(["hnb_cont_en"]))
    assert calls == [1] and direct["pretty_env_info"] == "env"  # what run_tasks skips
    original = ev.add_env_info
    rows = run_tasks(lm, ["hnb_cont_en"], limit=8)
    assert calls == [1] and ev.add_env_info is original
    assert rows["hnb_cont_en"]["acc"] == direct["results"]["hnb_cont_en"]["acc,none"]


# ----------------------------------------------------------------------------- tasks


def test_shipped_tasks_are_well_formed():
    from hnetbench.evals.harness import TASKS_DIR, offline_tasks

    names = offline_tasks()
    for d in ("en", "zh", "code", "dna"):
        assert f"hnb_cont_{d}" in names
        rows = [json.loads(x) for x in (TASKS_DIR / f"hnb_cont_{d}.jsonl").read_text().splitlines()]
        assert len(rows) == 200
        for r in rows:
            lens = {len(c.encode("utf-8")) for c in r["choices"]}
            assert len(r["choices"]) == 4 == len(set(r["choices"])) and lens == {32}
    for t in ("goal_inference", "step_inference", "social_iqa"):
        rows = (TASKS_DIR / f"hnb_bb_{t}.jsonl").read_text().splitlines()
        assert 0 < len(rows) <= 300
    assert "Apache" in (TASKS_DIR / "SOURCES.md").read_text()


def test_continuation_task_builder_is_deterministic():
    from hnetbench.evals.build_tasks import continuation_items

    docs = load_documents("zh", "test")
    a = continuation_items(docs, "seed-x", n_items=20)
    assert a == continuation_items(docs, "seed-x", n_items=20)
    for it in a:
        assert any((it["context"] + it["choices"][it["label"]]).encode() in d for d in docs)


def test_tasks_load_from_a_copied_directory(tmp_path, monkeypatch):
    """YAML paths resolve relative to the YAML (as after `pip install`), not to the cwd."""
    from hnetbench.evals.harness import TASKS_DIR
    from lm_eval.tasks import TaskManager

    shutil.copytree(TASKS_DIR, tmp_path / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    tm = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False)
    task = tm.load(["hnb_cont_code"])["tasks"]["hnb_cont_code"]
    assert len(list(task.eval_docs)) == 200


# ----------------------------------------------------------------------------- commands


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "hnetbench", *args], capture_output=True,
                          text=True, timeout=600, env=env)


def test_eval_lm_real_lm_eval_run_over_shipped_tasks(run_dir):
    """simple_evaluate through `hnetbench eval lm` (a subprocess) with a trained H-Net."""
    from hnetbench.evals.harness import offline_tasks

    ours = [t for t in offline_tasks() if t not in ("hnb_cont", "hnb_bigbench")]
    r = _cli("eval", "lm", "--checkpoint", str(run_dir), "--tasks", ",".join(ours), "--limit", "6")
    assert r.returncode == 0, r.stderr[-2000:]
    tasks = json.loads((run_dir / "eval.json").read_text())["tasks"]
    assert set(tasks) == set(ours) and len(ours) == 7
    for name, m in tasks.items():
        assert 0.0 <= m["acc"] <= 1.0 and (m["acc"] * 6).is_integer()
        assert f"{name}: acc " in r.stdout


@pytest.mark.slow
def test_unavailable_lm_eval_task_is_one_line_and_the_rest_run():
    """lm-eval's own task names pass through; one whose data is not available offline is
    reported in one line and skipped (indexing lm-eval's 10k+ built-in tasks is the slow part);
    an unknown name is an error naming it."""
    code = ("from hnetbench.evals.harness import load_tasks\n"
            "try:\n    load_tasks(['hnb_cont_en', 'no_such_task'])\n"
            "except ValueError as e:\n    print('error:', e)\n"
            "print(sorted(load_tasks(['piqa', 'hnb_cont_en'])))")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == "['hnb_cont_en']"
    assert sum(x.startswith("task piqa: data not available offline") for x in lines) == 1
    assert sum(x.startswith("error: unknown task 'no_such_task'") for x in lines) == 1


def test_eval_bpb_cli_merges_eval_json(run_dir, trained, capsys):
    model, run_cfg, tok = trained
    r = _cli("eval", "bpb", "--checkpoint", str(run_dir / "ckpt"), "--domain", "zh",
             "--split", "test", "--max-bytes", "2000")
    assert r.returncode == 0, r.stderr[-2000:]
    from hnetbench.cli import main

    assert main(["eval", "bpb", "--checkpoint", str(run_dir), "--max-bytes", "2000"]) == 0
    data = json.loads((run_dir / "eval.json").read_text())
    want = evaluate_bpb(model, tok, load_documents("zh", "test"), 128, stride=64, max_bytes=2000)
    assert data["bpb"]["zh/test"] == pytest.approx(want["bpb"], rel=1e-6)
    assert "en/val" in data["bpb"] and "stage0" in data["bytes_per_chunk"]
    assert main(["eval", "bpb", "--checkpoint", str(run_dir), "--domain", "klingon"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "klingon" in err[0]


def test_merge_eval_json_keeps_other_parts(tmp_path):
    from hnetbench.evals.commands import merge_eval_json

    p = tmp_path / "eval.json"
    merge_eval_json(p, {"bpb": {"en/val": 1.5}, "tasks": {"a": {"acc": 0.5}}})
    merge_eval_json(p, {"bpb": {"zh/test": 2.0}, "tasks": {"a": {"acc_norm": 0.4}}})
    assert json.loads(p.read_text()) == {"bpb": {"en/val": 1.5, "zh/test": 2.0},
                                         "tasks": {"a": {"acc": 0.5, "acc_norm": 0.4}}}


# ----------------------------------------------------------------------------- boundaries


def test_boundary_pictures(run_dir, trained, tmp_path):
    from hnetbench.cli import build_parser
    from hnetbench.evals.boundaries import _char_chunks, chunk_starts
    from hnetbench.evals.viz_commands import main as viz_main
    from matplotlib import image

    model, _, tok = trained
    text = "中文 and emoji 👍🏽 text"
    stages = chunk_starts(model, tok, text)
    assert len(stages) == 1 and all(0 <= s < len(text.encode()) for s in stages[0])
    assert _char_chunks("ab中c", [0, 2, 3]) == [1, 1, 3, 3]  # boundary inside 中 counts for it
    args = build_parser().parse_args(["viz", "boundaries", "--checkpoint", str(run_dir),
                                      "--text", text, "--perturb", "repeat", "--out",
                                      str(tmp_path)])
    assert viz_main(args) == 0
    img = image.imread(tmp_path / "boundaries_text.png")
    assert img.shape[0] > 100 and img.shape[1] > 400 and img.shape[2] in (3, 4)
    assert img[..., :3].std() > 0.05  # not blank
    page = (tmp_path / "boundaries_text.html").read_text(encoding="utf-8")
    assert "👍" in page and "🏽" in page and "(repeat)" in page and page.count("stage 0") == 2


def test_vocab_without_bos_is_a_one_line_error():
    from hnetbench.models import build_model

    cfg = resolve(overrides=[o for o in TINY if not o.startswith("model.vocab_size")]
                  + ["model.vocab_size=256"])
    model = build_model(cfg.model)  # vocab 256: no room for the byte tokenizer's BOS (256)
    with pytest.raises(ValueError, match="model.vocab_size 256 is smaller"):
        evaluate_bpb(model, get_tokenizer(DataConfig()), [b"abc"], seq_len=8)


def test_registered_model_from_model_args(run_dir):
    """`--model hnetbench --model_args checkpoint=...` as lm-eval itself constructs it."""
    import hnetbench.evals.lm_adapter  # noqa: F401 (registers "hnetbench")
    import lm_eval
    from hnetbench.evals.harness import task_manager

    res = lm_eval.simple_evaluate(model="hnetbench", model_args=f"checkpoint={run_dir}",
                                  tasks=["hnb_bb_social_iqa"], limit=4, bootstrap_iters=0,
                                  batch_size=2, task_manager=task_manager(["hnb_bb_social_iqa"]))
    acc = res["results"]["hnb_bb_social_iqa"]["acc,none"]
    assert 0.0 <= acc <= 1.0 and (acc * 4).is_integer()
