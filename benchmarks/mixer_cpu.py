"""The C passes against their torch passes, one process, alternating.

    python benchmarks/mixer_cpu.py [--repeats 15] [--json out.json]

conv: the document-isolated causal conv and its SiLU (`kernels/conv_cpu.c` against
`models.doc_conv._DocConv` then F.silu); norm: the gated RMSNorm (`kernels/norm_cpu.c` against
`models.norm._GatedRMSNorm`). Shapes are the byte-level mixers' of the cpu-tiny and cpu-small
presets at batch 8 x 512 bytes (conv over x and over B|C, norm over d_inner). attention: a
whole attention layer (projection, q, k, v with RoPE in C, attention, output projection) with
the C attention (`kernels/attn_cpu.c`) against torch SDPA with the full mask, at the shapes of
`reproduce`'s cpu-tiny models (batch 8: the BPE Transformer's 228 tokens, the 1-stage H-Net's
main network at ~110 chunks, 512 bytes at width 64; a document start every ~100 positions).
SwiGLU activation, training cross-entropy and plain RMSNorm (`kernels/swiglu_cpu.c`,
`cross_entropy_cpu.c`, `norm_cpu.c`) against torch's expressions at the same models' shapes.
Median CPU milliseconds of forward and of forward + backward (1 thread: time slices lost to
other processes do not count); calls alternate so load hits both alike. Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json  # noqa: E402

# (scale, d_inner, 2 * ngroups * d_state) of the byte-level Mamba-2 mixers
SHAPES = [("cpu-tiny", 128, 32), ("cpu-small", 256, 64)]


def _conv_cases(C: int):  # noqa: ANN202
    from hnetbench.kernels import conv_cpu
    from hnetbench.models.doc_conv import _DocConv

    x = torch.randn(8, 512, C, requires_grad=True)
    w, bias = torch.randn(C, 4, requires_grad=True), torch.randn(C, requires_grad=True)
    doc = (torch.rand(8, 512) < 0.01).long().cumsum(1)  # a few documents per row
    g = torch.randn(8, 512, C)
    return {
        "torch": lambda: F.silu(_DocConv.apply(x, w, bias, doc)),
        "c": lambda: conv_cpu.doc_conv_cpu(x, w, bias, doc, True),
    }, (x, w, bias), g


def _norm_cases(D: int):  # noqa: ANN202
    from hnetbench.kernels import norm_cpu
    from hnetbench.models.norm import _GatedRMSNorm

    x, z = torch.randn(8, 512, D, requires_grad=True), torch.randn(8, 512, D, requires_grad=True)
    w = torch.randn(D, requires_grad=True)
    g = torch.randn(8, 512, D)
    return {
        "torch": lambda: _GatedRMSNorm.apply(x, z, w, D, 1e-5),
        "c": lambda: norm_cpu.gated_rms_norm_cpu(x, z, w, D, 1e-5),
    }, (x, z, w), g


# (label, length, width, heads, rotary dim) of attention layers in `reproduce`'s cpu-tiny runs
ATTENTION = [("BPE, 228 tokens", 228, 96, 4, 12), ("H-Net main, 110 chunks", 110, 96, 4, 12),
             ("512 bytes, width 64", 512, 64, 4, 8)]


def _attention_cases(L: int, d: int, heads: int, rotary: int):  # noqa: ANN202
    from hnetbench.kernels import attn_cpu
    from hnetbench.models.attention import Attention
    from hnetbench.models.seqinfo import Seq

    attn = Attention(d, heads, rotary)
    x = torch.randn(8, L, d, requires_grad=True)
    seq = Seq.from_doc_start(torch.rand(8, L) < 0.01)

    def sdpa_layer() -> torch.Tensor:
        c_attention = attn_cpu.available
        attn_cpu.available = lambda: False  # the layer's SDPA path, for this call
        try:
            return attn(x, seq)
        finally:
            attn_cpu.available = c_attention

    return {"torch": sdpa_layer, "c": lambda: attn(x, seq)}, \
        (x, attn.wqkv.weight, attn.out_proj.weight), torch.randn(8, L, d)


# (label, rows, hidden) of the SwiGLU MLPs, (label, rows, vocabulary) of the losses and
# (label, rows, width) of the plain RMSNorms in `reproduce`'s cpu-tiny runs (batch 8)
SWIGLU = [("BPE, 228 tokens", 8 * 228, 256), ("H-Net main, 110 chunks", 8 * 110, 256)]
LOSS = [("BPE, 228 tokens", 8 * 228, 512), ("bytes, 512", 8 * 512, 257)]
RMS = [("BPE, 228 tokens", 8 * 228, 96), ("bytes, 512, width 64", 8 * 512, 64)]


def _swiglu_cases(M: int, D: int):  # noqa: ANN202
    from hnetbench.kernels import swiglu_cpu

    h = torch.randn(M, 2 * D, requires_grad=True)

    def torch_swiglu() -> torch.Tensor:
        gate, value = h.chunk(2, dim=-1)
        return F.silu(gate) * value

    return {"torch": torch_swiglu, "c": lambda: swiglu_cpu.swiglu_cpu(h)}, (h,), \
        torch.randn(M, D)


def _loss_cases(M: int, V: int):  # noqa: ANN202
    from hnetbench.kernels import cross_entropy_cpu

    x, t = torch.randn(M, V, requires_grad=True), torch.randint(0, V, (M,))
    return {"torch": lambda: F.cross_entropy(x, t, reduction="sum"),
            "c": lambda: cross_entropy_cpu.cross_entropy_sum_cpu(x, t)}, (x,), torch.tensor(1.0)


def _rms_cases(M: int, D: int):  # noqa: ANN202
    from hnetbench.kernels import norm_cpu

    x, w = torch.randn(M, D, requires_grad=True), torch.randn(D, requires_grad=True)
    return {"torch": lambda: F.rms_norm(x, (D,), w, 1e-5),
            "c": lambda: norm_cpu.rms_norm_cpu(x, w, 1e-5)}, (x, w), torch.randn(M, D)


def _time(cases: dict, inputs: tuple, g: torch.Tensor, repeats: int) -> dict:
    cpu = {f"{k}_{m}": [] for k in cases for m in ("fwd", "fwd_bwd")}
    for r in range(repeats + 1):
        for k, f in (list(cases.items()) if r % 2 == 0 else list(cases.items())[::-1]):
            c0 = time.process_time()
            with torch.no_grad():
                f()
            c1 = time.process_time()
            torch.autograd.grad(f(), inputs, g)
            c2 = time.process_time()
            if r:  # round 0 warms up (and builds the C files)
                cpu[f"{k}_fwd"].append(c1 - c0)
                cpu[f"{k}_fwd_bwd"].append(c2 - c1)
    return {k: statistics.median(v) * 1e3 for k, v in cpu.items()}


def _row(scale: str, what: str, ms: dict) -> dict:
    row = {"scale": scale, "pass": what, **{k: round(v, 3) for k, v in ms.items()},
           "speedup_fwd": ms["torch_fwd"] / ms["c_fwd"],
           "speedup_fwd_bwd": ms["torch_fwd_bwd"] / ms["c_fwd_bwd"]}
    print(row, flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    from hnetbench.kernels import (
        attn_cpu,
        conv_cpu,
        cross_entropy_cpu,
        norm_cpu,
        rope_cpu,
        swiglu_cpu,
    )

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    libs = (conv_cpu, norm_cpu, rope_cpu, attn_cpu, swiglu_cpu, cross_entropy_cpu)
    if not all(m.available() for m in libs):
        print(f"the C passes are off: {next(m.LIBRARY.why_not for m in libs if m.LIBRARY.why_not)}")
        return 1
    rows = []
    for scale, d_inner, bc in SHAPES:
        for what, cases in (("conv x", _conv_cases(d_inner)), ("conv B|C", _conv_cases(bc)),
                            ("gated norm", _norm_cases(d_inner))):
            rows.append(_row(scale, what, _time(*cases, args.repeats)))
    for label, L, d, heads, rotary in ATTENTION:
        ms = _time(*_attention_cases(L, d, heads, rotary), args.repeats)
        rows.append(_row("cpu-tiny", f"attention layer ({label})", ms))
    for name, shapes, cases in (("SwiGLU", SWIGLU, _swiglu_cases), ("loss", LOSS, _loss_cases),
                                ("RMSNorm", RMS, _rms_cases)):
        for label, M, D in shapes:
            rows.append(_row("cpu-tiny", f"{name} ({label})", _time(*cases(M, D), args.repeats)))
    print_table(rows, ["scale", "pass", "torch_fwd", "c_fwd", "speedup_fwd", "torch_fwd_bwd",
                       "c_fwd_bwd", "speedup_fwd_bwd"])
    write_json(args.json, {"machine": machine(), "unit": "median CPU ms", "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
