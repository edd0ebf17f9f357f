"""Attention's q, k, v with RoPE: the C pass (`kernels/rope_cpu.c`) gives the same bits as the
torch version (permute, then `rope` on q and k), forward and backward, in float32 and float64,
with partial and full rotary dims; its RoPE is the rotation written out; a model trains to the
same bits either way; threads change no bit; torch's op checks pass; C off falls back."""

import math
import os
import subprocess
import sys

import pytest
import torch
from hnetbench.kernels import rope_cpu
from hnetbench.models.attention import Attention, rope, rope_angles
from hnetbench.models.seqinfo import Seq

needs_c = pytest.mark.skipif(not rope_cpu.available(),
                             reason=f"C RoPE not built: {rope_cpu.LIBRARY.why_not}")


def _case(B, L, d, heads, rotary, dtype, seed):
    torch.manual_seed(seed)
    attn = Attention(d, heads, rotary).to(dtype)
    x = torch.randn(B, L, d, dtype=dtype, requires_grad=True)
    starts = torch.rand(B, L) < 0.2  # documents of every length: positions restart at each
    return attn, x, Seq.from_doc_start(starts).pos


CASES = [(2, 37, 96, 4, 12), (3, 16, 64, 4, 8), (2, 5, 64, 2, 32), (1, 1, 32, 2, 16),
         (4, 130, 48, 2, 2)]  # partial and full rotary dims; one position (a generation step)


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B,L,d,heads,rotary", CASES)
def test_c_rope_same_bits_as_torch(B, L, d, heads, rotary, dtype):
    attn, x, pos = _case(B, L, d, heads, rotary, dtype, seed=B * L + rotary)
    want = attn._qkv_torch(x, pos)  # the torch version, as attention ran before the C pass
    got = attn._qkv(x, pos)
    for name, g, w in zip("qkv", got, want):
        assert g.is_contiguous() and torch.equal(g, w), name
    dys = [torch.randn_like(w) for w in want]
    params = (x, attn.wqkv.weight)
    for a, b in zip(torch.autograd.grad(got, params, dys), torch.autograd.grad(want, params, dys)):
        assert torch.equal(a, b)


def test_rope_is_the_rotation_written_out():
    """The torch `rope` (and so the C pass) rotates each pair (i, half + i) by pos * theta_i,
    theta_i = 10000^(-2i/R), and leaves dims R.. alone; float64 against plain math."""
    B, H, L, hd, R = 2, 3, 9, 10, 6
    x = torch.randn(B, H, L, hd, dtype=torch.float64)
    pos = torch.randint(0, 50, (B, L))
    y = rope(x, pos, R)
    for b, h, t, i in [(0, 0, 0, 0), (1, 2, 8, 2), (1, 1, 4, 1), (0, 2, 7, 0)]:
        ang = float(pos[b, t]) * float(torch.tensor(10000.0 ** (-2 * i / R), dtype=torch.float32))
        c, s = math.cos(ang), math.sin(ang)
        x1, x2 = float(x[b, h, t, i]), float(x[b, h, t, R // 2 + i])
        assert float(y[b, h, t, i]) == pytest.approx(x1 * c - x2 * s, abs=1e-6)
        assert float(y[b, h, t, R // 2 + i]) == pytest.approx(x2 * c + x1 * s, abs=1e-6)
    assert torch.equal(y[..., R:], x[..., R:])
    cos, sin = rope_angles(pos, R, torch.float64)
    assert cos.shape == (B, L, R // 2)
    assert torch.allclose(cos**2 + sin**2, torch.ones((), dtype=cos.dtype))


@needs_c
def test_training_gives_the_same_bits_with_c_rope_or_torch():
    """Five AdamW steps of a 2-layer byte Transformer: identical losses and weights."""
    from hnetbench.config import resolve
    from hnetbench.models import build_model

    cfg = resolve(base={"preset": "transformer-bpe@cpu-tiny",
                        "model": {"layout": "T2", "vocab_size": 64}})
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 64, (2, 65), generator=g)
    runs = []
    for qkv in (Attention._qkv_torch, Attention._qkv):
        torch.manual_seed(0)
        model = build_model(cfg.model)
        for m in model.modules():
            if isinstance(m, Attention):
                m._qkv = qkv.__get__(m)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(5):
            loss = model(ids[:, :-1], targets=ids[:, 1:]).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        runs.append((losses, [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


@needs_c
def test_c_rope_threads_change_no_bit(torch_threads):
    attn, x, pos = _case(3, 70, 64, 4, 8, torch.float32, seed=1)
    res = []
    for n in (1, 2, 3):
        torch_threads(n)
        out = attn._qkv(x, pos)
        res.append([*out, *torch.autograd.grad(out, x, [torch.ones_like(o) for o in out])])
    assert all(torch.equal(a, b) for r in res[1:] for a, b in zip(r, res[0]))


@needs_c
def test_c_rope_opcheck():
    qkv = torch.randn(2, 7, 3, 2, 8, dtype=torch.float64, requires_grad=True)
    cos, sin = rope_angles(torch.arange(7).expand(2, 7), 6, torch.float64)
    torch.library.opcheck(torch.ops.hnetbench.qkv_rope_cpu.default, (qkv, cos, sin, 6))
    assert torch.autograd.gradcheck(lambda t: rope_cpu.qkv_rope_cpu(t, cos, sin, 6), (qkv,))


def test_c_kernels_off_falls_back_to_torch():
    """HNETBENCH_C_KERNELS=off: no C RoPE, attention runs the torch version (same values)."""
    code = ("import torch; from hnetbench.kernels import rope_cpu; "
            "from hnetbench.models.attention import Attention; "
            "a = Attention(32, 2, 8); x = torch.randn(1, 5, 32); "
            "print(rope_cpu.available(), a._qkv(x, torch.arange(5)[None])[0].shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "HNETBENCH_C_KERNELS": "off"},
                         check=True)
    assert out.stdout.split()[0] == "False" and "torch.Size([1, 2, 5, 16])" in out.stdout
    assert "attention's RoPE in C is off (HNETBENCH_C_KERNELS=off)" in out.stderr
