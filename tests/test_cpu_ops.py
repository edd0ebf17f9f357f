"""kernels/cpu_ops.py: each C kernel's entry point runs the same code two ways -- eagerly
through one autograd.Function, and through its registered torch ops (what torch.compile
traces). Both give the same bits, forward and backward; without autograd the entry calls the
kernel alone; compiled code sees the op (a full graph, no break on the ctypes call)."""

import pytest
import torch
from hnetbench.kernels import (
    attn_cpu,
    conv_cpu,
    cpu_ops,
    cross_entropy_cpu,
    ema_cpu,
    norm_cpu,
    rope_cpu,
    ssd_cpu,
    swiglu_cpu,
)
from hnetbench.models.attention import rope_angles

KERNELS = (attn_cpu, conv_cpu, cross_entropy_cpu, norm_cpu, rope_cpu, ssd_cpu, swiglu_cpu)
needs_c = pytest.mark.skipif(not all(k.available() for k in KERNELS),
                             reason="C kernels not built: " + "; ".join(
                                 str(k.LIBRARY.why_not) for k in KERNELS if k.LIBRARY.why_not))


def _leaf(*shape: int, scale: float = 1.0, g: torch.Generator) -> torch.Tensor:
    return (scale * torch.randn(*shape, generator=g)).requires_grad_()


def _cases():
    """(name, function of the leaves, leaves): every kernel's public entry point, float32."""
    g = torch.Generator().manual_seed(0)
    doc = (torch.rand(2, 40, generator=g) < 0.1).long().cumsum(1)
    cos, sin = rope_angles(torch.arange(40).expand(2, 40), 6, torch.float32)
    lo = attn_cpu.key_start(doc, 16)
    targets = torch.randint(0, 11, (80,), generator=g)
    targets[::7] = -100
    a = -torch.rand(4, generator=g)
    return [
        ("gated_rms_norm", lambda x, z, w: norm_cpu.gated_rms_norm_cpu(x, z, w, 8, 1e-5),
         [_leaf(2, 40, 16, g=g), _leaf(2, 40, 16, scale=3, g=g), _leaf(16, g=g)]),
        ("rms_norm", lambda x, w: norm_cpu.rms_norm_cpu(x, w, 1e-5),
         [_leaf(2, 40, 16, g=g), _leaf(16, g=g)]),
        ("ssd_scan", lambda x, dt, B, C, D: ssd_cpu.ssd_scan_cpu(x, dt, a, B, C, doc, D),
         [_leaf(2, 40, 4, 8, g=g), torch.rand(2, 40, 4, generator=g).requires_grad_(),
          _leaf(2, 40, 1, 16, g=g), _leaf(2, 40, 1, 16, g=g), _leaf(4, g=g)]),
        ("attention", lambda q, k, v: attn_cpu.attention_cpu(q, k, v, lo),
         [_leaf(2, 3, 40, 8, g=g), _leaf(2, 3, 40, 8, g=g), _leaf(2, 3, 40, 8, g=g)]),
        ("doc_conv", lambda x, w, b: conv_cpu.doc_conv_cpu(x, w, b, doc, True),
         [_leaf(2, 40, 12, g=g), _leaf(12, 4, g=g), _leaf(12, g=g)]),
        ("qkv_rope", lambda qkv: rope_cpu.qkv_rope_cpu(qkv, cos, sin, 6),
         [_leaf(2, 40, 3, 2, 8, g=g)]),
        ("swiglu", lambda h: swiglu_cpu.swiglu_cpu(h), [_leaf(2, 40, 24, g=g)]),
        ("cross_entropy", lambda x: cross_entropy_cpu.cross_entropy_sum_cpu(x, targets),
         [_leaf(80, 11, scale=4, g=g)]),
    ]


def _run(fn, leaves):  # noqa: ANN001, ANN202
    out = fn(*leaves)
    outs = list(out) if isinstance(out, tuple) else [out]
    g = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=g)).sum() for o in outs)
    return outs, torch.autograd.grad(loss, leaves)


@needs_c
@pytest.mark.parametrize("name,fn,leaves", _cases(), ids=[c[0] for c in _cases()])
def test_eager_twin_equals_the_ops_bit_for_bit(name, fn, leaves, monkeypatch):
    eager = _run(fn, leaves)
    # as inside a torch.compile trace: the entry points call their registered ops (whose
    # autograd calls the backward op)
    monkeypatch.setattr(cpu_ops, "tracing", lambda: True)
    ops = _run(fn, leaves)
    for a, b in zip(eager[0] + list(eager[1]), ops[0] + list(ops[1])):
        assert torch.equal(a, b), name
    with torch.no_grad():  # no autograd: the kernel alone, the same forward
        monkeypatch.undo()
        out = fn(*leaves)
        outs = list(out) if isinstance(out, tuple) else [out]
        assert all(torch.equal(a, b) and not a.requires_grad for a, b in zip(outs, eager[0]))


