"""The C scan (kernels/ssd_cpu.c) beyond the shared parity tests of test_ssd.py: both of its
code paths (vectors of 8 floats / 4 doubles, and scalar loops for other head widths) in both
precisions, independence from threads and from how B and C are laid out, torch's op checks,
the build cache, and the fallback to the torch scan when there is no compiler."""

from __future__ import annotations

import ctypes

import pytest
import torch
from hnetbench.kernels import cpu_build, ssd_cpu
from hnetbench.models import ssd
from hnetbench.models.mamba2 import ssd_naive

pytestmark = pytest.mark.skipif(not ssd_cpu.available(),
                                reason=f"C scan not built: {ssd_cpu.why_not()}")


def _inputs(b, L, H, P, N, G, dtype, seed=0):  # noqa: ANN001, ANN202
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, L, H, P, generator=g, dtype=torch.float64)
    dt = torch.rand(b, L, H, generator=g, dtype=torch.float64) * 0.5
    A = -torch.rand(H, generator=g, dtype=torch.float64) * 4
    bc = torch.randn(b, L, 2 * G * N, generator=g, dtype=torch.float64)  # the mixer's B|C
    start = torch.rand(b, L, generator=g) < 0.03
    start[:, 0] = True
    return [t.to(dtype) for t in (x, dt, A, bc)], start


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "b,L,H,P,N,G",
    [
        (2, 200, 4, 16, 16, 1),  # vector path (2 float / 4 double vectors), whole tiles of N
        (2, 130, 4, 32, 12, 2),  # vector path, N not a multiple of the width, 2 groups
        (1, 65, 2, 64, 8, 1),  # 8 float vectors per row; 16 doubles: scalar path
        (2, 70, 3, 6, 5, 1),  # scalar path
    ],
)
def test_c_scan_matches_naive_recurrence(b, L, H, P, N, G, dtype):
    """Forward (y with the skip D x, and the final state) and the gradients of every input
    against the sequential recurrence in float64, with document resets and B, C as views of one
    tensor."""
    (x, dt, A, bc), start = _inputs(b, L, H, P, N, G, dtype)
    D = torch.randn(H, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(dtype)
    doc = start.long().cumsum(1)
    for t in (x, dt, A, bc, D):
        t.requires_grad_(True)
    B, C = bc.unflatten(-1, (2, G, N)).unbind(2)
    y, s = ssd.ssd_scan(x, dt, A, B, C, 64, doc, D)
    ref = [t.detach().double().requires_grad_(True) for t in (x, dt, A, bc, D)]
    Br, Cr = ref[3].unflatten(-1, (2, G, N)).unbind(2)
    y_ref, s_ref = ssd_naive(ref[0], ref[1], ref[2], Br, Cr, start)
    y_ref = y_ref + ref[0] * ref[4][:, None]
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4)
    torch.testing.assert_close(y.double(), y_ref, **tol)
    torch.testing.assert_close(s.double(), s_ref, **tol)
    g = torch.Generator().manual_seed(1)
    wy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    ws = torch.randn(s.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad((y.double() * wy).sum() + (s.double() * ws).sum(),
                              (x, dt, A, bc, D))
    want = torch.autograd.grad((y_ref * wy).sum() + (s_ref * ws).sum(), ref)
    for name, a, w in zip(("x", "dt", "A", "B|C", "D"), got, want):
        torch.testing.assert_close(a.double(), w, **tol, msg=f"d{name}")


def test_c_scan_gradient_of_y_alone():
    """The usual training case: the final state unused (its gradient never materialised)."""
    (x, dt, A, bc), start = _inputs(2, 90, 4, 8, 8, 1, torch.float64)
    doc = start.long().cumsum(1)
    for t in (x, dt, A, bc):
        t.requires_grad_(True)
    B, C = bc.unflatten(-1, (2, 1, 8)).unbind(2)
    y, _ = ssd.ssd_scan(x, dt, A, B, C, 64, doc)
    y_ref, _ = ssd_naive(x, dt, A, B, C, start)
    w = torch.randn_like(y)
    for a, r in zip(torch.autograd.grad((y * w).sum(), (x, dt, A, bc)),
                    torch.autograd.grad((y_ref * w).sum(), (x, dt, A, bc))):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)


def test_c_scan_same_bits_for_any_threads_and_layout(torch_threads):
    """Each (row, head) is computed alone in a fixed order: splitting them over threads, or
    passing B and C as contiguous tensors instead of views, changes no bit."""
    (x, dt, A, bc), start = _inputs(3, 150, 4, 16, 16, 1, torch.float32)
    doc = start.long().cumsum(1)
    B, C = bc.unflatten(-1, (2, 1, 16)).unbind(2)
    outs = []
    for n, (b_, c_) in [(1, (B, C)), (3, (B, C)), (2, (B.contiguous(), C.contiguous()))]:
        torch_threads(n)
        xs = x.clone().requires_grad_(True)
        bs, cs = b_.clone().requires_grad_(True), c_.clone().requires_grad_(True)
        y, s = ssd.ssd_scan(xs, dt, A, bs, cs, 64, doc)
        grads = torch.autograd.grad(y.square().sum(), (xs, bs, cs))
        outs.append((y, s, *grads))
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert torch.equal(a, b)


