"""The CPU default SSD scan (models/ssd.py) against the sequential recurrence and the previous
chunked scan, in float64, forward and backward, with document resets."""

from __future__ import annotations

import pytest
import torch
from hnetbench.models.mamba2 import ssd_chunked, ssd_naive
from hnetbench.models.ssd import pick_chunk, ssd_scan


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
def test_ssd_scan_matches_reference_forward_and_backward(b, L, H, P, N, G, chunk, resets):
    args, start = _inputs(b, L, H, P, N, G, resets)
    doc = start.long().cumsum(1)
    for a in args:
        a.requires_grad_(True)
    y_new, s_new = ssd_scan(*args, chunk, doc)
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


def test_ssd_scan_isolates_documents():
    """Changing one document's inputs leaves every other document's outputs bit-for-bit alone."""
    args, start = _inputs(1, 80, 2, 4, 4, 1, 0.0)
    start[0, 37] = True
    doc = start.long().cumsum(1)
    y1, _ = ssd_scan(*args, 32, doc)
    x2 = args[0].clone()
    x2[0, :37] += 5.0  # perturb the first document only
    y2, _ = ssd_scan(x2, *args[1:], 32, doc)
    assert torch.equal(y1[0, 37:], y2[0, 37:])
    assert not torch.allclose(y1[0, :37], y2[0, :37])


def test_pick_chunk_follows_the_shape():
    assert pick_chunk(512, 64, 32, 32) == 32  # sqrt(N*P) = 32
    assert pick_chunk(512, 256, 128, 64) == 64  # paper widths: sqrt(8192) = 2^6.5 -> 2^6
    assert pick_chunk(512, 16, 128, 64) == 16  # never above the configured chunk
    assert pick_chunk(20, 256, 128, 64) == 32  # not far above the sequence