@needs_c
def test_compiled_code_calls_the_op_in_one_graph():
    """Under torch.compile the entry point is the op, so a whole graph traces (the eager twin's
    ctypes call would break it) and gives the eager result."""
    g = torch.Generator().manual_seed(2)
    x, w = torch.randn(3, 20, 16, generator=g), torch.randn(16, generator=g)

    def f(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return norm_cpu.rms_norm_cpu(x * 2, w, 1e-5) + 1

    compiled = torch.compile(f, backend="eager", fullgraph=True)
    assert torch.equal(compiled(x, w), f(x, w))
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    got = torch.autograd.grad(compiled(xg, wg).square().sum(), (xg, wg))
    want = torch.autograd.grad(f(xg, wg).square().sum(), (xg, wg))
    assert all(torch.equal(a, b) for a, b in zip(got, want))


# each C kernel's entry points as the models call them (module attributes), to count the calls
ENTRIES = {attn_cpu: ("attention_cpu",), conv_cpu: ("doc_conv_cpu",),
           cross_entropy_cpu: ("cross_entropy_sum_cpu",),
           norm_cpu: ("gated_rms_norm_cpu", "rms_norm_cpu"), rope_cpu: ("qkv_rope_cpu",),
           ssd_cpu: ("ssd_scan_cpu",), swiglu_cpu: ("swiglu_cpu",), ema_cpu: ("ema_cpu",)}


@needs_c
@pytest.mark.parametrize("preset,kernels", [
    ("transformer-bpe@cpu-tiny", {attn_cpu, rope_cpu, swiglu_cpu, norm_cpu, cross_entropy_cpu}),
    ("mambabyte@cpu-tiny", {ssd_cpu, conv_cpu, norm_cpu, cross_entropy_cpu}),
    ("hnet-1stage@cpu-tiny", set(ENTRIES)),
    ("hnet-2stage@cpu-tiny", set(ENTRIES)),
])
def test_a_whole_model_with_every_c_kernel_equals_its_torch_paths(preset, kernels, monkeypatch):
    """The CPU defaults (every C kernel, an H-Net's inner stages over packed rows) against the
    torch paths they replaced (each kernel's `available()` false, the padded batch): one
    training step's loss and gradients in float64, documents starting inside rows. Each
    kernel has its own test; this one holds them together, in the shapes a model gives them."""
    from hnetbench.config import resolve
    from hnetbench.models import build_model, hnet

    cfg = resolve(base={"preset": preset}).model
    torch.manual_seed(0)
    model = build_model(cfg).double().train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (3, 97), generator=g)
    targets = torch.randint(0, cfg.vocab_size, (3, 97), generator=g)
    doc_start = torch.zeros_like(ids, dtype=torch.bool)
    doc_start[0, 40] = doc_start[2, 11] = doc_start[2, 70] = True

    def step() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        out = model(ids, targets=targets, doc_start=doc_start)
        out.loss.backward()
        return out.loss.detach(), {n: p.grad for n, p in model.named_parameters()
                                   if p.grad is not None}

    calls = dict.fromkeys(ENTRIES, 0)

    def counted(module, fn):  # noqa: ANN001, ANN202
        def call(*a, **k):  # noqa: ANN002, ANN003, ANN202
            calls[module] += 1
            return fn(*a, **k)
        return call

    for module, names in ENTRIES.items():
        for name in names:
            monkeypatch.setattr(module, name, counted(module, getattr(module, name)))
    monkeypatch.setattr(hnet, "PACK_ROWS", True)
    loss, grads = step()
    assert {m for m, n in calls.items() if n} == kernels, calls  # the C paths did run
    for module in ENTRIES:
        monkeypatch.setattr(module, "available", lambda: False)
    monkeypatch.setattr(hnet, "PACK_ROWS", False)
    ran = dict(calls)
    ref_loss, ref_grads = step()
    assert calls == ran  # the reference step ran no C kernel
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=0)
    assert grads.keys() == ref_grads.keys()
    for n in ref_grads:
        torch.testing.assert_close(grads[n], ref_grads[n], rtol=1e-9, atol=1e-12, msg=n)