def test_c_scan_op_passes_torch_op_checks():
    """Schema, fake (meta) shapes and autograd registration, as torch.compile relies on."""
    (x, dt, A, bc), start = _inputs(2, 40, 2, 8, 4, 1, torch.float32)
    B, C = bc.unflatten(-1, (2, 1, 4)).unbind(2)
    la = dt * A
    args = (x.requires_grad_(True), dt.requires_grad_(True), la, B.contiguous(), C.contiguous(),
            start.long().cumsum(1), torch.randn(2, requires_grad=True))
    torch.library.opcheck(torch.ops.hnetbench.ssd_scan_cpu.default, args)


def test_loading_keeps_denormals():
    """The library is built without -ffast-math, whose start-up code would flush denormals to
    zero for the whole process."""
    tiny = torch.tensor([1e-40], dtype=torch.float32)
    assert (tiny * 1.0).item() != 0.0


def test_build_is_cached_and_keyed(tmp_path, monkeypatch):
    monkeypatch.setenv("HNETBENCH_CACHE", str(tmp_path))
    cc = cpu_build.compiler()
    first = cpu_build.build(ssd_cpu.SOURCE, cc)
    assert first.parent == tmp_path / "kernels" and first.exists()
    mtime = first.stat().st_mtime_ns
    again = cpu_build.build(ssd_cpu.SOURCE, cc)
    assert again == first and first.stat().st_mtime_ns == mtime  # not rebuilt
    ctypes.CDLL(str(first)).ssd_fwd_f32  # noqa: B018 - the symbol is there
    assert [p.name for p in tmp_path.joinpath("kernels").glob("*.so*")] == [first.name]  # no temp
    assert not hasattr(ctypes.CDLL(str(first)), "ssd_fwd_f64")  # float32 only


def test_the_float64_library_is_built_when_first_needed(tmp_path, monkeypatch):
    """A float32 run compiles only the float32 functions; a float64 call adds the others."""
    monkeypatch.setenv("HNETBENCH_CACHE", str(tmp_path))
    lib = cpu_build.CLibrary(ssd_cpu.SOURCE, "the SSD scan", ssd_cpu._declare)
    monkeypatch.setattr(ssd_cpu, "LIBRARY", lib)
    built = lambda: sorted(tmp_path.joinpath("kernels").glob("*.so"))  # noqa: E731
    args = [torch.randn(2, 9, 2, 8), torch.rand(2, 9, 2), -torch.rand(2), torch.randn(2, 9, 1, 4),
            torch.randn(2, 9, 1, 4), torch.zeros(2, 9, dtype=torch.long), torch.ones(2)]
    assert ssd_cpu.available()
    y32, _ = ssd_cpu.ssd_scan_cpu(*args)
    assert len(built()) == 1 and lib.lib64 is None
    y64, _ = ssd_cpu.ssd_scan_cpu(*(a.double() if a.is_floating_point() else a for a in args))
    assert len(built()) == 2 and lib.lib64 is not None
    torch.testing.assert_close(y32.double(), y64, rtol=0, atol=1e-5)


def test_no_compiler_falls_back_to_torch_scan(monkeypatch, caplog):
    caplog.set_level("WARNING")
    monkeypatch.setattr(ssd_cpu, "LIBRARY", cpu_build.CLibrary(ssd_cpu.SOURCE, "the SSD scan",
                                                                ssd_cpu._declare))
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert not ssd_cpu.available()
    assert "no C compiler" in ssd_cpu.why_not()
    assert "the SSD scan in C is off" in caplog.text
    calls = []
    real = ssd.ssd_scan_torch
    monkeypatch.setattr(ssd, "ssd_scan_torch", lambda *a: calls.append(1) or real(*a))
    (x, dt, A, bc), start = _inputs(1, 20, 2, 4, 4, 1, torch.float32)
    B, C = bc.unflatten(-1, (2, 1, 4)).unbind(2)
    D = torch.tensor([0.5, -2.0])
    y, _ = ssd.ssd_scan(x, dt, A, B, C, 16, start.long().cumsum(1), D)
    assert calls == [1]
    y0, _ = real(x, dt, A, B, C, 16, start.long().cumsum(1))
    torch.testing.assert_close(y, y0 + x * D[:, None])  # the skip, added by the torch path
