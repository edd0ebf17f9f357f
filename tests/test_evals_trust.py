"""Evaluations a researcher can trust (issue 19): own tasks from the shell, leak-free shipped
tasks, chance levels from the items, fair perturbations on grapheme clusters, lm-eval's BPE
scoring convention, early-stopping generation, and 95% intervals."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from hnetbench.config import DataConfig, resolve
from hnetbench.data import get_tokenizer, load_documents

TINY = ["model.vocab_size=257", "model.d_model=[32,48]", "model.d_intermediate=[0,96]",
        'model.layout=["m1",["T1"],"m1"]', "model.attn_num_heads=[2]", "model.attn_rotary_dim=[8]",
        "model.mamba_d_state=8", "model.mamba_headdim=16", "model.mamba_chunk_size=32",
        "data.seq_len=64", "data.batch_size=2", "train.steps=2", "train.ckpt_every=2",
        "train.eval_every=1000", "train.log_every=1", "name=tiny", "eval.bpb_max_bytes=500"]


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "hnetbench", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from hnetbench.train import train

    out = tmp_path_factory.mktemp("trust") / "run"
    train(resolve(overrides=TINY), out)
    return out


@pytest.fixture(scope="module")
def own_tasks(tmp_path_factory):
    """A task directory of the user's: a local-JSON task (RTL, combining marks, ZWJ emoji) and
    a group over it and one of ours."""
    d = tmp_path_factory.mktemp("own")
    rows = [{"q": "שלום", "choices": [" עולם", " x"], "gold": 0},
            {"q": "cafe\u0301 👨‍👩‍👧", "choices": [" yes", " no"], "gold": 1},
            {"q": "Hi", "choices": [" you", " me"], "gold": 0},
            {"q": "中文", "choices": ["字", "词"], "gold": 1}]
    (d / "mine.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
                                  + "\n", encoding="utf-8")
    (d / "my_task.yaml").write_text(f"""task: my_task
dataset_path: json
dataset_kwargs:
  data_files:
    test: {d / "mine.jsonl"}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{q}}}}"
doc_to_choice: choices
doc_to_target: gold
target_delimiter: ""
metric_list:
  - metric: acc
""", encoding="utf-8")
    (d / "my_group.yaml").write_text("""group: my_group
task:
  - my_task
  - hnb_cont_dna
aggregate_metric_list:
  - metric: acc
    weight_by_size: true
