"""The Mamba-2 conv (`models.doc_conv`): the fast path equals the written-out reference, forward and
backward in float64, with document starts everywhere from every position to none."""

import pytest
import torch
from hnetbench.models.doc_conv import doc_conv, doc_conv_reference


def _case(b: int, L: int, C: int, K: int, p_start: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, L, C, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(C, K, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(C, generator=g, dtype=torch.float64, requires_grad=True)
    doc = (torch.rand(b, L, generator=g) < p_start).long().cumsum(1)
    return x, w, bias, doc


@pytest.mark.parametrize("b,L,C,K,p_start", [
    (3, 40, 5, 4, 0.0),    # one document per row
    (3, 40, 5, 4, 0.15),   # documents of a few positions
    (2, 17, 3, 4, 1.0),    # every position its own document
    (2, 3, 4, 4, 0.5),     # shorter than the kernel
    (2, 33, 6, 2, 0.3),    # another kernel width
])
def test_doc_conv_matches_reference_forward_and_backward(b, L, C, K, p_start):
    x, w, bias, doc = _case(b, L, C, K, p_start, seed=L + K)
    ref = doc_conv_reference(x, w, bias, doc)
    out = doc_conv(x, w, bias, doc)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (x, w, bias), g)
    got = torch.autograd.grad(out, (x, w, bias), g)
    for a, r in zip(got, want):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)


def test_doc_conv_gradcheck():
    x, w, bias, doc = _case(2, 12, 3, 4, 0.25, seed=7)
    assert torch.autograd.gradcheck(lambda x, w, bias: doc_conv(x, w, bias, doc), (x, w, bias))


def test_doc_conv_isolates_documents():
    x, w, bias, doc = _case(1, 30, 4, 4, 0.0, seed=3)
    doc = torch.zeros(1, 30, dtype=torch.long)
    doc[:, 12:] = 1
    x2 = x.detach().clone()
    x2[:, :12] += 5.0  # change only the first document
    a, b2 = doc_conv(x, w, bias, doc), doc_conv(x2, w, bias, doc)
    torch.testing.assert_close(a[:, 12:], b2[:, 12:], rtol=0, atol=0)
    assert not torch.allclose(a[:, :12], b2[:, :12])
