"""The training loss, summed cross-entropy over the scored positions, as one C pass on CPU
(`cross_entropy_cpu.c`).

torch's `F.cross_entropy(reduction="sum")` is log_softmax then nll_loss, and backward a zero
fill, a scatter and log_softmax's backward: ~5 passes over the (positions, vocabulary) logits,
3-5% of an H-Net or BPE Transformer step at cpu-tiny. Here one pass each way; the backward
recomputes the softmax from each row's saved max and log-sum-exp. Registered as the torch op
`hnetbench::cross_entropy_sum_cpu` with its autograd; built and loaded by `kernels.cpu_build`
(off with HNETBENCH_C_KERNELS=off or HNETBENCH_CROSS_ENTROPY=torch, or without a compiler:
torch's runs). Held to `F.cross_entropy` in float64 by `tests/test_cross_entropy_cpu.py`.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from hnetbench.kernels.cpu_build import CLibrary, ptr, run_items
from hnetbench.kernels.cpu_ops import kernel_op

SOURCE = Path(__file__).with_name("cross_entropy_cpu.c")
IGNORE_INDEX = -100  # a target that is not scored (as torch's default ignore_index)


def _declare(lib: ctypes.CDLL, suffix: str, real: type) -> None:
    """Argument types of the library's functions of one precision (f32: float, f64:
    double)."""
    i64, p = ctypes.c_int64, ctypes.c_void_p
    getattr(lib, f"xent_fwd_{suffix}").argtypes = [i64] * 3 + [p] * 4
    getattr(lib, f"xent_bwd_{suffix}").argtypes = [i64] * 3 + [p] * 5


LIBRARY = CLibrary(SOURCE, "the cross-entropy", _declare,
                   switch=("HNETBENCH_CROSS_ENTROPY", "torch"))


def available() -> bool:
    """True when the C cross-entropy is built and loaded (compiles it on the first call)."""
    return LIBRARY.available()


def _fwd(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, t = x.contiguous(), t.contiguous()  # held in locals while the C code runs
    N, V = x.shape
    nats, stats = x.new_empty(N), x.new_empty(N, 2)  # stats: each row's max and log-sum-exp
    run_items(LIBRARY.fn("xent_fwd", x.dtype), N, V, ptr(x), ptr(t), ptr(nats), ptr(stats))
    return nats.sum(), stats


def _fwd_fake(x, t):  # noqa: ANN001, ANN202
    return x.new_empty(()), x.new_empty(x.shape[0], 2)


def _bwd(x: torch.Tensor, t: torch.Tensor, stats: torch.Tensor,
         g: torch.Tensor) -> torch.Tensor:
    x, t, g = x.contiguous(), t.contiguous(), g.contiguous()
    dx = torch.empty_like(x)
    run_items(LIBRARY.fn("xent_bwd", x.dtype), x.shape[0], x.shape[1], ptr(x), ptr(t),
              ptr(stats), ptr(g), ptr(dx))
    return dx


def _bwd_fake(x, t, stats, g):  # noqa: ANN001, ANN202
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup(ctx, inputs, output) -> None:  # noqa: ANN001
    ctx.save_for_backward(inputs[0], inputs[1], output[1])
    ctx.mark_non_differentiable(output[1])  # max and log-sum-exp: an output only to be saved


def _backward(ctx, kernel, g, _dstats):  # noqa: ANN001, ANN202
    x, t, stats = ctx.saved_tensors
    return kernel(x, t, stats, g.to(x.dtype)), None


_op = kernel_op("cross_entropy_sum_cpu", _fwd, _fwd_fake, _bwd, _bwd_fake, _setup, _backward)


def cross_entropy_sum_cpu(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """sum over rows n with targets[n] != -100 of -log softmax(logits[n])[targets[n]], as
    `F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum")`; logits (N, V)
    float32 or float64 CPU, targets (N,) int64. Call `available()` first."""
    LIBRARY.require("cross_entropy_sum_cpu")
    V = logits.shape[-1]
    bad = ((targets < 0) & (targets != IGNORE_INDEX)) | (targets >= V)
    if bool(bad.any()):
        raise ValueError(f"cross-entropy: target {int(targets[bad][0])} is outside the "
                         f"vocabulary [0, {V}) (and is not the ignore index {IGNORE_INDEX})")
    return _op(logits, targets.long())[0]
