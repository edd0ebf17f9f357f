"""The mixers' C passes against their torch passes, one process, alternating.

    python benchmarks/mixer_cpu.py [--repeats 15] [--json out.json]

conv: the document-isolated causal conv and its SiLU (`kernels/conv_cpu.c` against
`models.doc_conv._DocConv` then F.silu); norm: the gated RMSNorm (`kernels/norm_cpu.c` against
`models.norm._GatedRMSNorm`). Shapes are the byte-level mixers' of the cpu-tiny and cpu-small
presets at batch 8 x 512 bytes (conv over x and over B|C, norm over d_inner). attention: a
whole attention layer (projection, q, k, v with RoPE, SDPA, output projection) with the C
q, k, v + RoPE pass (`kernels/rope_cpu.c`) against the torch permute + `rope`, at the shapes
of `reproduce`'s cpu-tiny models (batch 8: the BPE Transformer's 228 tokens, the 1-stage
H-Net's main network at ~110 chunks, 512 bytes at width 64). Median CPU
milliseconds of forward and of forward + backward (1 thread: time slices lost to other
processes do not count); calls alternate so load hits both alike. Not a test.
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
    from hnetbench.models.attention import Attention
    from hnetbench.models.seqinfo import Seq

    attn = Attention(d, heads, rotary)
    x = torch.randn(8, L, d, requires_grad=True)
    seq = Seq.from_doc_start(torch.rand(8, L) < 0.01)

    def torch_layer() -> torch.Tensor:
        attn._qkv = attn._qkv_torch  # this instance only, for this call
        try:
            return attn(x, seq)
        finally:
            del attn._qkv

    return {"torch": torch_layer, "c": lambda: attn(x, seq)}, \
        (x, attn.wqkv.weight, attn.out_proj.weight), torch.randn(8, L, d)


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


def main(argv: list[str] | None = None) -> int:
    from hnetbench.kernels import conv_cpu, norm_cpu, rope_cpu

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    libs = (conv_cpu, norm_cpu, rope_cpu)
    if not all(m.available() for m in libs):
        print(f"the C passes are off: {next(m.LIBRARY.why_not for m in libs if m.LIBRARY.why_not)}")
        return 1
    rows = []
    for scale, d_inner, bc in SHAPES:
        for what, cases in (("conv x", _conv_cases(d_inner)), ("conv B|C", _conv_cases(bc)),
                            ("gated norm", _norm_cases(d_inner))):
            ms = _time(*cases, args.repeats)
            rows.append({"scale": scale, "pass": what, **{k: round(v, 3) for k, v in ms.items()},
                         "speedup_fwd": ms["torch_fwd"] / ms["c_fwd"],
                         "speedup_fwd_bwd": ms["torch_fwd_bwd"] / ms["c_fwd_bwd"]})
            print(rows[-1], flush=True)
    for label, L, d, heads, rotary in ATTENTION:
        ms = _time(*_attention_cases(L, d, heads, rotary), args.repeats)
        rows.append({"scale": "cpu-tiny", "pass": f"attention layer ({label})",
                     **{k: round(v, 3) for k, v in ms.items()},
                     "speedup_fwd": ms["torch_fwd"] / ms["c_fwd"],
                     "speedup_fwd_bwd": ms["torch_fwd_bwd"] / ms["c_fwd_bwd"]})
        print(rows[-1], flush=True)
    print_table(rows, ["scale", "pass", "torch_fwd", "c_fwd", "speedup_fwd", "torch_fwd_bwd",
                       "c_fwd_bwd", "speedup_fwd_bwd"])
    write_json(args.json, {"machine": machine(), "unit": "median CPU ms", "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
