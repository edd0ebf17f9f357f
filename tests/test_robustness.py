"""Perturbations (Table 3 / BLT protocol), the robustness score, perturbed lm-eval task variants,
and a real end-to-end robustness run through lm-eval with a small trained H-Net."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hnetbench.evals.perturb import PERTURBATIONS, PerturbConfig, graphemes, perturb
from hnetbench.evals.robustness import perturbed_task, robustness_score, table
from hypothesis import given, settings
from hypothesis import strategies as st

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "我们今天去公园散步，天气很好。",
    "def f(x):\n    return x * 2  # 🙂👍🏽 emoji",
    "ACGTTGCAACGT",
    "",
]


def is_subsequence(small: str, big: str) -> bool:
    it = iter(big)
    return all(c in it for c in small)


# ----------------------------------------------------------------------------- perturbations


@pytest.mark.parametrize("name", PERTURBATIONS)
@pytest.mark.parametrize("text", TEXTS)
def test_deterministic_and_valid_utf8(name, text):
    a, b = perturb(text, name), perturb(text, name)
    assert a == b
    assert a.encode("utf-8").decode("utf-8") == a  # never splits a character
    # in a fresh interpreter (different hash seed) the result is the same
    code = f"from hnetbench.evals.perturb import perturb; print(ascii(perturb({text!r}, {name!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin",
                              **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}},
                         check=True)
    assert out.stdout.strip() == ascii(a)


def test_seed_changes_random_perturbations():
    t = TEXTS[0] * 3
    for name in ("drop", "randomcase", "repeat"):
        assert perturb(t, name, PerturbConfig(seed=0)) != perturb(t, name, PerturbConfig(seed=1))


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80))
def test_properties(text):
    up = perturb(text, "uppercase")
    assert perturb(up, "uppercase") == up  # idempotent
    gs = graphemes(text)  # perturbations act on grapheme clusters
    dropped = perturb(text, "drop")
    assert is_subsequence(graphemes(dropped), gs) or is_subsequence(dropped, text)
    assert is_subsequence(dropped, text)
    rep = perturb(text, "repeat")
    assert is_subsequence(text, rep)
    assert len(text) <= len(rep) <= 4 * len(text)
    rc = perturb(text, "randomcase")
    assert rc.upper() == text.upper()  # only case changes
    ant = perturb(text, "antspeak")
    assert ant == " ".join(graphemes(text.upper()))
    for s in (up, dropped, rep, rc, ant):
        s.encode("utf-8")


def test_specific_formats():
    assert perturb("Hi you", "antspeak") == "H I   Y O U"
    assert perturb("abc", "uppercase") == "ABC"
    rc = perturb("abcdefghij", "randomcase")
    assert sum(c.isupper() for c in rc) == 5 and rc.lower() == "abcdefghij"
    zh = "我们今天去公园散步"
    assert perturb(zh, "uppercase") == zh
    assert len(perturb(zh, "drop", PerturbConfig(drop_frac=0.5))) == len(zh) - round(4.5)
    emoji = "👍🏽🙂" * 5
    assert is_subsequence(perturb(emoji, "drop"), emoji)
    assert is_subsequence(emoji, perturb(emoji, "repeat", PerturbConfig(repeat_frac=1.0)))


def test_config_overrides_and_errors():
    cfg = PerturbConfig.from_overrides(["drop_frac=0.3", "repeat_max=3", "seed=7",
                                        "randomcase_lower_rest=true"])
    assert (cfg.drop_frac, cfg.repeat_max, cfg.seed, cfg.randomcase_lower_rest) == (0.3, 3, 7, True)
    assert perturb("ABCDEFGH", "randomcase", cfg).upper() == "ABCDEFGH"
    with pytest.raises(ValueError, match="drop_frac"):
        PerturbConfig(drop_frac=1.5)
    with pytest.raises(ValueError, match="key=value"):
        PerturbConfig.from_overrides(["nope=1"])
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb("x", "shout")


# ----------------------------------------------------------------------------- score


def test_robustness_score():
    assert robustness_score(0.25, 0.5) == pytest.approx(0.0)
    assert robustness_score(0.5, 0.5) == pytest.approx(100.0)
    assert robustness_score(0.375, 0.5) == pytest.approx(50.0)
    assert robustness_score(0.2, 0.5) == pytest.approx(-20.0)
    # paper Table 3, L Transformer: avg 30.9 -> score 20.2 implies clean ~ 54.2
    assert robustness_score(0.309, 0.542) == pytest.approx(20.2, abs=0.1)
    assert robustness_score(0.5, 0.25) is None  # clean at chance: undefined
    assert robustness_score(0.5, 0.2) is None
    k3 = 1 / 3
    assert robustness_score(k3 + 0.1, k3 + 0.2, chance=k3) == pytest.approx(50.0)
    csv_text, md = table({"t": {"clean": 0.25, "drop": 0.3, "avg": 0.3, "score": None,
                                "chance": 0.25}}, ("drop",), label="m")
    assert "undefined" in csv_text and "undefined" in md
    assert md.splitlines()[2] == "| m | t |  | 25.0 | 30.0 | 30.0 | 25.0 | undefined |"


# ----------------------------------------------------------------------------- task variants


@pytest.fixture(scope="module")
def tasks():
    from hnetbench.evals.harness import load_tasks

    return load_tasks(["hnb_bb_goal_inference", "hnb_cont_zh"])


def test_perturbed_task_variant(tasks):
    task = tasks["hnb_bb_goal_inference"]
    doc = list(task.eval_docs)[3]
    for name in PERTURBATIONS:
        v = perturbed_task(task, name)
        assert v.task_name == f"hnb_bb_goal_inference@{name}"
        assert v.doc_to_text(doc) == perturb(task.doc_to_text(doc), name)
        assert v.doc_to_target(doc) == task.doc_to_target(doc)
        reqs = v.construct_requests(doc, v.fewshot_context(doc, 0), metadata=("x", 0, 1))
        if name == "antspeak":  # one string across the seam: context + " " + choice
            ctx = task.doc_to_text(doc)
            assert [r.args[0] + r.args[1] for r in reqs] == [
                perturb(ctx + " " + c, name) for c in task.doc_to_choice(doc)]
            continue
        assert v.doc_to_choice(doc) == [perturb(c, name) for c in task.doc_to_choice(doc)]
        want = [" " + perturb(c, name) for c in task.doc_to_choice(doc)]
        assert [r.args[1] for r in reqs] == want
    assert task.task_name == "hnb_bb_goal_inference"  # the original is untouched
    only_ctx = perturbed_task(task, "uppercase", choices=False)
    assert only_ctx.doc_to_choice(doc) == task.doc_to_choice(doc)
    assert only_ctx.doc_to_text(doc) == task.doc_to_text(doc).upper()
    zh = tasks["hnb_cont_zh"]
    zdoc = list(zh.eval_docs)[0]
    for c in perturbed_task(zh, "repeat").doc_to_choice(zdoc):
        c.encode("utf-8")


# ----------------------------------------------------------------------------- end to end


TINY = ["model.vocab_size=257", "model.d_model=[32,48]", "model.d_intermediate=[0,96]",
        'model.layout=["m1",["T1"],"m1"]', "model.attn_num_heads=[2]", "model.attn_rotary_dim=[8]",
        "model.mamba_d_state=8", "model.mamba_headdim=16", "model.mamba_chunk_size=32",
        "data.seq_len=128", "data.batch_size=4", "train.steps=20", "train.ckpt_every=20",
        "train.eval_every=1000", "train.lr=3e-3", "train.log_every=10", "name=tiny"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from hnetbench.config import resolve
    from hnetbench.train import train

    out = tmp_path_factory.mktemp("robust") / "run"
    train(resolve(overrides=TINY), out)
    return out


@pytest.mark.slow
def test_robustness_end_to_end_cli(run_dir, tmp_path):
    """`hnetbench eval robustness` in a subprocess: lm-eval runs clean + 5 perturbed variants."""
    out = tmp_path / "table"
    cmd = [sys.executable, "-m", "hnetbench", "eval", "robustness", "--checkpoint", str(run_dir),
           "--tasks", "hnb_bb_goal_inference", "--limit", "8", "--out", str(out),
           "--perturb-opt", "drop_frac=0.2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    csv_lines = (out / "robustness.csv").read_text().splitlines()
    assert csv_lines[0].startswith(
        "model,task,n,clean,antspeak,drop,randomcase,repeat,uppercase,avg,chance,score,clean_lo,")
    row = csv_lines[1].split(",")
    assert row[:3] == ["tiny", "hnb_bb_goal_inference", "8"]
    accs = [float(x) for x in row[3:9]]  # clean + 5 perturbations, over 8 items each
    assert all(0.0 <= a <= 1.0 and (a * 8).is_integer() for a in accs)
    avg = float(row[9])
    assert avg == pytest.approx(sum(accs[1:]) / 5)
    rob = json.loads((run_dir / "eval.json").read_text())["robustness"]["hnb_bb_goal_inference"]
    assert rob["clean"] == accs[0] and rob["ci95"]["n"] == 8
    chance = float(row[10])  # a constant scorer on these 8 items: share of gold 0
    golds = [json.loads(x)["label"] for x in open(
        "evals/tasks/hnb_bb_goal_inference.jsonl").read().splitlines()[:8]]
    assert chance == pytest.approx(golds.count(0) / 8) == rob["chance"]
    expected = robustness_score(avg, accs[0], chance)
    assert rob["score"] == (None if expected is None else pytest.approx(expected))
    assert (row[11] == "undefined") == (expected is None)
    assert "drop_frac" in (out / "robustness.md").read_text()


def test_cli_rejects_bad_perturbation(run_dir):
    from hnetbench.cli import main

    assert main(["eval", "robustness", "--checkpoint", str(run_dir), "--tasks", "x",
                 "--perturbations", "shout"]) == 2
    assert main(["eval", "robustness", "--checkpoint", str(run_dir), "--tasks", "x",
                 "--perturb-opt", "drop_frac=2"]) == 2


def test_score_with_the_uniform_reference_model(uniform_lm):
    """The uniform reference model ties every choice (equal byte lengths), so lm-eval picks index
    0: clean accuracy is the share of gold index 0, which is also the chance level computed from
    the items. UpperCase leaves DNA and Chinese unchanged: n/a, out of Avg and Score; Drop
    applies and (ties again) scores the same as clean."""
    from hnetbench.config import DataConfig
    from hnetbench.data import get_tokenizer
    from hnetbench.evals.harness import load_tasks
    from hnetbench.evals.lm_adapter import HNetBenchLM
    from hnetbench.evals.robustness import run_robustness

    lm = HNetBenchLM(model=uniform_lm(256), tokenizer=get_tokenizer(DataConfig()))
    tasks = load_tasks(["hnb_cont_dna", "hnb_cont_zh"])
    res = run_robustness(lm, tasks, ("uppercase", "drop"), limit=12)
    for name, row in res.items():
        share0 = sum(d["label"] == 0 for d in list(tasks[name].eval_docs)[:12]) / 12
        assert row["clean"] == pytest.approx(share0) == pytest.approx(row["chance"])
        assert row["na"] == ["uppercase"] and row["uppercase"] is None
        assert row["changed"]["uppercase"] == 0.0 and row["changed"]["drop"] > 0.09
        assert row["avg"] == row["drop"]
    _, md = table(res, ("uppercase", "drop"))
    assert md.count("n/a") == 2


@pytest.mark.slow
def test_job_scores_shared_tasks_once_and_records_them_as_the_task_eval(run_dir, tmp_path):
    """A job whose robustness eval covers its task eval (same tasks, same limit) runs only the
    robustness eval, which records the clean tasks under "tasks" -- the same results
    `hnetbench eval lm` gives for those tasks alone."""
    import shutil

    from hnetbench.cli import main
    from hnetbench.sweeps.job import run_evals

    rd = tmp_path / "run"
    shutil.copytree(run_dir, rd)
    (rd / "eval.json").unlink(missing_ok=True)
    task = "hnb_bb_goal_inference"
    cpu_s: dict[str, float] = {}
    outcome = run_evals(rd, {"bpb": False, "tasks": [task], "limit": 8, "robustness": True,
                             "robustness_tasks": [task], "robustness_limit": 8}, cpu_s)
    assert outcome == {"robustness": "ok", "tasks": "ok"} and set(cpu_s) == {"robustness"}
    ev = json.loads((rd / "eval.json").read_text())
    alone = tmp_path / "alone.json"
    assert main(["eval", "lm", "--checkpoint", str(rd), "--tasks", task, "--limit", "8",
                 "--eval-json", str(alone)]) == 0
    want = json.loads(alone.read_text())["tasks"]
    assert ev["tasks"] == want and want[task]["ci95"]["n"] == 8
    assert ev["robustness"][task]["clean"] == want[task]["acc"]
    # a tag (or group) names no leaf: its record is lm-eval's own run over the name
    tagged, alone = tmp_path / "tagged.json", tmp_path / "tag_alone.json"
    assert main(["eval", "robustness", "--checkpoint", str(rd), "--tasks", "hnb_cont", "--limit",
                 "2", "--perturbations", "drop", "--record-tasks", "--eval-json",
                 str(tagged)]) == 0
    assert main(["eval", "lm", "--checkpoint", str(rd), "--tasks", "hnb_cont", "--limit", "2",
                 "--eval-json", str(alone)]) == 0
    want = json.loads(alone.read_text())["tasks"]
    assert json.loads(tagged.read_text())["tasks"] == want and "hnb_cont_zh" in want
    # different limits: two evals, as before
    cpu_s.clear()
    outcome = run_evals(rd, {"bpb": False, "tasks": [task], "limit": 8, "robustness": True,
                             "robustness_tasks": [task], "robustness_limit": 4}, cpu_s)
    assert outcome == {"tasks": "ok", "robustness": "ok"} and list(cpu_s) == ["tasks",
                                                                               "robustness"]
