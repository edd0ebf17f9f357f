"""The SSD scans (models/ssd.py: `ssd_scan`, the CPU default, which is the C recurrence of
kernels/ssd_cpu.c when it builds; the torch scan `ssd_scan_torch` with its factored form and the
segsum form it falls back to) against the sequential recurrence and the previous chunked scan,
in float64, forward and backward, with document resets."""

from __future__ import annotations

import pytest
import torch
from hnetbench.models import ssd
from hnetbench.models.mamba2 import ssd_chunked, ssd_naive
from hnetbench.models.ssd import (
    pick_chunk,
    ssd_scan,
    ssd_scan_factored,
    ssd_scan_segsum,
    ssd_scan_torch,
)


def _inputs(b: int, L: int, H: int, P: int, N: int, G: int, resets: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    f64 = dict(dtype=torch.float64, generator=g)
    x = torch.randn(b, L, H, P, **f64)
    dt = torch.rand(b, L, H, **f64) * 0.5
    A = -torch.rand(H, **f64) * 4
    B, C = torch.randn(b, L, G, N, **f64), torch.randn(b, L, G, N, **f64)
    start = torch.rand(b, L, generator=g) < resets
    start[:, 0] = True
    return [x, dt, A, B, C], start


@pytest.mark.parametrize(
    "b,L,H,P,N,G,chunk,resets",
    [
        (2, 100, 4, 8, 6, 2, 16, 0.05),  # groups, padding, resets
        (2, 257, 4, 8, 16, 1, 64, 0.02),  # one past a chunk multiple
        (1, 33, 2, 4, 4, 1, 8, 0.2),  # many chunks, resets in most
        (2, 300, 2, 4, 4, 1, 32, 0.0),  # no resets: carried state over 10 chunks
        (3, 7, 2, 4, 4, 1, 64, 0.3),  # shorter than a chunk
        (2, 96, 4, 8, 8, 1, 32, 1.0),  # every position its own document
    ],
)
@pytest.mark.parametrize("form", ["default", "torch", "factored", "segsum"])
def test_ssd_scan_matches_reference_forward_and_backward(b, L, H, P, N, G, chunk, resets, form):
    args, start = _inputs(b, L, H, P, N, G, resets)
    doc = start.long().cumsum(1)
    for a in args:
        a.requires_grad_(True)
    scan = {"default": ssd_scan, "torch": ssd_scan_torch, "segsum": ssd_scan_segsum,
            "factored": lambda *a: ssd_scan_factored(*a[:5], pick_chunk(L, chunk, N, P), a[6])}
    y_new, s_new = scan[form](*args, chunk, doc)
    y_ref, s_ref = ssd_chunked(*args, chunk, doc)
    y_seq, s_seq = ssd_naive(*args, start)
    torch.testing.assert_close(y_new, y_seq, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s_new, s_seq, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y_new, y_ref, rtol=1e-10, atol=1e-10)
    # gradients of an arbitrary function of both outputs, for every input
    wy = torch.randn(y_new.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ws = torch.randn(s_new.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    g_new = torch.autograd.grad((y_new * wy).sum() + (s_new * ws).sum(), args)
    g_ref = torch.autograd.grad((y_ref * wy).sum() + (s_ref * ws).sum(), args)
    g_seq = torch.autograd.grad((y_seq * wy).sum() + (s_seq * ws).sum(), args)
    for name, gn, gr, gs in zip("x dt A B C".split(), g_new, g_ref, g_seq):
        torch.testing.assert_close(gn, gs, rtol=1e-9, atol=1e-9, msg=f"d{name} vs naive")
        torch.testing.assert_close(gn, gr, rtol=1e-9, atol=1e-9, msg=f"d{name} vs chunked")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ssd_scan_strong_decays_halve_the_chunk_or_fall_back(dtype, monkeypatch):
    """Decays too strong for the factored form's exp factors (a chunk's total log-decay above
    LIMIT) make the torch scan halve the chunk, and below MIN_FACTORED_CHUNK use the segsum form;
    results stay finite and equal to the reference."""
    args, start = _inputs(2, 128, 4, 8, 8, 1, 0.05)
    args = [a.to(dtype) for a in args]
    doc = start.long().cumsum(1)
    calls = []
    real_factored, real_segsum = ssd.ssd_scan_factored, ssd.ssd_scan_segsum
    monkeypatch.setattr(ssd, "ssd_scan_factored",
                        lambda *a: calls.append(("factored", a[5])) or real_factored(*a))
    monkeypatch.setattr(ssd, "ssd_scan_segsum",
                        lambda *a: calls.append(("segsum", None)) or real_segsum(*a))
    y_ref, _ = ssd_chunked(*[a.double() for a in args], 32, doc)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    seen = []
    for scale in (1.0, 3.0, 100.0):
        dt = args[1] * scale
        a = -(dt * args[2])  # per position log-decay
        expect = ("segsum", None)
        for q in (32, 16, 8):  # the largest chunk whose every chunk decays by <= LIMIT
            if a.view(2, -1, q, 4).sum(2).max() <= ssd.LIMIT:
                expect = ("factored", q)
                break
        calls.clear()
        y, s = ssd.ssd_scan_torch(args[0], dt, args[2], args[3], args[4], 32, doc)
        y_ref, s_ref = ssd_chunked(*[a.double() for a in (args[0], dt, *args[2:])], 32, doc)
        assert calls == [expect], (scale, calls)
        seen.append(expect)
        assert torch.isfinite(y).all() and torch.isfinite(s).all()
        torch.testing.assert_close(y.double(), y_ref, **tol)
        torch.testing.assert_close(s.double(), s_ref, **tol)
    assert seen == [("factored", 32), ("factored", 16), ("segsum", None)], seen


@pytest.mark.parametrize("scan", [ssd_scan, ssd_scan_torch], ids=["default", "torch"])
def test_ssd_scan_isolates_documents(scan):
    """Changing one document's inputs leaves every other document's outputs bit-for-bit alone."""
    args, start = _inputs(1, 80, 2, 4, 4, 1, 0.0)
    start[0, 37] = True
    doc = start.long().cumsum(1)
    y1, _ = scan(*args, 32, doc)
    x2 = args[0].clone()
    x2[0, :37] += 5.0  # perturb the first document only
    y2, _ = scan(x2, *args[1:], 32, doc)
    assert torch.equal(y1[0, 37:], y2[0, 37:])
    assert not torch.allclose(y1[0, :37], y2[0, :37])


def test_pick_chunk_follows_the_shape():
    assert pick_chunk(512, 64, 32, 32) == 32  # sqrt(N*P) = 32
    assert pick_chunk(512, 256, 128, 64) == 64  # paper widths: sqrt(8192) = 2^6.5 -> 2^6
    assert pick_chunk(512, 16, 128, 64) == 16  # never above the configured chunk
    assert pick_chunk(20, 256, 128, 64) == 32  # not far above the sequence
