"""The gated RMSNorm that closes a Mamba-2 mixer: the written-out backward (`_GatedRMSNorm`)
equals autograd through the reference in float64, per group and across the whole width, and
the module keeps the reference's float32 result."""

import pytest
import torch
from hnetbench.models.norm import GatedRMSNorm, _GatedRMSNorm, gated_rms_norm_reference


def _case(shape: tuple[int, ...], seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=dtype, requires_grad=True)
    z = (3 * torch.randn(*shape, generator=g, dtype=dtype)).requires_grad_()  # both silu tails
    w = torch.randn(shape[-1], generator=g, dtype=dtype, requires_grad=True)
    return x, z, w


@pytest.mark.parametrize("shape,group_size", [
    ((2, 7, 12), 12),   # one group (ngroups = 1, the presets)
    ((2, 7, 12), 4),    # three groups
    ((5, 8), 2),        # no length axis (generation steps), groups of two
])
def test_gated_norm_matches_reference_forward_and_backward(shape, group_size):
    x, z, w = _case(shape, seed=sum(shape) + group_size)
    ref = gated_rms_norm_reference(x, z, w, group_size, 1e-5)
    out = _GatedRMSNorm.apply(x, z, w, group_size, 1e-5)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (x, z, w), dy)
    got = torch.autograd.grad(out, (x, z, w), dy)
    for name, a, r in zip("xzw", got, want):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10, msg=f"d{name}")


def test_gated_norm_gradcheck():
    x, z, w = _case((2, 3, 6), seed=3)
    assert torch.autograd.gradcheck(
        lambda x, z, w: _GatedRMSNorm.apply(x, z, w, 3, 1e-5), (x, z, w))


def test_gated_norm_module_float32_close_to_reference():
    torch.manual_seed(0)
    norm = GatedRMSNorm(16, 8)
    with torch.no_grad():
        norm.weight.normal_()
    x, z, _ = _case((4, 9, 16), seed=1, dtype=torch.float32)
    ref = gated_rms_norm_reference(x, z, norm.weight, 8, norm.eps)
    out = norm(x, z)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    dy = torch.randn_like(ref)
    for a, r in zip(torch.autograd.grad(out, (x, z, norm.weight), dy),
                    torch.autograd.grad(ref, (x, z, norm.weight), dy)):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)
