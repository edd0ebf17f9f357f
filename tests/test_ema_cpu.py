"""The smoothing EMA's C pass (`kernels/ema_cpu.c`): equal to the sequential reference loop in
float64, forward and backward, across document resets (P == 1), P == 0, tails of the 8-lane
sums and non-contiguous inputs; float32 as close to float64 as the torch path; no bit depends on
threads; torch's op checks; `ema_smooth` takes it on CPU, and the torch path when C is off."""

from __future__ import annotations

import pytest
import torch
from hnetbench.kernels import ema_cpu, ema_smooth
from hnetbench.kernels.ema import ema_chunked, ema_reference

needs_c = pytest.mark.skipif(not ema_cpu.available(),
                             reason=f"C EMA not built: {ema_cpu.LIBRARY.why_not}")


def _case(B: int, M: int, D: int, seed: int, dtype=torch.float64):
    """x, and p with P == 1 at each row's start and at a few document starts, some exact
    zeros and values near 0 and 1; both require grad."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, M, D, generator=g, dtype=torch.float64)
    p = torch.rand(B, M, generator=g, dtype=torch.float64)
    u = torch.rand(B, M, generator=g)
    p = torch.where(u < 0.1, 1e-6, torch.where(u < 0.2, 1 - 1e-6, torch.where(u < 0.25, 0.0, p)))
    if M:
        p[:, 0] = 1.0
        p.scatter_(1, torch.randint(0, M, (B, 2), generator=g), 1.0)
    return x.to(dtype).requires_grad_(), p.to(dtype).requires_grad_()


@needs_c
@pytest.mark.parametrize("B,M,D", [(1, 1, 1), (2, 7, 5), (3, 40, 16), (2, 150, 21), (2, 0, 4)])
def test_c_ema_matches_reference_float64(B: int, M: int, D: int):
    x, p = _case(B, M, D, seed=B * 1000 + M + D)
    ref = ema_reference(x, p)
    out = ema_cpu.ema_cpu(x, p)
    torch.testing.assert_close(out, ref, rtol=1e-13, atol=1e-13)
    if not M:
        return
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(M), dtype=torch.float64)
    want = torch.autograd.grad(ref, (x, p), g)
    got = torch.autograd.grad(out, (x, p), g)
    for name, a, r in zip(("dx", "dp"), got, want):
        assert torch.isfinite(a).all(), name  # P == 1 and P == 0 included
        torch.testing.assert_close(a, r, rtol=1e-11, atol=1e-11, msg=name)


@needs_c
def test_c_ema_non_contiguous_inputs_and_gradcheck():
    x, p = _case(2, 64, 5, seed=3)
    xt = x.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()  # (2, 64, 5)
    pt = torch.stack([p.detach(), p.detach()], -1)[..., 0].requires_grad_()
    assert not xt.is_contiguous() and not pt.is_contiguous()
    torch.testing.assert_close(ema_cpu.ema_cpu(xt, pt), ema_reference(xt, pt), rtol=1e-13,
                               atol=1e-13)
    xs, ps = _case(2, 9, 3, seed=4)
    assert torch.autograd.gradcheck(ema_cpu.ema_cpu, (xs, ps))


@needs_c
def test_c_ema_float32_as_close_as_torch(float32_as_close_as_torch):
    x, p = _case(4, 300, 32, seed=5)
    dy = torch.randn(4, 300, 32, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    float32_as_close_as_torch(ema_chunked, ema_cpu.ema_cpu, (x, p), dy)


@needs_c
def test_c_ema_threads_change_no_bit_and_opcheck(torch_threads):
    x, p = _case(5, 80, 24, seed=7, dtype=torch.float32)
    res = []
    for n in (1, 2, 3):
        torch_threads(n)
        out = ema_cpu.ema_cpu(x, p)
        res.append([out, *torch.autograd.grad(out.square().sum(), (x, p))])
    assert all(torch.equal(a, b) for r in res[1:] for a, b in zip(r, res[0]))
    torch.library.opcheck(torch.ops.hnetbench.ema_cpu.default, (x, p))


@needs_c
def test_ema_smooth_takes_c_on_cpu_and_torch_when_c_is_off(monkeypatch):
    from hnetbench.kernels import cpu_build

    x, p = _case(2, 30, 8, seed=8, dtype=torch.float32)
    assert torch.equal(ema_smooth(x, p), ema_cpu.ema_cpu(x, p))
    with pytest.raises(ValueError, match=r"expected x \(B, M, D\) and p \(B, M\)"):
        ema_cpu.ema_cpu(x, p[:, 1:])  # the C code trusts the shapes: they are checked first
    monkeypatch.setattr(ema_cpu, "LIBRARY", cpu_build.CLibrary(
        ema_cpu.SOURCE, "the chunk EMA", ema_cpu._declare, switch=("HNETBENCH_EMA", "torch")))
    monkeypatch.setenv("HNETBENCH_EMA", "torch")
    assert not ema_cpu.available() and ema_cpu.LIBRARY.why_not == "HNETBENCH_EMA=torch"
    assert torch.equal(ema_smooth(x, p), ema_chunked(x, p))
    with pytest.raises(ValueError, match=r"expected x \(B, M, D\) and p \(B, M\)"):
        ema_smooth(x, p[:, 1:])
