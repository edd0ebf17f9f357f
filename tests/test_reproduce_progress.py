"""`reproduce`'s progress lines: the ETA weighs the runs left by the plan's estimates, scaled by
how the finished runs compared with theirs (runs are listed longest first, so a plain average
per run puts the first ETAs far too late), and falls back to that average without a plan."""

from __future__ import annotations

import json
from pathlib import Path

from hnetbench.sweeps.reproduce import ProgressLog


def _eta_lines(out: str) -> list[str]:
    return [ln.split("ETA ")[1].split(" ")[0] for ln in out.splitlines() if "ETA" in ln]


def _replay(log: ProgressLog, clock: list[float], events: list[tuple[float, str]]) -> None:
    for t, line in events:
        clock[0] = t
        log(line)


def test_eta_from_plan_estimates(tmp_path: Path, capsys):
    # two long runs (est 100 s each) then four short ones (est 10 s each), two at a time; the
    # long ones take about twice their estimate, so the rest should too
    est = {"a": 100, "b": 100, "c": 10, "d": 10, "e": 10, "f": 10}
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "plan.json").write_text(json.dumps(
        {"runs": [{"run_id": k, "est_s": v} for k, v in est.items()]}))
    clock = [0.0]
    log = ProgressLog(0.0, tmp_path, workers=2, clock=lambda: clock[0])
    _replay(log, clock, [(0, "sweep sw: 6 runs, 6 to run"), (0, "started a (pid 1, forked)"),
                         (0, "started b (pid 2, forked)"), (200, "completed a"),
                         (200, "started c (pid 3, forked)"), (220, "completed b")])
    # after a (scale 2): b has had all of its 200 s, c..f 20 s each: 80 s over 2 workers;
    # after b (scale 420/200 = 2.1): c has 1 of its 21 s left, d..f 21 s each: 64 / 2
    assert _eta_lines(capsys.readouterr().out) == ["0m40s", "0m32s"]


def test_eta_without_a_plan_is_the_average_per_run(tmp_path: Path, capsys):
    clock = [0.0]
    log = ProgressLog(0.0, tmp_path, workers=2, clock=lambda: clock[0])
    _replay(log, clock, [(0, "sweep other/branches: 4 runs, 4 to run"),
                         (0, "started x (pid 1, forked)"), (0, "started y (pid 2, forked)"),
                         (30, "completed x")])
    assert _eta_lines(capsys.readouterr().out) == ["1m30s"]  # 30 s per run, 3 left
