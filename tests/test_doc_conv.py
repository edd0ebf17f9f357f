"""The Mamba-2 conv (`models.doc_conv`): both fast paths (the torch passes and the C pass of
`kernels/conv_cpu.c`, with and without the SiLU) equal the written-out reference, forward and
backward in float64, with document starts everywhere from every position to none; the C pass
in float32, its independence from threads, torch's op checks."""

import pytest
import torch
import torch.nn.functional as F
from hnetbench.kernels import conv_cpu
from hnetbench.models.doc_conv import _DocConv, doc_conv, doc_conv_reference

needs_c = pytest.mark.skipif(not conv_cpu.available(),
                             reason=f"C conv not built: {conv_cpu.LIBRARY.why_not}")


def _torch_path(x, w, bias, doc, silu):  # noqa: ANN001, ANN202
    out = _DocConv.apply(x, w, bias, doc)
    return F.silu(out) if silu else out


IMPLS = [pytest.param(_torch_path, id="torch"),
         pytest.param(conv_cpu.doc_conv_cpu, marks=needs_c, id="c")]


def _reference(x, w, bias, doc, silu):  # noqa: ANN001, ANN202
    out = doc_conv_reference(x, w, bias, doc)
    return F.silu(out) if silu else out


def _case(b: int, L: int, C: int, K: int, p_start: float, seed: int,
          dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, L, C, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    w = torch.randn(C, K, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    bias = torch.randn(C, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    doc = (torch.rand(b, L, generator=g) < p_start).long().cumsum(1)
    return x, w, bias, doc


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize("b,L,C,K,p_start", [
    (3, 40, 5, 4, 0.0),    # one document per row
    (3, 40, 5, 4, 0.15),   # documents of a few positions
    (2, 17, 3, 4, 1.0),    # every position its own document
    (2, 3, 4, 4, 0.5),     # shorter than the kernel
    (2, 33, 6, 2, 0.3),    # another kernel width
    (2, 50, 24, 4, 0.1),   # channels in whole vectors (and a tail of 8 floats)
])
def test_doc_conv_matches_reference_forward_and_backward(impl, silu, b, L, C, K, p_start):
    x, w, bias, doc = _case(b, L, C, K, p_start, seed=L + K)
    ref = _reference(x, w, bias, doc, silu)
    out = impl(x, w, bias, doc, silu)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (x, w, bias), g)
    got = torch.autograd.grad(out, (x, w, bias), g)
    for a, r in zip(got, want):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)


@needs_c
@pytest.mark.parametrize("silu", [False, True])
def test_c_conv_float32_is_as_close_as_torch(silu):
    """In float32 (its exp is a polynomial, not libm's) the C pass is as close to the float64
    reference as torch's float32 passes are, forward and backward, over the range
    activations take."""
    x, w, bias, doc = _case(2, 300, 40, 4, 0.05, seed=11)
    with torch.no_grad():
        x.mul_(6)  # pre-activations out to about +-40: exp's clamps and both tails
    ref = _reference(x, w, bias, doc, silu)
    g = torch.randn_like(ref)
    want = [t.detach() for t in (ref, *torch.autograd.grad(ref, (x, w, bias), g))]
    errs = {}
    for name, impl in (("torch", _torch_path), ("c", conv_cpu.doc_conv_cpu)):
        x32, w32, b32 = (t.detach().float().requires_grad_() for t in (x, w, bias))
        out = impl(x32, w32, b32, doc, silu)
        got = (out, *torch.autograd.grad(out, (x32, w32, b32), g.float()))
        errs[name] = [float((a.detach().double() - r).abs().max() / r.abs().max())
                      for a, r in zip(got, want)]
    for c, t in zip(errs["c"], errs["torch"]):
        assert c <= 2 * t + 1e-7, errs


def test_doc_conv_gradcheck():
    x, w, bias, doc = _case(2, 12, 3, 4, 0.25, seed=7)
    assert torch.autograd.gradcheck(lambda x, w, bias: doc_conv(x, w, bias, doc), (x, w, bias))
    assert torch.autograd.gradcheck(lambda x, w, bias: doc_conv(x, w, bias, doc, silu=True),
                                    (x, w, bias))


@pytest.mark.parametrize("silu", [False, True])
def test_doc_conv_isolates_documents(silu):
    x, w, bias, doc = _case(1, 30, 4, 4, 0.0, seed=3)
    doc = torch.zeros(1, 30, dtype=torch.long)
    doc[:, 12:] = 1
    x2 = x.detach().clone()
    x2[:, :12] += 5.0  # change only the first document
    a, b2 = doc_conv(x, w, bias, doc, silu), doc_conv(x2, w, bias, doc, silu)
    torch.testing.assert_close(a[:, 12:], b2[:, 12:], rtol=0, atol=0)
    assert not torch.allclose(a[:, :12], b2[:, :12])


@needs_c
def test_c_conv_threads_change_no_bit(torch_threads):
    x, w, bias, doc = _case(5, 64, 16, 4, 0.1, seed=5, dtype=torch.float32)
    res = []
    for n in (1, 3):
        torch_threads(n)
        out = conv_cpu.doc_conv_cpu(x, w, bias, doc, True)
        res.append((out, *torch.autograd.grad(out.square().sum(), (x, w, bias))))
    for a, b in zip(*res):
        assert torch.equal(a, b)


@needs_c
def test_c_conv_opcheck():
    x, w, bias, doc = _case(2, 20, 8, 4, 0.2, seed=9, dtype=torch.float32)
    torch.library.opcheck(torch.ops.hnetbench.doc_conv_cpu.default,
                          (x, w.t(), bias, doc, True))


def test_c_kernels_off_runs_the_torch_passes(monkeypatch, caplog):
    from hnetbench.kernels import cpu_build
    from hnetbench.models import doc_conv as doc_conv_module

    caplog.set_level("WARNING")
    monkeypatch.setattr(conv_cpu, "LIBRARY", cpu_build.CLibrary(
        conv_cpu.SOURCE, "the Mamba-2 conv", conv_cpu._declare))
    monkeypatch.setenv("HNETBENCH_C_KERNELS", "off")
    assert not conv_cpu.available() and "HNETBENCH_C_KERNELS=off" in conv_cpu.LIBRARY.why_not
    assert "the Mamba-2 conv in C is off" in caplog.text
    calls = []
    real = doc_conv_module._DocConv.apply
    monkeypatch.setattr(doc_conv_module._DocConv, "apply",
                        lambda *a: calls.append(1) or real(*a))
    x, w, bias, doc = _case(2, 20, 4, 4, 0.2, seed=1)
    out = doc_conv(x, w, bias, doc, silu=True)
    assert calls == [1]
    torch.testing.assert_close(out, _reference(x, w, bias, doc, True), rtol=1e-12, atol=1e-12)
