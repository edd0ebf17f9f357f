"""MKL or oneDNN for the models' linear layers on CPU: alone, and inside real training steps.

    python benchmarks/gemm_cpu.py [--presets hnet-1stage@cpu-tiny ...] [--steps 64]
                                  [--repeats 9] [--json out.json]

torch's CPU `F.linear` runs MKL's sgemm; the same torch build also has oneDNN's JIT matmul
(`torch.ops.mkldnn._linear_pointwise`, what inductor calls). On an AMD core MKL does not use
its AVX-512 kernels, so oneDNN is the obvious thing to try. Two measurements, one thread:

1. Alone: each linear shape of one training step of each preset (recorded from the step), as
   forward `x @ W^T`, input gradient `g @ W` and weight gradient `g^T @ x`, MKL and oneDNN,
   the same inputs again and again (median of `--repeats`): GFLOP/s and the ratio.
2. In training: one model trains `--steps` steps at the preset's learning rate on its training
   data, its linears switching library every step (ABBA order), so both see the same mix of
   shapes (an H-Net's inner stages change size every step) and the same machine load. oneDNN
   here does forward and input gradient (row counts padded to a multiple of 64 so that the
   per-shape kernels it JIT-compiles are reused); the weight gradient stays on MKL, which is
   as fast there. Reported: CPU ms per step of each, and their ratio.
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
from common import (  # noqa: E402
    machine,
    preset_training,
    print_table,
    time_fn,
    train_step,
    write_json,
)

PRESETS = ["transformer-bpe@cpu-tiny", "hnet-1stage@cpu-tiny", "hnet-2stage@cpu-tiny"]
ROW_BUCKET = 64
_torch_linear = F.linear


def _onednn(x2: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """x2 @ w.T (+ b) by oneDNN, rows padded to the bucket."""
    M = x2.shape[0]
    pad = -M % ROW_BUCKET
    out = torch.ops.mkldnn._linear_pointwise(F.pad(x2, (0, 0, 0, pad)) if pad else x2, w, b,
                                             "none", [], "")
    return out[:M]


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):  # noqa: ANN001, ANN205
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        return _onednn(x.reshape(-1, x.shape[-1]), w, b).view(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx, g):  # noqa: ANN001, ANN205
        x, w = ctx.saved_tensors
        g2 = g.reshape(-1, g.shape[-1])
        gx = _onednn(g2, w.t()).view(x.shape) if ctx.needs_input_grad[0] else None
        gw = g2.t() @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None
        gb = g2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


def onednn_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None
                  ) -> torch.Tensor:
    if x.dtype == torch.float32 and x.device.type == "cpu":
        return _OneDNNLinear.apply(x, w, b)
    return _torch_linear(x, w, b)


def step_shapes(preset: str) -> dict[tuple[int, int, int], int]:
    """(rows, in, out) -> calls, of the linears in one training step of a fresh model."""
    _, model, opt, loader = preset_training(preset)
    shapes: dict[tuple[int, int, int], int] = {}

    def record(x, w, b=None):  # noqa: ANN001, ANN202
        key = (x.numel() // x.shape[-1], x.shape[-1], w.shape[0])
        shapes[key] = shapes.get(key, 0) + 1
        return _torch_linear(x, w, b)

    F.linear = record
    try:
        train_step(model, opt, next(loader))
    finally:
        F.linear = _torch_linear
    return shapes


def alone(shapes: dict[tuple[int, int, int], int], repeats: int) -> list[dict]:
    lp = torch.ops.mkldnn._linear_pointwise
    rows = []
    for (M, K, N), calls in sorted(shapes.items(), key=lambda kv: -kv[0][0] * kv[0][1] * kv[0][2]):
        x, w, g = torch.randn(M, K), torch.randn(N, K), torch.randn(M, N)
        flop = 2 * M * K * N
        pairs = {"forward": (lambda: x @ w.t(), lambda: lp(x, w, None, "none", [], "")),
                 "grad_input": (lambda: g @ w, lambda: lp(g, w.t(), None, "none", [], "")),
                 "grad_weight": (lambda: g.t() @ x,
                                 lambda: lp(x.t(), g.t(), None, "none", [], "").t())}
        for what, (mkl, dnn) in pairs.items():
            a, b = time_fn(mkl, repeats), time_fn(dnn, repeats)
            rows.append({"shape": f"{M}x{K}->{N}", "calls": calls, "product": what,
                         "mkl_gflops": flop / a / 1e9, "onednn_gflops": flop / b / 1e9,
                         "onednn_speedup": a / b})
    return rows


def in_training(preset: str, steps: int) -> dict:
    _, model, opt, loader = preset_training(preset)
    cpu: dict[str, list[float]] = {"mkl": [], "onednn": []}
    for s in range(steps):
        which = ("mkl", "onednn", "onednn", "mkl")[s % 4]  # ABBA
        F.linear = _torch_linear if which == "mkl" else onednn_linear
        batch = next(loader)
        c0 = time.process_time()
        try:
            train_step(model, opt, batch)
        finally:
            F.linear = _torch_linear
        if s >= 4:  # the first steps warm up both libraries
            cpu[which].append(time.process_time() - c0)
    mkl, dnn = statistics.mean(cpu["mkl"]), statistics.mean(cpu["onednn"])
    return {"preset": preset, "steps_each": len(cpu["mkl"]), "mkl_ms": 1e3 * mkl,
            "onednn_ms": 1e3 * dnn, "onednn_speedup": mkl / dnn,
            "median_speedup": statistics.median(cpu["mkl"]) / statistics.median(cpu["onednn"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="*", default=PRESETS)
    ap.add_argument("--steps", type=int, default=64, help="training steps per preset (both)")
    ap.add_argument("--repeats", type=int, default=9, help="timings per product alone")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if not torch.backends.mkldnn.is_available():
        print("gemm_cpu: this torch has no oneDNN", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    from hnetbench.train.malloc import keep_freed_memory

    keep_freed_memory()  # as the trainer does
    shapes: dict[tuple[int, int, int], int] = {}
    for p in args.presets:
        for k, v in step_shapes(p).items():
            shapes[k] = shapes.get(k, 0) + v
    single = alone(shapes, args.repeats)
    print("alone (same inputs each call), GFLOP/s:")
    print_table(single, ["shape", "calls", "product", "mkl_gflops", "onednn_gflops",
                         "onednn_speedup"])
    steps = [in_training(p, args.steps) for p in args.presets]
    print("\nin training (library switched every step, ABBA), CPU per step:")
    print_table(steps, ["preset", "steps_each", "mkl_ms", "onednn_ms", "onednn_speedup",
                        "median_speedup"])
    write_json(args.json, {"machine": machine(), "args": vars(args), "alone": single,
                           "in_training": steps})
    return 0


if __name__ == "__main__":
    sys.exit(main())
