"""The report's evidence: intervals, verdicts derived from them, BPB(D) fits over cool-down
branches, the compute-match flag and boundary alignment, on run directories written here in the
documented format (numbers chosen so each verdict is known in advance)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from hnetbench.reports import evidence as ev
from hnetbench.reports import intervals as iv
from hnetbench.reports import report as R


def test_intervals_against_textbook_values():
    m = iv.mean_interval([1.0, 3.0])  # t(0.975, 1) = 12.706, sd = sqrt(2), n = 2
    assert m.value == 2.0 and m.hi - m.value == pytest.approx(12.7062, rel=1e-4)
    assert not iv.mean_interval([1.5]).known
    w = iv.proportion_interval(0.5, 100)  # Wilson, z = 1.96
    assert (w.lo, w.hi) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    d = iv.difference_interval([1.0, 1.1, 0.9], [2.0, 2.1, 1.9])
    assert d.value == pytest.approx(-1.0) and d.hi < 0
    assert iv.verdict(d) == iv.CONTRADICTED and iv.verdict(d, False) == iv.SUPPORTED
    assert iv.verdict(iv.difference_interval([1.0], [2.0])) == iv.INCONCLUSIVE
    assert iv.verdict(iv.Interval(0.1, -0.1, 0.3, 5)) == iv.INCONCLUSIVE
    assert iv.verdict(None) == iv.NOT_MEASURED


def test_power_law_fit_recovers_the_exponent():
    xs = [1e5, 2e5, 4e5, 8e5]
    exact = iv.fit_power_law(xs, [3.0 * x**-0.12 for x in xs])
    assert exact.b.value == pytest.approx(-0.12) and exact.r2 == pytest.approx(1.0)
    assert exact.b.hi - exact.b.lo == pytest.approx(0.0, abs=1e-9)
    noisy = iv.fit_power_law(xs, [3.0 * x**-0.12 * (1 + e) for x, e in
                                  zip(xs, [0.01, -0.01, 0.012, -0.008])])
    assert noisy.b.lo < -0.12 < noisy.b.hi
    assert iv.fit_power_law([1e5, 1e5], [2.0, 2.1]) is None  # one budget: nothing to fit
    assert iv.fit_power_law([131069, 131070], [4.0, 4.2]) is None  # the same budget, too
    assert not iv.fit_power_law([1e5, 2e5], [2.0, 1.9]).b.known  # 2 points: no interval


def test_boundary_alignment_counts():
    text = b"the cat, sat"  # word starts: 0 (t), 4 (c), 9 (s); ',' at 7, space at 8
    assert ev.word_starts(text) == {0, 4, 9}
    assert ev.char_starts("a中b".encode()) == {0, 1, 4}
    al = ev.alignment(text, [[0, 4, 6, 9], [0, 9]], ev.word_starts(text))
    assert al.precision.value == 0.75 and al.recall.value == 1.0
    assert al.f1 == pytest.approx(2 * 0.75 / 1.75)
    assert al.base_rate == pytest.approx(3 / 12)
    assert al.bytes_per_chunk == [3.0, 6.0]


# ----------------------------------------------------------------------------- a synthetic sweep


def _run(root: Path, rid: str, fam: str, domain: str, seed: int, bpb: float, nbytes: int,
         fpb: float = 6e5, ref: bool = False, branch: dict | None = None,
         acc: float | None = None) -> None:
    d = root / rid
    d.mkdir(parents=True)
    scale = "dna" if domain == "dna" else "cpu-tiny"
    (d / "config.yaml").write_text(yaml.safe_dump(
        {"name": rid, "preset": f"{fam}@{scale}", "data": {"domain": domain},
         "train": {"seed": seed}}))
    (d / "summary.json").write_text(json.dumps(
        {"status": "completed", "steps": nbytes // 4096, "bytes_seen": nbytes,
         "flops_per_byte": fpb, "flops_seen": 3 * fpb * nbytes, "final_val_bpb": bpb,
         "match": {"is_reference": ref}}))
    evals: dict = {"bpb": {f"{domain}/test": bpb}}
    if acc is not None:
        evals["tasks"] = {"hnb_cont_en": {"acc": acc, "acc_norm": acc}}
        evals["robustness"] = {"hnb_cont_en": {"clean": acc, "drop": acc - 0.04,
                                               "repeat": acc - 0.06, "score": 50.0}}
    (d / "eval.json").write_text(json.dumps(evals))
    (d / "status.json").write_text(json.dumps({"state": "completed"}))
    (d / "job.json").write_text(json.dumps({"eval": {"limit": 200}}))
    if branch:
        (d / "branch.json").write_text(json.dumps(branch))


TOP = 2 * 2**20


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "demo"
    root.mkdir()
    (root / "spec.yaml").write_text("name: demo\nmatch: {tolerance: 0.05}\n")
    # English: BPE worst, 1-stage clearly better (tight seeds), 2-stage noisy (wide seeds)
    for s, (b, h1, h2) in enumerate([(2.00, 1.80, 1.70), (2.02, 1.81, 2.10)]):
        _run(root, f"bpe{s}", "transformer-bpe", "en", s, b, TOP, ref=True, acc=0.40)
        _run(root, f"h1{s}", "hnet-1stage", "en", s, h1, TOP, fpb=6.6e5, acc=0.60)
        _run(root, f"h2{s}", "hnet-2stage", "en", s, h2, TOP, fpb=6.1e5, acc=0.42)
    # cool-down branches of seed 0 at 1/4 and 1/2: BPB = a D^b with known exponents
    for frac in (0.25, 0.5):
        n = int(TOP * frac)
        _run(root, f"bpe0-{frac}", "transformer-bpe", "en", 0, 2.00 * frac**-0.05, n,
             branch={"parent": "bpe0", "fraction": frac})
        _run(root, f"h10-{frac}", "hnet-1stage", "en", 0, 1.80 * frac**-0.15, n,
             branch={"parent": "h10", "fraction": frac})
    # DNA: one seed each
    _run(root, "tdna", "transformer-dna", "dna", 0, 1.95, TOP // 4, ref=True)
    _run(root, "hdna", "hnet-dna", "dna", 0, 1.90, TOP // 4)
    return root


def _claim(t, start: str) -> dict:
    rows = [i for i in range(len(t.rows)) if t.value(i, "claim").startswith(start)]
    assert len(rows) == 1, start
    return {c: t.value(rows[0], c) for c in t.columns}


def test_claims_follow_the_intervals(sweep: Path):
    runs = R.load_sweep(sweep, print)
    fits = ev.scaling_fits(runs)
    t = ev.claims_table(runs, fits, {})
    assert _claim(t, "H-Net 1-stage reaches lower English BPB")["verdict"] == iv.SUPPORTED
    assert _claim(t, "H-Net 2-stage reaches lower English BPB")["verdict"] == iv.INCONCLUSIVE
    assert _claim(t, "2-stage beats 1-stage")["verdict"] == iv.INCONCLUSIVE
    # the 1-stage exponent (-0.15 over 3 budgets + a second seed) is steeper than BPE's (-0.05)
    scal = _claim(t, "H-Net 1-stage scales better")
    assert scal["verdict"] == iv.SUPPORTED, scal
    assert _claim(t, "H-Net 2-stage scales better")["verdict"] == iv.NOT_MEASURED
    # perturbed accuracy 55% vs 35% on 200 items each: a real difference
    assert _claim(t, "H-Net 1-stage keeps more accuracy")["verdict"] == iv.SUPPORTED
    assert _claim(t, "H-Net 2-stage keeps more accuracy")["verdict"] == iv.INCONCLUSIVE
    dna = _claim(t, "H-Net beats Transformer (DNA)")
    assert dna["verdict"] == iv.INCONCLUSIVE and "one seed" in dna["why"]
    assert _claim(t, "H-Net 2-stage beats BPE on zh")["verdict"] == iv.NOT_MEASURED


def test_scaling_fit_uses_branches_and_seeds(sweep: Path):
    runs = R.load_sweep(sweep, print)
    fits = {(f.domain, f.family): f for f in ev.scaling_fits(runs)}
    one = fits[("en", "hnet-1stage")]
    assert one.fit.n == 4 and len(one.budgets) == 3  # 1/4, 1/2, 1 (two seeds at 1)
    assert one.fit.b.lo < -0.15 < one.fit.b.hi
    assert ("en", "hnet-2stage") not in fits  # one budget only
    assert ev.distinct_budgets([131070, 32768, 131069, 65536]) == [32768, 65536, 131069]
    t = ev.bpb_table(runs)
    i = t.find(domain="en", model="H-Net 1-stage", **{"train bytes": float(TOP)})[0]
    assert t.value(i, "seeds") == 2 and t.value(i, "BPB") == pytest.approx(1.805)
    assert t.value(i, "95% lo") < 1.80 and t.value(i, "95% hi") > 1.81


def test_compute_match_flags_runs_outside_tolerance(sweep: Path, tmp_path: Path):
    rep = R.build_report(sweep, tmp_path / "out", warn=lambda m: None)
    t = rep.tables["compute_match"]
    flags = {t.value(i, "model"): t.value(i, "within tolerance") for i in range(len(t.rows))}
    assert flags["H-Net 1-stage"] == "NO" and flags["H-Net 2-stage"] == "yes"  # +10% vs +1.7%
    text = rep.report_md.read_text()
    assert "**Outside tolerance:** en H-Net 1-stage seed 0: +10.00%" in text
    # the claims table comes first, before the machine and the paper tables
    assert text.index("Claims of the paper") < text.index("## Machine") < text.index("Table 2")
    csv_text = (tmp_path / "out" / "tables" / "claims.csv").read_text()
    assert csv_text.splitlines()[0] == "claim,paper,this run,verdict,why,notes"
    tex = (tmp_path / "out" / "tables" / "scaling.tex").read_text()
    assert "\\toprule" in tex and "R\\^{}2" in tex
    assert math.isfinite(rep.tables["scaling"].value(0, "b"))


def _aligned(hits: int, n: int, base: float) -> ev.Alignment:
    return ev.Alignment(iv.proportion_interval(hits / n, n), iv.proportion_interval(0.5, 100),
                        0.0, base, 6000, [4.0])


def test_boundary_claims_need_every_seed_on_one_side():
    """One model's Wilson interval says nothing of training randomness: one seed is
    inconclusive whatever its interval; several seeds decide only when they agree."""
    above, below, across = _aligned(300, 1000, 0.16), _aligned(20, 1000, 0.16), _aligned(
        160, 1000, 0.16)
    one = ev.boundary_claim("c", [(0, above)])
    assert one.verdict == iv.INCONCLUSIVE and "one seed (supported" in one.why
    assert ev.boundary_claim("c", [(0, above), (1, above)]).verdict == iv.SUPPORTED
    assert ev.boundary_claim("c", [(0, below), (1, below)]).verdict == iv.CONTRADICTED
    assert ev.boundary_claim("c", [(0, above), (1, across)]).verdict == iv.INCONCLUSIVE
    assert ev.boundary_claim("c", [(0, above), (1, below)]).verdict == iv.INCONCLUSIVE
    assert ev.boundary_claim("c", []).verdict == iv.NOT_MEASURED
    both = ev.boundary_claim("c", [(0, above), (1, below)]).measured
    assert "(seeds 0, 1)" in both and "30.0" in both and "2.0" in both
