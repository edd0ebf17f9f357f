"""The SwiGLU activation in C (`kernels/swiglu_cpu.c`): equal to torch's silu(gate) * value
in float64, forward and backward, with gates far into both silu tails; as close as torch in
float32; threads change no bit; torch's op checks pass; the MLP uses it on CPU and falls back
to torch when it is off."""

import pytest
import torch
import torch.nn.functional as F
from hnetbench.kernels import swiglu_cpu
from hnetbench.models.mlp import SwiGLU

needs_c = pytest.mark.skipif(not swiglu_cpu.available(),
                             reason=f"C SwiGLU not built: {swiglu_cpu.LIBRARY.why_not}")


def _torch(h: torch.Tensor) -> torch.Tensor:
    gate, value = h.chunk(2, dim=-1)
    return F.silu(gate) * value


def _h(shape, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (8 * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype).requires_grad_()


@needs_c
@pytest.mark.parametrize("shape", [(2, 7, 24), (5, 10), (3, 70, 512), (1, 1, 2)])
def test_c_swiglu_matches_torch_float64(shape):
    h = _h(shape, seed=sum(shape))
    out, ref = swiglu_cpu.swiglu_cpu(h), _torch(h)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(ref)
    (a,), (b,) = torch.autograd.grad(out, h, dy), torch.autograd.grad(ref, h, dy)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@needs_c
def test_c_swiglu_float32_as_close_as_torch_and_gradcheck(float32_as_close_as_torch):
    float32_as_close_as_torch(_torch, swiglu_cpu.swiglu_cpu, (_h((4, 90, 128), seed=1),),
                              torch.randn(4, 90, 64, dtype=torch.float64))
    assert torch.autograd.gradcheck(swiglu_cpu.swiglu_cpu, (_h((2, 3, 8), seed=2) / 8,))


@needs_c
def test_c_swiglu_threads_change_no_bit_and_opcheck(torch_threads):
    h = _h((3, 100, 64), seed=5, dtype=torch.float32)
    res = []
    for n in (1, 3):
        torch_threads(n)
        out = swiglu_cpu.swiglu_cpu(h)
        res.append((out, *torch.autograd.grad(out.square().sum(), h)))
    assert all(torch.equal(a, b) for a, b in zip(*res))
    torch.library.opcheck(torch.ops.hnetbench.swiglu_cpu.default, (h,))


def test_mlp_falls_back_to_torch_when_c_is_off(monkeypatch):
    torch.manual_seed(0)
    mlp = SwiGLU(12, 20).double()
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    want = mlp.fc2(_torch(mlp.fc1(x)))
    torch.testing.assert_close(mlp(x), want, rtol=1e-12, atol=1e-12)  # C where built
    monkeypatch.setattr(swiglu_cpu, "available", lambda: False)
    torch.testing.assert_close(mlp(x), want, rtol=0, atol=0)  # the torch expression itself
