"""Torch paths of hnetbench.kernels: the blocked-scan EMA against the sequential loop, gradients
(gradcheck in float64), document resets, and backend dispatch. The Triton kernels are tested
under the interpreter in tests/test_kernels_triton.py."""

from __future__ import annotations

import os

import pytest
import torch
from hnetbench.kernels import cosine_probs, cosine_probs_reference, ema_smooth
from hnetbench.kernels.ema import METHODS, ema_chunked, ema_reference, linear_scan
from hypothesis import given, settings
from hypothesis import strategies as st


def make_p(B: int, M: int, gen: torch.Generator, dtype=torch.float64, docs: int = 3):
    """Probabilities with P == 1 at position 0 and at random document starts, a band of
    values near 0 and near 1, and some exact zeros."""
    p = torch.rand(B, M, generator=gen, dtype=dtype)
    u = torch.rand(B, M, generator=gen)
    p = torch.where(u < 0.15, torch.full_like(p, 1e-6), p)
    p = torch.where((u >= 0.15) & (u < 0.3), torch.full_like(p, 1 - 1e-6), p)
    p = torch.where((u >= 0.3) & (u < 0.35), torch.zeros_like(p), p)
    if M:
        p[:, 0] = 1.0
        starts = torch.randint(0, M, (B, docs), generator=gen)
        p.scatter_(1, starts, 1.0)
    return p


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("M,block", [(1, 4), (7, 4), (8, 4), (37, 8), (200, None), (513, 64)])
def test_chunked_matches_reference_float64(M: int, block: int | None, method: str) -> None:
    gen = torch.Generator().manual_seed(M)
    x = torch.randn(3, M, 5, generator=gen, dtype=torch.float64)
    p = make_p(3, M, gen)
    ref = ema_reference(x, p)
    torch.testing.assert_close(ema_chunked(x, p, block, method), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_chunked_float32_long_memory(method: str) -> None:
    # P ~ 1e-3 keeps information for ~1000 steps, across many blocks: error must not accumulate.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3000, 16, generator=gen)
    p = torch.full((2, 3000), 1e-3)
    p[:, 0] = 1.0
    ref = ema_reference(x.double(), p.double())
    torch.testing.assert_close(ema_chunked(x, p, method=method).double(), ref, rtol=1e-4, atol=1e-5)


def test_chunked_keeps_dtype_and_handles_empty() -> None:
    x = torch.randn(2, 9, 4, dtype=torch.bfloat16)
    p = torch.rand(2, 9)
    out = ema_chunked(x, p)
    assert out.dtype == torch.bfloat16
    ref = ema_reference(x.float(), p)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    empty = torch.zeros(2, 0, 4)
    assert ema_chunked(empty, torch.zeros(2, 0)).shape == (2, 0, 4)
    assert ema_reference(empty, torch.zeros(2, 0)).shape == (2, 0, 4)


@pytest.mark.parametrize("method", METHODS)
def test_chunked_non_contiguous_inputs(method: str) -> None:
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(2, 5, 64, generator=gen, dtype=torch.float64).transpose(1, 2)  # (2, 64, 5)
    p = torch.rand(2, 128, generator=gen, dtype=torch.float64)[:, ::2]
    torch.testing.assert_close(ema_chunked(x, p, method=method), ema_reference(x, p))
    g = torch.randn(2, 5, 64, generator=gen, dtype=torch.float64).transpose(1, 2)
    xs, ps = x.clone().requires_grad_(True), p.clone().requires_grad_(True)
    ref = torch.autograd.grad(ema_reference(xs, ps), (xs, ps), g)
    got = torch.autograd.grad(ema_chunked(xs, ps, method=method), (xs, ps), g)
    for r, c in zip(ref, got):
        torch.testing.assert_close(c, r)


def test_shape_error_is_one_line() -> None:
    with pytest.raises(ValueError, match=r"expected x \(B, M, D\) and p \(B, M\)"):
        ema_chunked(torch.zeros(2, 3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"method 'fft' is not one of loop\|matmul"):
        ema_chunked(torch.zeros(2, 3, 4), torch.zeros(2, 3), method="fft")
    with pytest.raises(ValueError, match=r"cosine_probs: expected q, k \(B, L, D\)"):
        cosine_probs(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))


def test_document_reset_isolates_documents() -> None:
    # Everything before a P == 1 chunk must be invisible after it, exactly.
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 50, 6, generator=gen, dtype=torch.float64)
    p = torch.rand(2, 50, generator=gen, dtype=torch.float64)
    p[:, 0] = 1.0
    p[:, 23] = 1.0
    x2 = x.clone()
    x2[:, :23] = torch.randn(2, 23, 6, generator=gen, dtype=torch.float64) * 100
    for method in METHODS:
        y, y2 = ema_chunked(x, p, 8, method), ema_chunked(x2, p, 8, method)
        assert torch.equal(y[:, 23:], y2[:, 23:])
        assert not torch.allclose(y[:, :23], y2[:, :23])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("M,block", [(6, 4), (19, 8)])