""", encoding="utf-8")
    return d


# ----------------------------------------------------------------------------- own tasks


def test_own_task_yaml_and_group_through_eval_lm(run_dir, own_tasks, tmp_path):
    out = tmp_path / "e.json"
    r = _cli("eval", "lm", "--checkpoint", str(run_dir), "--include-path", str(own_tasks),
             "--tasks", "my_group", "--limit", "4", "--eval-json", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    tasks = json.loads(out.read_text())["tasks"]
    assert {"my_task", "hnb_cont_dna", "my_group"} <= set(tasks)
    assert tasks["my_task"]["ci95"]["n"] == 4 and (tasks["my_task"]["acc"] * 4).is_integer()
    lo, hi = tasks["my_task"]["ci95"]["acc"]
    assert 0.0 <= lo <= tasks["my_task"]["acc"] <= hi <= 1.0
    assert "n=4" in r.stdout
    # a YAML path works without --include-path; robustness takes the user's task too
    r = _cli("eval", "robustness", "--checkpoint", str(run_dir), "--tasks",
             str(own_tasks / "my_task.yaml"), "--no-save", "--perturbations", "uppercase,drop")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| my_task | 4 |" in r.stdout


def test_unknown_task_is_one_line_exit_2_before_the_model(tmp_path, monkeypatch):
    r = _cli("eval", "lm", "--checkpoint", str(tmp_path / "no-such-run"), "--tasks",
             "hnb_cont_en,hnb_cont_xx")
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "unknown task 'hnb_cont_xx'" in err[0] and "checkpoint" not in err[0]
    # our own names (and a typo of one) never build lm-eval's default index
    import lm_eval.tasks
    from hnetbench.evals import harness

    built = []
    real = lm_eval.tasks.TaskManager

    def spy(*a, **kw):
        built.append(kw.get("include_defaults", True))
        return real(*a, **kw)

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", spy)
    harness.task_manager(["hnb_cont_en", "hnb_cont"])
    with pytest.raises(ValueError, match="unknown task 'hnb_cont_xx'"):
        harness.task_manager(["hnb_cont_en", "hnb_cont_xx"])
    assert built and not any(built)
    with pytest.raises(ValueError, match="not a directory"):
        harness.task_manager(["hnb_cont_en"], [str(tmp_path / "nope")])


def test_hnetbench_lm_eval_is_lm_evals_cli(run_dir, own_tasks, tmp_path):
    r = _cli("lm-eval", "run", "--model", "hnetbench", "--model_args",
             f"checkpoint={run_dir},max_gen_toks=8", "--tasks", "my_task", "--include_path",
             str(own_tasks), "--limit", "2", "--output_path", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "my_task" in r.stdout and "acc" in r.stdout
    assert list((tmp_path / "o").rglob("results_*.json"))
    # lm-eval's older form (no subcommand) gets our tasks too; an unknown model arg is an error
    # naming it (in-process: another lm-eval CLI run would index its 14k tasks again, ~15 s)
    import hnetbench.evals.lm_adapter  # noqa: F401 -- registers the "hnetbench" model
    from hnetbench.evals.harness import TASKS_DIR
    from hnetbench.evals.lm_eval_cli import lm_eval_argv
    from lm_eval.api.registry import get_model

    assert lm_eval_argv(["--model", "hnetbench"]) == [
        "--model", "hnetbench", "--include_path", str(TASKS_DIR)]
    with pytest.raises(ValueError, match="unknown model_args bogus"):
        get_model("hnetbench").create_from_arg_string(f"checkpoint={run_dir},bogus=1")


# ----------------------------------------------------------------------------- shipped tasks


def _rows(name: str) -> list[dict]:
    from hnetbench.evals.harness import TASKS_DIR

    return [json.loads(x) for x in (TASKS_DIR / f"{name}.jsonl").read_text("utf-8").splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("domain", ["en", "zh", "code", "dna"])
def test_shipped_continuation_tasks_do_not_leak(domain):
    """No item string shares a 13-gram (DNA: 32-gram) with the train split; the test split
    itself shares none either; items come from many test units."""
    from hnetbench.evals.decontaminate import NgramIndex, settings_for

    index = NgramIndex(load_documents(domain, "train"), *settings_for(domain))
    rows = _rows(f"hnb_cont_{domain}")
    for r in rows:
        gold = r["choices"][r["label"]]
        assert not index.overlaps(r["context"] + gold)
        assert not any(index.overlaps(c) for c in r["choices"])
    test = load_documents(domain, "test")
    assert index.overlap_rate(test) == 0.0
    sources = {next(i for i, u in enumerate(test) if (r["context"] + r["choices"][r["label"]])
                    .encode() in u) for r in rows}
    assert len(sources) >= 50


def test_leaky_items_are_found_and_skipped():
    from hnetbench.evals.build_tasks import continuation_items
    from hnetbench.evals.decontaminate import NgramIndex

    docs = load_documents("zh", "test")[:60]
    leaky = NgramIndex(docs[:30], "word", 13)  # pretend half the test units were trained on
    items = continuation_items(docs, "seed-x", n_items=20, train_index=leaky)
    assert not any(leaky.overlaps(it["context"] + it["choices"][it["label"]]) for it in items)
    assert [it["label"] for it in items].count(0) == 5  # 20 items, 4 positions, balanced


def test_answer_positions_balanced_and_chance_from_items():
    from hnetbench.evals.build_tasks import balance_positions
    from hnetbench.evals.harness import load_tasks
    from hnetbench.evals.robustness import chance_level

    names = ["hnb_cont_en", "hnb_cont_zh", "hnb_cont_code", "hnb_cont_dna",
             "hnb_bb_goal_inference", "hnb_bb_step_inference", "hnb_bb_social_iqa"]
    tasks = load_tasks(names)
    for name in names:
        rows = _rows(name)
        k = len(rows[0]["choices"])
        counts = [sum(r["label"] == i for r in rows) for i in range(k)]
        assert counts == [len(rows) // k] * k, (name, counts)
        assert chance_level(tasks[name]) == pytest.approx(1 / k)
        again = balance_positions(rows, "hnb-bb-" + name.removeprefix("hnb_bb_"))
        if name.startswith("hnb_bb"):  # the builder's balancing is idempotent
            assert again == rows
    # an unbalanced prefix: chance is what a constant scorer gets there, not 1/k
    golds = [r["label"] for r in rows[:10]]
    assert chance_level(tasks[name], limit=10) == golds.count(0) / 10


def test_uniform_model_scores_exactly_chance_on_every_item(uniform_lm):
    """Ties (equal byte lengths) go to choice 0 in lm-eval: the uniform model's accuracy is the
    chance level computed from the items, on the whole task (default: every item)."""
    import lm_eval
    from hnetbench.evals.harness import task_manager
    from hnetbench.evals.lm_adapter import HNetBenchLM

    lm = HNetBenchLM(model=uniform_lm(256), tokenizer=get_tokenizer(DataConfig()))
    res = lm_eval.simple_evaluate(model=lm, tasks=["hnb_cont_zh"], bootstrap_iters=0,
                                  task_manager=task_manager(["hnb_cont_zh"]))
    assert res["results"]["hnb_cont_zh"]["acc,none"] == 0.25
    assert res["n-samples"]["hnb_cont_zh"]["effective"] == 200


def test_data_stats_reports_the_remaining_overlap():
    from hnetbench.data.commands import domain_stats

    row = domain_stats("dna", None)
    assert row["test_ngram"] == "32-char" and row["test_overlap"] == 0.0
    assert row["test_overlap_before"] > 0.0  # the genome's repeats were on both sides


def test_english_split_uses_many_sources():
    from hnetbench.data import corpus

    docs = corpus.all_documents("en")
    test = load_documents("en", "test")
    speeches = {i for u in test for i, d in enumerate(docs) if u in d}
    assert len(speeches) >= 60 and len(test) >= 100  # was 11 whole speeches
    for d in docs[:5]:
        units = corpus.units_of(d)
        assert b"".join(units) == d and all(len(u) <= 2 * corpus.UNIT_BYTES for u in units)


# ----------------------------------------------------------------------------- perturbations


HARD = ["", "cafe\u0301 nai\u0308ve", "👨‍👩‍👧 and 🇫🇷 👍🏽", "שלום עולם", "مرحبا بالعالم",
        "ACGTACGTAC", "ǅemal straße"]


@pytest.mark.parametrize("text", HARD)
def test_perturbations_keep_grapheme_clusters_whole(text):
    from hnetbench.evals.perturb import ALL_PERTURBATIONS, change_count, graphemes, perturb

    gs = graphemes(text)
    allowed = {g for g in gs} | {g.upper() for g in gs} | {g.lower() for g in gs}
    allowed |= {h for g in gs for h in graphemes(g.upper())} | {" "}
    for name in ALL_PERTURBATIONS:
        out = perturb(text, name)
        assert out == perturb(text, name)
        assert set(graphemes(out)) <= allowed, (name, out)  # no mark or ZWJ part left alone
        changed, n = change_count(text, name)
        assert n == len(gs) and 0 <= changed <= n
    if text:
        assert perturb(text, "antspeak") == " ".join(graphemes(text.upper()))
    else:
        assert all(perturb("", p) == "" and change_count("", p) == (0, 0)
                   for p in ALL_PERTURBATIONS)


def test_randomcase_blt_variant():
    from hnetbench.evals.perturb import PerturbConfig, perturb

    t = "The Quick Brown Fox JUMPS"
    blt = perturb(t, "randomcase_blt")
    ours = perturb(t, "randomcase")
    assert blt == perturb(t, "randomcase", PerturbConfig(randomcase_lower_rest=True))
    up = [i for i, (a, b) in enumerate(zip(ours, t)) if a != b or a.isupper()]
    assert sum(c.isupper() for c in blt) <= len(up)  # others lower-cased
    assert blt.lower() == t.lower() and blt != ours


def test_antspeak_spans_the_seam_of_our_continuation_tasks():
    from hnetbench.evals.harness import load_tasks
    from hnetbench.evals.perturb import perturb
    from hnetbench.evals.robustness import changed_fraction, perturbed_task

    tasks = load_tasks(["hnb_cont_en", "hnb_cont_zh", "hnb_cont_dna"])
    task = tasks["hnb_cont_en"]
    v = perturbed_task(task, "antspeak")
    for doc in list(task.eval_docs)[:5]:
        ctx = task.doc_to_text(doc)
        reqs = v.construct_requests(doc, v.fewshot_context(doc, 0), metadata=("x", 0, 1))
        assert [r.args[0] + r.args[1] for r in reqs] == [
            perturb(ctx + c, "antspeak") for c in task.doc_to_choice(doc)]
    # Chinese: only the few Latin letters change (just above or below the 1% line)
    assert changed_fraction(tasks["hnb_cont_zh"], "uppercase") < 0.02
    assert changed_fraction(tasks["hnb_cont_zh"], "randomcase") < 0.01
    assert changed_fraction(tasks["hnb_cont_dna"], "uppercase") == 0.0
    assert changed_fraction(tasks["hnb_cont_dna"], "randomcase_blt") > 0.3
    assert changed_fraction(task, "uppercase") > 0.5


# ----------------------------------------------------------------------------- adapter


@pytest.fixture(scope="module")
def bpe_tok():
    from hnetbench.data.tokenizers import train_bpe

    return train_bpe(load_documents("en", "train")[:40], 400)


def test_bpe_scoring_splits_the_joint_encoding_at_the_first_byte(uniform_lm, bpe_tok):
    from hnetbench.evals.lm_adapter import HNetBenchLM
    from lm_eval.api.instance import Instance

    lm = HNetBenchLM(model=uniform_lm(bpe_tok.vocab_size), tokenizer=bpe_tok)
    for ctx, cont in [("The ca", "t sat on the mat"), ("The cat ", "sat"), ("", "abc"),
                      ("naïve ", "café"), ("שלום ", "עולם")]:
        c, k = lm._pair(ctx, cont)
        whole = bpe_tok.encode((ctx + cont).encode())
        assert c[0] == bpe_tok.bos_id and c[1:] + k == whole  # the segmentation of training
        seam = len(ctx.encode())
        ctx_bytes = b"".join(bpe_tok.token_bytes(t) for t in c[1:])
        assert len(ctx_bytes) <= seam < len(ctx_bytes) + len(bpe_tok.token_bytes(k[0]))
        (ll, _), = lm.loglikelihood([Instance("loglikelihood", {}, (ctx, cont), 0)])
        assert ll == pytest.approx(-len(k) * math.log(bpe_tok.vocab_size))
    # the empty string: log 1 = 0, greedy; empty context: scored after BOS alone
    res = lm.loglikelihood([Instance("loglikelihood", {}, ("abc", ""), 0),
                            Instance("loglikelihood", {}, ("", ""), 0),
                            Instance("loglikelihood", {}, ("", "é👍🏽"), 0)])
    assert res[:2] == [(0.0, True), (0.0, True)]
    n = len(bpe_tok.encode("é👍🏽".encode()))
    assert res[2][0] == pytest.approx(-n * math.log(bpe_tok.vocab_size))
    with pytest.raises(ValueError, match="unknown model_args bogus"):
        HNetBenchLM(model=uniform_lm(bpe_tok.vocab_size), tokenizer=bpe_tok, bogus=1)


class Counting(torch.nn.Module):
    """Writes "ab\\n" then "z" forever; counts decoding steps."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.steps = 0
        self.script = list(b"ab\n")

    def _logits(self, i: int, batch: int) -> torch.Tensor:
        t = self.script[i] if i < len(self.script) else ord("z")
        out = torch.zeros(batch, 257)
        out[:, t] = 10.0
        return out

    def prefill(self, ids, doc_start, capacity):
        return self._logits(0, ids.shape[0]), {"i": 0}

    def step(self, ids, cache):
        self.steps += 1
        cache["i"] += 1
        return self._logits(cache["i"], ids.shape[0])


