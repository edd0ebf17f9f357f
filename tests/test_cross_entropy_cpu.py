"""The training loss in C (`kernels/cross_entropy_cpu.c`): equal to F.cross_entropy(sum,
ignore_index=-100) in float64, value and gradient, with ignored rows, one class and rows of
every scale; as close as torch in float32; threads change no bit; torch's op checks pass; a
bad target is a one-line error; the model's loss uses it on CPU."""

import pytest
import torch
import torch.nn.functional as F
from hnetbench.kernels import cross_entropy_cpu

needs_c = pytest.mark.skipif(not cross_entropy_cpu.available(),
                             reason=f"C cross-entropy not built: "
                                    f"{cross_entropy_cpu.LIBRARY.why_not}")


def _case(N, V, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-2, 2, N, dtype=torch.float64)[:, None]  # flat to peaked rows
    x = (scale * torch.randn(N, V, generator=g, dtype=torch.float64)).to(dtype)
    t = torch.randint(0, V, (N,), generator=g)
    t[::5] = -100
    return x.requires_grad_(), t


@needs_c
@pytest.mark.parametrize("N,V", [(40, 257), (7, 512), (3, 1), (1, 33)])
def test_c_cross_entropy_matches_torch_float64(N, V):
    x, t = _case(N, V, seed=N + V)
    out = cross_entropy_cpu.cross_entropy_sum_cpu(x, t)
    ref = F.cross_entropy(x, t, ignore_index=-100, reduction="sum")
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    (a,), (b,) = (torch.autograd.grad(1.7 * v, x) for v in (out, ref))
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@needs_c
def test_c_cross_entropy_float32_as_close_as_torch_and_gradcheck(float32_as_close_as_torch):
    x, t = _case(200, 257, seed=1)
    float32_as_close_as_torch(lambda a: F.cross_entropy(a, t, reduction="sum"),
                              lambda a: cross_entropy_cpu.cross_entropy_sum_cpu(a, t), (x,))
    small, ts = _case(6, 9, seed=2)
    assert torch.autograd.gradcheck(lambda a: cross_entropy_cpu.cross_entropy_sum_cpu(a, ts),
                                    (small,))


@needs_c
def test_c_cross_entropy_threads_change_no_bit_and_opcheck(torch_threads):
    x, t = _case(300, 64, seed=5, dtype=torch.float32)
    res = []
    for n in (1, 3):
        torch_threads(n)
        out = cross_entropy_cpu.cross_entropy_sum_cpu(x, t)
        res.append((out, *torch.autograd.grad(out, x)))
    assert all(torch.equal(a, b) for a, b in zip(*res))
    torch.library.opcheck(torch.ops.hnetbench.cross_entropy_sum_cpu.default, (x, t))


@needs_c
def test_bad_target_is_a_one_line_error():
    x, t = _case(4, 10, seed=3)
    for bad in (10, -1):
        t2 = t.clone()
        t2[1] = bad
        with pytest.raises(ValueError, match=f"target {bad} is outside the vocabulary"):
            cross_entropy_cpu.cross_entropy_sum_cpu(x, t2)


def test_model_loss_is_the_cross_entropy_either_way(monkeypatch):
    """A byte model's loss: the same value through the C pass and through F.cross_entropy."""
    from hnetbench.config import resolve
    from hnetbench.models import build_model

    cfg = resolve(base={"preset": "transformer-bpe@cpu-tiny",
                        "model": {"layout": "T1", "vocab_size": 64}})
    torch.manual_seed(0)
    model = build_model(cfg.model).double()
    ids = torch.randint(0, 64, (2, 30))
    targets = ids[:, 1:].clone()
    targets[0, :4] = -100
    got = model(ids[:, :-1], targets=targets)
    if cross_entropy_cpu.available():  # the C op's autograd node, not torch's NLL loss
        assert "NllLoss" not in type(got.nats_sum.grad_fn).__name__
    monkeypatch.setattr(cross_entropy_cpu, "available", lambda: False)
    want = model(ids[:, :-1], targets=targets)
    torch.testing.assert_close(got.nats_sum, want.nats_sum, rtol=1e-12, atol=1e-12)
    assert got.n_targets == want.n_targets == 2 * 29 - 4
