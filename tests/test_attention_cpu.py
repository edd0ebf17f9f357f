"""Attention in C (`kernels/attn_cpu.c`): equal to torch SDPA with the full mask in float64,
forward and backward, for documents, sliding windows, head dims that are not a multiple of the
vector width and one position; as close as SDPA in float32; `key_start` is the mask's first
key; threads change no bit; torch's op checks pass; the Attention layer gives the same values
as its SDPA path; C off falls back."""

import os
import subprocess
import sys

import pytest
import torch
from hnetbench.kernels import attn_cpu
from hnetbench.models.attention import Attention
from hnetbench.models.seqinfo import Seq

needs_c = pytest.mark.skipif(not attn_cpu.available(),
                             reason=f"C attention not built: {attn_cpu.LIBRARY.why_not}")


def _mask(doc: torch.Tensor, window: int) -> torch.Tensor:
    """(B, 1, L, L) bool: causal, same document, within the window (the SDPA path's mask)."""
    idx = torch.arange(doc.shape[1])
    diff = idx[:, None] - idx[None]
    ok = diff >= 0
    if window > 0:
        ok = ok & (diff < window)
    return (ok[None] & (doc[:, :, None] == doc[:, None, :]))[:, None]


def _case(B, H, L, hd, p_start, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, L, hd, generator=g, dtype=dtype, requires_grad=True)
               for _ in range(3))
    starts = torch.rand(B, L, generator=g) < p_start
    return q, k, v, Seq.from_doc_start(starts).doc


# (B, H, L, hd, chance of a document start per position, window): one and many documents,
# windows, head dims 7/8/16/24/40/64 (vector width 8 floats, 4 doubles), one position, a
# length that is not a multiple of the tile sizes
CASES = [(2, 3, 37, 24, 0.05, -1), (3, 2, 70, 16, 0.2, 9), (1, 1, 1, 8, 0.0, -1),
         (2, 4, 130, 64, 0.0, -1), (2, 2, 33, 7, 0.3, 5), (1, 2, 229, 40, 0.01, 64),
         (2, 1, 50, 24, 0.9, -1)]


def _both(q, k, v, doc, window, dy):
    want = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=_mask(doc, window)).transpose(1, 2)
    got = attn_cpu.attention_cpu(q, k, v, attn_cpu.key_start(doc, window))
    return (got, *torch.autograd.grad(got, (q, k, v), dy)), \
        (want, *torch.autograd.grad(want, (q, k, v), dy))


@needs_c
@pytest.mark.parametrize("B,H,L,hd,p_start,window", CASES)
def test_c_attention_equals_sdpa_float64(B, H, L, hd, p_start, window):
    q, k, v, doc = _case(B, H, L, hd, p_start, torch.float64, seed=L * hd)
    dy = torch.randn(B, L, H, hd, dtype=torch.float64)
    for name, g, w in zip(["y", "dq", "dk", "dv"], *_both(q, k, v, doc, window, dy)):
        assert g.shape == w.shape and torch.allclose(g, w, rtol=0, atol=1e-12), name


@needs_c
@pytest.mark.parametrize("B,H,L,hd,p_start,window", CASES)
def test_c_attention_float32_as_close_as_sdpa(B, H, L, hd, p_start, window,
                                              float32_as_close_as_torch):
    q, k, v, doc = _case(B, H, L, hd, p_start, torch.float64, seed=L * hd + 1)
    float32_as_close_as_torch(
        lambda *t: torch.nn.functional.scaled_dot_product_attention(
            *t, attn_mask=_mask(doc, window)).transpose(1, 2),
        lambda *t: attn_cpu.attention_cpu(*t, attn_cpu.key_start(doc, window)),
        (q, k, v), torch.randn(B, L, H, hd, dtype=torch.float64))


def test_key_start_is_the_masks_first_key():
    g = torch.Generator().manual_seed(3)
    for window in (-1, 1, 4):
        doc = Seq.from_doc_start(torch.rand(3, 40, generator=g) < 0.2).doc
        lo = attn_cpu.key_start(doc, window)
        mask = _mask(doc, window)[:, 0]
        first = mask.int().argmax(-1)  # first True per query row (every row has its own key)
        assert torch.equal(lo, first)
        # and the range is contiguous: [lo, i] is exactly the mask's keys
        idx = torch.arange(40)
        in_range = (idx[None, None] >= lo[..., None]) & (idx[None, None] <= idx[:, None])
        assert torch.equal(mask, in_range)


@needs_c
def test_c_attention_threads_change_no_bit(torch_threads):
    q, k, v, doc = _case(3, 4, 90, 24, 0.05, torch.float32, seed=5)
    lo = attn_cpu.key_start(doc)
    res = []
    for n in (1, 2, 3):
        torch_threads(n)
        y = attn_cpu.attention_cpu(q, k, v, lo)
        res.append([y, *torch.autograd.grad(y, (q, k, v), torch.ones_like(y))])
    assert all(torch.equal(a, b) for r in res[1:] for a, b in zip(r, res[0]))


@needs_c
def test_c_attention_opcheck():
    q, k, v, doc = _case(2, 2, 11, 8, 0.2, torch.float64, seed=7)
    lo = attn_cpu.key_start(doc, 4)
    torch.library.opcheck(torch.ops.hnetbench.attention_cpu.default, (q, k, v, lo))
    assert torch.autograd.gradcheck(lambda *t: attn_cpu.attention_cpu(*t, lo), (q, k, v))


@needs_c
@pytest.mark.parametrize("window", [-1, 6])
def test_attention_layer_c_equals_sdpa_path(window):
    """The whole layer (projection, RoPE, attention, output) with C attention and with its
    SDPA path: same values and gradients in float64."""
    torch.manual_seed(0)
    attn = Attention(48, 4, 8, window).double()
    x = torch.randn(2, 41, 48, dtype=torch.float64, requires_grad=True)
    seq = Seq.from_doc_start(torch.rand(2, 41) < 0.1)
    got = attn(x, seq)
    try:
        attn_cpu.LIBRARY.lib, lib = None, attn_cpu.LIBRARY.lib  # this layer's SDPA path
        attn_cpu.LIBRARY.why_not = "off for this test"
        want = attn(x, seq)
    finally:
        attn_cpu.LIBRARY.lib, attn_cpu.LIBRARY.why_not = lib, None
    dy = torch.randn_like(got)
    params = (x, *attn.parameters())
    assert torch.allclose(got, want, rtol=0, atol=1e-12)
    for a, b in zip(torch.autograd.grad(got, params, dy), torch.autograd.grad(want, params, dy)):
        assert torch.allclose(a, b, rtol=0, atol=1e-11)


def test_attention_switch_falls_back_to_sdpa():
    """HNETBENCH_ATTENTION=torch: no C attention, the layer runs SDPA (same shape out)."""
    code = ("import torch; from hnetbench.kernels import attn_cpu; "
            "from hnetbench.models.attention import Attention; "
            "from hnetbench.models.seqinfo import Seq; "
            "a = Attention(32, 2, 8); x = torch.randn(1, 5, 32); "
            "s = Seq.from_doc_start(torch.zeros(1, 5, dtype=torch.bool)); "
            "print(attn_cpu.available(), a(x, s).shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "HNETBENCH_ATTENTION": "torch"}, check=True)
    assert out.stdout.split()[0] == "False" and "torch.Size([1, 5, 32])" in out.stdout
    assert "attention in C is off (HNETBENCH_ATTENTION=torch)" in out.stderr
