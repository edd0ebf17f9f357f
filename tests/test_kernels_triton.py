"""Triton kernels (EMA scan, routing) against their torch references, values and gradients,
run on CPU by Triton's interpreter.

TRITON_INTERPRET must be set before triton decorates the kernels, so without it this module
re-runs itself in a subprocess with the variable set; other test modules never see it.
The interpreter is slow (its generic scan is a Python loop per element): shapes stay small but
still cover several tiles, several feature slices, and shapes that are not multiples of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

if not INTERPRETED:

    def test_triton_kernels_under_interpreter() -> None:
        pytest.importorskip("triton")
        env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "pytest", __file__, "-x", "-q", "-p", "no:cacheprovider"]
        cmd += ["-o", "addopts=--import-mode=importlib", "--durations=5"]
        root = Path(__file__).resolve().parents[1]
        r = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"interpreter run failed:\n{r.stdout[-6000:]}\n{r.stderr[-3000:]}"
        assert " passed" in r.stdout and " skipped" not in r.stdout, r.stdout[-2000:]

else:
    from hnetbench.kernels import cosine_probs, ema_smooth
    from hnetbench.kernels.ema import ema_reference
    from hnetbench.kernels.ema_triton import ema_triton
    from hnetbench.kernels.routing import cosine_probs_reference
    from hnetbench.kernels.routing_triton import cosine_probs_triton

    def _p(B: int, M: int, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        """Random P with exact resets (P == 1) at random positions, values near 0 and 1, zeros."""
        p = torch.rand(B, M, generator=gen, dtype=dtype)
        u = torch.rand(B, M, generator=gen)
        p = torch.where(u < 0.15, torch.full_like(p, 1e-6), p)
        p = torch.where((u >= 0.15) & (u < 0.3), torch.full_like(p, 1 - 1e-6), p)
        p = torch.where((u >= 0.3) & (u < 0.35), torch.zeros_like(p), p)
        p = torch.where(u >= 0.9, torch.ones_like(p), p)
        p[:, 0] = 1.0
        return p

    def _grads(f, inputs, g):
        inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
        out = f(*inputs)
        out = out[0] if isinstance(out, tuple) else out
        return out, torch.autograd.grad(out, inputs, g)

    # (B, M, D, block_m, block_d): one tile; several tiles with a ragged end; several slices
    @pytest.mark.parametrize(
        "B,M,D,bm,bd", [(2, 1, 3, None, None), (2, 37, 5, 16, 4), (1, 70, 9, 32, 8)]
    )
    def test_ema_triton_matches_reference(B: int, M: int, D: int, bm, bd) -> None:
        gen = torch.Generator().manual_seed(M * 31 + D)
        x = torch.randn(B, M, D, generator=gen)
        p = _p(B, M, gen, torch.float32)
        g = torch.randn(B, M, D, generator=gen)
        ref, (rdx, rdp) = _grads(ema_reference, (x.double(), p.double()), g.double())
        out, (dx, dp) = _grads(lambda a, b: ema_triton(a, b, bm, bd), (x, p), g)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(dx.double(), rdx, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(dp.double(), rdp, rtol=1e-4, atol=1e-4)

    def test_ema_triton_float64_and_strided_inputs() -> None:
        gen = torch.Generator().manual_seed(5)
        x = torch.randn(2, 4, 21, generator=gen, dtype=torch.float64).transpose(1, 2)  # (2,21,4)
        p = _p(2, 21, gen, torch.float64)
        g = torch.randn(2, 21, 4, generator=gen, dtype=torch.float64)
        ref, rg = _grads(ema_reference, (x, p), g)
        out, og = _grads(lambda a, b: ema_triton(a, b, 8, 2), (x, p), g)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        for a, b in zip(og, rg):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)

    def test_ema_dispatch_uses_triton_when_forced() -> None:
        gen = torch.Generator().manual_seed(6)
        x, p = torch.randn(1, 12, 3, generator=gen), _p(1, 12, gen, torch.float32)
        y = ema_smooth(x, p, backend="triton")
        torch.testing.assert_close(y, ema_reference(x, p), rtol=1e-5, atol=1e-6)

    @pytest.mark.parametrize("L,D,with_doc", [(1, 4, False), (21, 7, True), (35, 200, True)])
    def test_routing_triton_matches_reference(L: int, D: int, with_doc: bool) -> None:
        gen = torch.Generator().manual_seed(L * 7 + D)
        q = torch.randn(2, L, D, generator=gen)
        k = torch.randn(2, L, D, generator=gen)
        if L > 4:
            k[0, 2] = -q[0, 3]  # cos = -1: p == 1 exactly, at the clamp's edge
            q[1, 4] = 0.0  # |q| below eps
            k[1, 1] = q[1, 2] * 1e-3  # parallel, tiny: p == 0 at the other edge
        doc = (torch.rand(2, L, generator=gen) < 0.2) if with_doc else None
        g = torch.randn(2, L, generator=gen)
        ref, (rdq, rdk) = _grads(lambda a, b: cosine_probs_reference(a, b, doc), (q, k), g)
        out, (dq, dk) = _grads(lambda a, b: cosine_probs_triton(a, b, doc), (q, k), g)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(dq, rdq, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(dk, rdk, rtol=1e-4, atol=1e-5)
        _, b = cosine_probs_triton(q, k, doc)
        assert torch.equal(b, out > 0.5) and b[:, 0].all()
        if doc is not None:
            assert (out[doc] == 1).all()

    def test_routing_dispatch_and_strided_inputs() -> None:
        gen = torch.Generator().manual_seed(8)
        qk = torch.randn(2, 13, 2 * 6, generator=gen)
        q, k = qk[..., :6], qk[..., 6:]  # non-contiguous views, as from a fused projection
        p, b = cosine_probs(q, k, None, backend="triton", return_boundaries=True)
        torch.testing.assert_close(p, cosine_probs_reference(q, k), rtol=1e-5, atol=1e-6)
        assert torch.equal(b, p > 0.5)