def test_chunked_gradcheck(M: int, block: int, method: str) -> None:
    gen = torch.Generator().manual_seed(10 + M)
    x = torch.randn(2, M, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    p = make_p(2, M, gen, docs=2).requires_grad_(True)  # includes P == 1 and P == 0 exactly
    assert torch.autograd.gradcheck(lambda a, b: ema_chunked(a, b, block, method), (x, p))


@pytest.mark.parametrize("method", METHODS)
def test_chunked_grads_match_reference_at_resets(method: str) -> None:
    # At P == 1 the true dP is z_t - zbar_{t-1}; a log-space autograd would give NaN there.
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 150, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    p = make_p(3, 150, gen, docs=6).requires_grad_(True)
    g = torch.randn(3, 150, 7, generator=gen, dtype=torch.float64)
    ref = torch.autograd.grad(ema_reference(x, p), (x, p), g)
    got = torch.autograd.grad(ema_chunked(x, p, 16, method), (x, p), g)
    for r, c in zip(ref, got):
        assert torch.isfinite(c).all()
        torch.testing.assert_close(c, r, rtol=1e-10, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 3),
    M=st.integers(1, 90),
    D=st.integers(1, 6),
    block=st.sampled_from([None, 1, 2, 8, 32]),
    method=st.sampled_from(METHODS),
    seed=st.integers(0, 2**31 - 1),
)
def test_chunked_property(B: int, M: int, D: int, block, method: str, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, M, D, generator=gen, dtype=torch.float64)
    p = make_p(B, M, gen, docs=2)
    ref = ema_reference(x, p)
    torch.testing.assert_close(ema_chunked(x, p, block, method), ref, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("M", [40, 45])
def test_linear_scan_general_decay(method: str, reverse: bool, M: int) -> None:
    # linear_scan also serves the backward (reverse=True), including a < 0 from P > 1 and a
    # length that leaves a padded block.
    gen = torch.Generator().manual_seed(3)
    a = torch.rand(2, M, generator=gen, dtype=torch.float64) * 2.2 - 1.1
    a[0, 5] = 0.0
    u = torch.randn(2, M, 3, generator=gen, dtype=torch.float64)
    w = torch.rand(2, M, generator=gen, dtype=torch.float64)
    h, ref = torch.zeros(2, 3, dtype=torch.float64), [None] * M
    for t in range(M - 1, -1, -1) if reverse else range(M):
        h = a[:, t, None] * h + w[:, t, None] * u[:, t]
        ref[t] = h
    got = linear_scan(a, u, 8, w=w, method=method, reverse=reverse)
    torch.testing.assert_close(got, torch.stack(ref, 1), rtol=1e-10, atol=1e-10)


def test_dispatch_auto_and_torch_on_cpu() -> None:
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 30, 4, generator=gen)
    p = make_p(2, 30, gen, dtype=torch.float32)
    ref = ema_reference(x, p)
    for backend in ("auto", "torch"):
        torch.testing.assert_close(ema_smooth(x, p, backend=backend), ref, rtol=1e-5, atol=1e-6)
    q, k = torch.randn(2, 30, 8, generator=gen), torch.randn(2, 30, 8, generator=gen)
    doc = torch.rand(2, 30, generator=gen) < 0.2
    pr = cosine_probs(q, k, doc)
    torch.testing.assert_close(pr, cosine_probs_reference(q, k, doc))
    pr2, b = cosine_probs(q, k, doc, backend="torch", return_boundaries=True)
    assert torch.equal(pr2, pr) and torch.equal(b, pr > 0.5)
    assert (pr[:, 0] == 1).all() and (pr[doc] == 1).all()


def test_dispatch_errors_are_one_line() -> None:
    x, p = torch.randn(1, 4, 2), torch.rand(1, 4)
    msg = r"backend \(model.kernels\) 'cuda' is not one of auto\|torch\|triton"
    with pytest.raises(ValueError, match=msg):
        ema_smooth(x, p, backend="cuda")
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("TRITON_INTERPRET=1 makes backend='triton' valid on CPU")
    with pytest.raises(ValueError, match=r"backend='triton' needs CUDA tensors, got cpu") as e:
        ema_smooth(x, p, backend="triton")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"cosine_probs: backend='triton' needs CUDA"):
        cosine_probs(x, x, backend="triton")
