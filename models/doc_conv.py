"""Mamba-2's causal depthwise conv, with windows that never reach into an earlier document.

out[b, l, c] = bias[c] + sum_{s < K, doc[b, l-s] == doc[b, l]} w[c, K-1-s] * x[b, l-s, c]

`doc_conv_reference` writes that out with autograd (a padded copy, a mask and three products per
tap, more backward); `doc_conv` is the default: one in-place multiply-add per tap over shifted
views, then the few positions whose window crosses a document start (K-1 per start) recomputed
with the mask, so documents stay exactly isolated; the backward is one multiply-add per tap with
the crossing terms subtracted sparsely (isolated up to rounding). Tests hold the two equal in
float64, forward and backward, with documents of every length down to one position. On CPU the
default is one C pass for the conv and its SiLU (`kernels/conv_cpu.c`), held to the same reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hnetbench.kernels import conv_cpu, cpu_build


def doc_conv_reference(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor,
                       doc: torch.Tensor) -> torch.Tensor:
    """x (b, L, C), w (C, K) with w[:, K-1] on the current input, bias (C,), doc (b, L) ids."""
    L, K = x.shape[1], w.shape[1]
    out = x * w[:, K - 1] + bias
    for s in range(1, K):
        prev = F.pad(x, (0, 0, s, 0))[:, :L]
        same = F.pad(doc, (s, 0), value=-1)[:, :L] == doc
        out = out + prev * same[..., None].to(x.dtype) * w[:, K - 1 - s]
    return out


def _crossings(doc: torch.Tensor, K: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per shift s = 1..K-1: (rows, positions l >= s) whose input l-s lies in another document."""
    out = []
    for s in range(1, K):
        b, l = torch.nonzero(doc[:, s:] != doc[:, :-s], as_tuple=True)
        out.append((b, l + s))
    return out


class _DocConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, bias, doc):  # noqa: ANN001, ANN205
        L, K = x.shape[1], w.shape[1]
        out = torch.addcmul(bias, x, w[:, K - 1])
        for s in range(1, min(K, L)):
            out[:, s:].addcmul_(x[:, : L - s], w[:, K - 1 - s])
        # positions whose window crosses a start (doc ids never decrease, so the window's first
        # input tells): recomputed with the mask, so that no earlier document reaches them, not
        # even by rounding
        first = (torch.arange(L, device=x.device) - (K - 1)).clamp(min=0)
        b, l = torch.nonzero(doc[:, first] != doc, as_tuple=True)
        if b.numel():
            lag = l[:, None] - torch.arange(K, device=x.device)  # (n, K): l, l-1, ..., l-K+1
            ok = (lag >= 0) & (doc[b[:, None], lag.clamp(min=0)] == doc[b, l][:, None])
            win = x[b[:, None], lag.clamp(min=0)] * ok[..., None].to(x.dtype)  # (n, K, C)
            out[b, l] = bias + (win * w.flip(1).T).sum(1)
        ctx.save_for_backward(x, w, doc)
        return out

    @staticmethod
    def backward(ctx, dout):  # noqa: ANN001, ANN205
        x, w, doc = ctx.saved_tensors
        L, K = x.shape[1], w.shape[1]
        cross = _crossings(doc, K)
        dx = dout * w[:, K - 1]
        dw = torch.empty_like(w)
        dw[:, K - 1] = (dout * x).sum((0, 1))
        for s in range(1, K):
            ws = w[:, K - 1 - s]
            if s >= L:
                dw[:, K - 1 - s] = 0
                continue
            dx[:, : L - s].addcmul_(dout[:, s:], ws)
            acc = (dout[:, s:] * x[:, : L - s]).sum((0, 1))
            b, l = cross[s - 1]
            if b.numel():
                g = dout[b, l]
                dx.index_put_((b, l - s), -g * ws, accumulate=True)
                acc = acc - (g * x[b, l - s]).sum(0)
            dw[:, K - 1 - s] = acc
        return dx, dw, dout.sum((0, 1)), None


def doc_conv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, doc: torch.Tensor,
             silu: bool = False) -> torch.Tensor:
    """Same contract and result as `doc_conv_reference` (up to rounding), fewer passes; with
    `silu`, the activation applied. On CPU (float32/64) the C pass `kernels.conv_cpu` runs
    when it is built, else the torch passes of `_DocConv`."""
    if cpu_build.handles(x) and conv_cpu.available():  # (builds the C file on first use)
        return conv_cpu.doc_conv_cpu(x, w, bias, doc, silu)
    out = _DocConv.apply(x, w, bias, doc)
    return F.silu(out) if silu else out