def test_generate_until_stops_at_the_stop_string():
    from hnetbench.evals.lm_adapter import HNetBenchLM
    from lm_eval.api.instance import Instance

    model = Counting()
    lm = HNetBenchLM(model=model, tokenizer=get_tokenizer(DataConfig()))
    req = Instance("generate_until", {}, ("Q:", {"until": ["\n"], "max_gen_toks": 500}), 0)
    assert lm.generate_until([req]) == ["ab"]
    assert model.steps == 2  # three tokens sampled, not 500
    assert lm.max_gen_toks == 1024  # byte model default (~256 BPE tokens of text)
    model.steps = 0
    req = Instance("generate_until", {}, ("Q:", {"until": ["never"], "max_gen_toks": 7}), 0)
    assert lm.generate_until([req]) == ["ab\nzzzz"] and model.steps == 6


# ----------------------------------------------------------------------------- intervals


def test_intervals():
    from hnetbench.evals.intervals import (
        accuracy_interval,
        bootstrap_interval,
        constant_scorer_chance,
        format_acc,
        ratio_interval,
    )

    lo, hi = accuracy_interval(0.5, 100)  # Wilson: centred at 0.5 here, a bit under +-1.96 sd
    assert (lo, hi) == pytest.approx((0.5 - 0.0962, 0.5 + 0.0962), abs=1e-4)
    lo, hi = accuracy_interval(1.0, 10)  # all correct still leaves an interval below 1
    assert lo == pytest.approx(0.7225, abs=1e-4) and hi == pytest.approx(1.0)
    lo, hi = accuracy_interval(0.0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    xs = [1] * 120 + [0] * 80
    blo, bhi = bootstrap_interval(xs, iters=2000)
    nlo, nhi = accuracy_interval(0.6, 200)
    assert abs(blo - nlo) < 0.02 and abs(bhi - nhi) < 0.02
    assert bootstrap_interval(xs) == bootstrap_interval(xs)  # seeded
    assert constant_scorer_chance([0, 1, 2, 0]) == 0.5
    assert format_acc(0.6, 200) == "60.0 [53.1, 66.5] n=200" and format_acc(None, 3) == "n/a"
    with pytest.raises(ValueError):
        accuracy_interval(0.5, 0)
    # BPB over documents: R = 4/2, residuals -1, +1 -> var = 2/1 * 2 / 2^2, t(0.975, 1) = 12.706
    r, lo, hi = ratio_interval([1.0, 3.0], [1.0, 1.0])
    assert r == 2.0 and (lo, hi) == pytest.approx((2 - 12.7062, 2 + 12.7062), abs=1e-3)
    # weighted by bytes: a long document counts for more than a short one
    r, lo, hi = ratio_interval([10.0, 1.0, 1.1], [10.0, 1.0, 1.0])
    assert r == pytest.approx(12.1 / 12) and (hi - lo) / 2 == pytest.approx(0.05454, abs=1e-4)
    with pytest.raises(ValueError):
        ratio_interval([1.0], [1.0])
