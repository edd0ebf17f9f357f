"""`hnetbench generate` end to end: a saved checkpoint, a real subprocess, cached sampling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from hnetbench.config import DataConfig, ModelConfig, RunConfig
from hnetbench.models import build_model
from hnetbench.train.checkpoint import save_checkpoint


def test_generate_command_from_checkpoint(tmp_path: Path) -> None:
    model_cfg = ModelConfig(
        layout=["m1", ["T1"], "m1"], d_model=[32, 48], d_intermediate=[0, 64], vocab_size=257,
        attn_num_heads=[2], attn_rotary_dim=[8], mamba_d_state=8, mamba_headdim=16,
        mamba_chunk_size=8, ratio_targets=[2.0],
    )
    run_cfg = RunConfig(model=model_cfg, data=DataConfig(tokenizer="bytes"))
    torch.manual_seed(0)
    model = build_model(model_cfg)
    save_checkpoint(tmp_path / "ckpt", 1, model, {"step": 1}, run_cfg)
    cmd = [sys.executable, "-m", "hnetbench", "generate", "--checkpoint", str(tmp_path),
           "--prompt", "hello", "--prompt", "a longer prompt", "--max-new-tokens", "6", "--greedy",
           "--format", "json"]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [r["prompt"] for r in rows] == ["hello", "a longer prompt"]
    # greedy output equals the library call on the same weights
    ids = model.generate([[256] + list(b"hello")], 6, greedy=True)[0]
    ids = ids[: ids.index(256)] if 256 in ids else ids
    assert rows[0]["completion"] == bytes(ids).decode("utf-8", errors="replace")

    bad = subprocess.run(cmd + ["--top-p", "0"], capture_output=True, text=True, timeout=120,
                         env=env)
    assert bad.returncode != 0 and "--top-p" in bad.stderr and "Traceback" not in bad.stderr
