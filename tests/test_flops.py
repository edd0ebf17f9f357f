"""Independent check of the analytic FLOPs: torch's FlopCounterMode on a real forward of every
family (tiny dims) must agree with the analytic matmul terms within 2%, using the compression
that forward actually produced. The SSD scan is reported separately (its chunked algorithm costs
more than the paper's idealised 6*E*N per position)."""

from __future__ import annotations

import pytest
import torch
from hnetbench.baselines import preset_dict
from hnetbench.config import RunConfig, from_dict
from hnetbench.flops import forward_flops
from hnetbench.kernels import attn_cpu, ssd_cpu
from hnetbench.models import build_model
from hnetbench.models.mamba2 import Mamba2
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

FAMILIES = [
    "transformer-bpe", "llamabyte", "llamabyte-global", "mambabyte", "spacebyte", "spacebyte++",
    "hnet-space", "hnet-pool", "hnet-1stage", "hnet-2stage", "hnet-1stage-linear-router",
    "hnet-1stage-noresidual", "hnet-1stage-mean-down", "transformer-dna", "mamba-dna", "hnet-dna",
]
PROJECTION_OPS = (torch.ops.aten.mm, torch.ops.aten.addmm)
TEXT = (
    "The quick brown fox jumps over the lazy dog. def f(x):\n    return x * 2  # code\n"
    "H-Nets learn to chunk bytes; 动态分块 works on multi-byte characters too. "
).encode()


def measured(model: torch.nn.Module, ids: torch.Tensor) -> tuple[float, float, list[int]]:
    """(matmul FLOPs, SSD FLOPs, positions per stage) of one forward, counted by torch. The
    scan and attention run as their torch paths here: the C scan and attention (the CPU
    defaults) are opaque ops that FlopCounterMode cannot see into."""
    saved = {m: m.available for m in (ssd_cpu, attn_cpu)}
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        for m in saved:
            m.available = lambda: False  # the fallback paths
        try:
            out = model(ids)
        finally:
            for m, available in saved.items():
                m.available = available
    counts = {k: sum(v.values()) for k, v in fc.get_flop_counts().items()}
    total = counts["Global"]
    ssd = 0
    per_op = fc.get_flop_counts()
    for name, mod in model.named_modules():
        if isinstance(mod, Mamba2):  # everything in the mixer that is not its projections
            # (in_proj/out_proj run as plain matmuls, mm/addmm; the scan's products are bmm)
            ops = per_op.get(f"CausalLM.{name}", {})
            ssd += sum(v for op, v in ops.items() if op not in PROJECTION_OPS)
    lengths = [ids.shape[1]] + [int(b.sum()) for b in out.boundaries]
    return total - ssd, ssd, lengths


@pytest.mark.parametrize("family", FAMILIES)
def test_flop_counter_matches_analytic_matmuls(family):
    torch.manual_seed(0)
    cfg = from_dict(RunConfig, preset_dict(f"{family}@cpu-tiny")).model
    model = build_model(cfg).eval()
    n = 128  # below every cpu-tiny window (256), so windowed attention computes full rows
    if cfg.vocab_size > 257:
        ids = torch.randint(0, cfg.vocab_size, (1, n))
    else:
        ids = torch.tensor(list(TEXT[:n]))[None]
    matmul, ssd, lengths = measured(model, ids)
    terms = forward_flops(cfg, lengths)
    analytic = sum(t["matmul"] for t in terms)
    assert matmul == pytest.approx(analytic, rel=0.02), (family, lengths)
    analytic_ssd = sum(t["ssd"] for t in terms)
    if analytic_ssd:
        # chunked SSD: same order as the paper's 6*E*N, a small constant factor above it
        assert 1.0 <= ssd / analytic_ssd < 4.0, (family, ssd, analytic_ssd)
    else:
        assert ssd == 0
    if cfg.arch == "hnet":  # the compression was measured, not assumed
        assert lengths[1] < lengths[0]
