"""The gated RMSNorm that closes a Mamba-2 mixer: both fast paths (the written-out backward
`_GatedRMSNorm`, and the C pass of `kernels/norm_cpu.c`) equal autograd through the reference
in float64, per group and across the whole width; in float32 the module (C pass by default on
CPU) is as close to the reference as torch's float32 passes; the C pass does not depend on
threads and passes torch's op checks. The plain RMSNorm's C pass: the same against
`F.rms_norm`."""

import pytest
import torch
import torch.nn.functional as F
from hnetbench.kernels import norm_cpu
from hnetbench.models.norm import GatedRMSNorm, RMSNorm, _GatedRMSNorm, gated_rms_norm_reference

needs_c = pytest.mark.skipif(not norm_cpu.available(),
                             reason=f"C norm not built: {norm_cpu.LIBRARY.why_not}")
IMPLS = [pytest.param(_GatedRMSNorm.apply, id="torch"),
         pytest.param(norm_cpu.gated_rms_norm_cpu, marks=needs_c, id="c")]


def _case(shape: tuple[int, ...], seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    z = (3 * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype).requires_grad_()
    w = torch.randn(shape[-1], generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    return x, z, w  # z out to +-10: both silu tails


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape,group_size", [
    ((2, 7, 12), 12),   # one group (ngroups = 1, the presets)
    ((2, 7, 12), 4),    # three groups
    ((5, 8), 2),        # no length axis (generation steps), groups of two
    ((3, 70, 40), 20),  # whole vectors and tails; more positions than one C work item
])
def test_gated_norm_matches_reference_forward_and_backward(impl, shape, group_size):
    x, z, w = _case(shape, seed=sum(shape) + group_size)
    ref = gated_rms_norm_reference(x, z, w, group_size, 1e-5)
    out = impl(x, z, w, group_size, 1e-5)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (x, z, w), dy)
    got = torch.autograd.grad(out, (x, z, w), dy)
    for name, a, r in zip("xzw", got, want):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10, msg=f"d{name}")


@pytest.mark.parametrize("impl", IMPLS)
def test_gated_norm_gradcheck(impl):
    x, z, w = _case((2, 3, 6), seed=3)
    assert torch.autograd.gradcheck(lambda x, z, w: impl(x, z, w, 3, 1e-5), (x, z, w))


def test_gated_norm_module_float32_as_close_as_torch():
    """The module's float32 result (the C pass, where built; its exp is a polynomial, not
    libm's) is as close to the float64 reference as torch's float32 passes are."""
    torch.manual_seed(0)
    norm = GatedRMSNorm(48, 24)
    with torch.no_grad():
        norm.weight.normal_()
    x, z, _ = _case((4, 90, 48), seed=1)
    w = norm.weight.detach().double().requires_grad_()
    ref = gated_rms_norm_reference(x, z, w, 24, norm.eps)
    dy = torch.randn_like(ref)
    want = [t.detach() for t in (ref, *torch.autograd.grad(ref, (x, z, w), dy))]
    errs = {}
    for name, fn in (("torch", lambda a, b: _GatedRMSNorm.apply(a, b, norm.weight, 24, norm.eps)),
                     ("module", norm)):
        x32, z32 = (t.detach().float().requires_grad_() for t in (x, z))
        out = fn(x32, z32)
        got = (out, *torch.autograd.grad(out, (x32, z32, norm.weight), dy.float()))
        errs[name] = [float((a.detach().double() - r).abs().max() / r.abs().max())
                      for a, r in zip(got, want)]
    for c, t in zip(errs["module"], errs["torch"]):
        assert c <= 2 * t + 1e-7, errs


@needs_c
def test_c_norm_threads_change_no_bit(torch_threads):
    x, z, w = _case((3, 100, 32), seed=5, dtype=torch.float32)
    res = []
    for n in (1, 3):
        torch_threads(n)
        out = norm_cpu.gated_rms_norm_cpu(x, z, w, 16, 1e-5)
        res.append((out, *torch.autograd.grad(out.square().sum(), (x, z, w))))
    for a, b in zip(*res):
        assert torch.equal(a, b)


@needs_c
def test_c_norm_opcheck():
    x, z, w = _case((2, 9, 16), seed=9, dtype=torch.float32)
    torch.library.opcheck(torch.ops.hnetbench.gated_rms_norm_cpu.default, (x, z, w, 8, 1e-5))


def test_c_kernels_off_runs_the_torch_passes(monkeypatch):
    from hnetbench.kernels import cpu_build
    from hnetbench.models import norm as norm_module

    monkeypatch.setattr(norm_cpu, "LIBRARY", cpu_build.CLibrary(
        norm_cpu.SOURCE, "the gated RMSNorm", norm_cpu._declare))
    monkeypatch.setenv("HNETBENCH_C_KERNELS", "off")
    assert not norm_cpu.available()
    calls = []
    real = norm_module._GatedRMSNorm.apply
    monkeypatch.setattr(norm_module._GatedRMSNorm, "apply",
                        lambda *a: calls.append(1) or real(*a))
    norm = GatedRMSNorm(12, 6).double()
    x, z, _ = _case((2, 5, 12), seed=2)
    out = norm(x, z)
    assert calls == [1]
    torch.testing.assert_close(out, gated_rms_norm_reference(x, z, norm.weight, 6, norm.eps))


# ----------------------------------------------------------------------------- plain RMSNorm


@needs_c
@pytest.mark.parametrize("shape", [(2, 7, 12), (5, 8), (3, 70, 96), (1, 1, 3)])
def test_c_rms_norm_matches_torch_float64(shape):
    x, _, w = _case(shape, seed=sum(shape))
    ref = F.rms_norm(x, (shape[-1],), w, 1e-5)
    out = norm_cpu.rms_norm_cpu(x, w, 1e-5)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(ref)
    for name, a, r in zip("xw", torch.autograd.grad(out, (x, w), dy),
                          torch.autograd.grad(ref, (x, w), dy)):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10, msg=f"d{name}")
    assert torch.autograd.gradcheck(lambda x, w: norm_cpu.rms_norm_cpu(x, w, 1e-5),
                                    (x[..., :3, :].detach().requires_grad_(), w))


@needs_c
def test_c_rms_norm_float32_as_close_as_torch(float32_as_close_as_torch):
    x, _, w = _case((4, 90, 64), seed=4)
    float32_as_close_as_torch(lambda a, b: F.rms_norm(a, (64,), b, 1e-5),
                              lambda a, b: norm_cpu.rms_norm_cpu(a, b, 1e-5), (x, w),
                              torch.randn(4, 90, 64, dtype=torch.float64))


@needs_c
def test_c_rms_norm_threads_change_no_bit_and_opcheck(torch_threads):
    x, _, w = _case((3, 150, 32), seed=6, dtype=torch.float32)
    res = []
    for n in (1, 3):
        torch_threads(n)
        out = norm_cpu.rms_norm_cpu(x, w, 1e-5)
        res.append((out, *torch.autograd.grad(out.square().sum(), (x, w))))
    assert all(torch.equal(a, b) for a, b in zip(*res))
    torch.library.opcheck(torch.ops.hnetbench.rms_norm_cpu.default, (x, w, 1e-5))


def test_rms_norm_module_uses_c_where_built():
    """The module runs the C pass on CPU when it is built, else F.rms_norm; values agree."""
    norm = RMSNorm(16).double()
    x, _, _ = _case((2, 5, 16), seed=8)
    torch.testing.assert_close(norm(x), F.rms_norm(x, (16,), norm.weight, norm.eps),
                               rtol=1e-12, atol=1e-12)
