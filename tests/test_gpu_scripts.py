"""The prepared GPU scripts stay runnable between GPU sessions: their CPU smoke modes run here
(Triton kernels under the interpreter) and must write parity figures that hold."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **env})


def test_gpu_kernels_smoke_parity(tmp_path):
    pytest.importorskip("triton")
    out = tmp_path / "k.json"
    r = _run([str(ROOT / "benchmarks" / "gpu_kernels.py"), str(out), "--smoke"], tmp_path,
             TRITON_INTERPRET="1")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {row["kernel"] for row in rows} == {"ema", "routing", "ssd"}
    for row in rows:  # float32 against the float64 references
        assert max(row["err_out"], row["err_dx"], row["err_dp"]) < 1e-5, row


def test_gpu_throughput_smoke(tmp_path):
    out = tmp_path / "t.json"
    r = _run([str(ROOT / "benchmarks" / "gpu_throughput.py"), str(out), "--smoke"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["preset"] == "hnet-1stage@cpu-tiny" and row["step_s"] > 0 and row["params"] > 0


def test_gpu_session_script_parses():
    r = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_session.sh")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
