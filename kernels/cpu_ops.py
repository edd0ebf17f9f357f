"""How a C kernel meets torch: two torch ops for torch.compile, and an eager twin for the rest.

torch.compile needs each kernel as an opaque op (`torch.library.custom_op`): a forward op whose
registered autograd calls a backward op. Each layer of that machinery costs Python time on
every call. Measured on this machine (rms_norm on one row, so the C work is nil; JSON
benchmarks/results/dispatch_cpu_stop27.json): ~76 us per forward + backward through the ops
against ~35 us through one plain `torch.autograd.Function` running the same code, and ~18 us
against ~7.5 us for a call without autograd. A training step makes ~70 kernel calls forward
and as many backward, an eval forward ~65.

`kernel_op` registers both ops (tests `opcheck` them; compiled blocks trace them) and returns
the function the models call: the forward op while torch.compile traces; otherwise the same
forward, setup and backward functions through an autograd.Function, or the forward function
alone when no graph is recorded. The same Python and C code runs either way: same numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def tracing() -> bool:
    """True while torch.compile traces: the entry points then call their ops."""
    return torch.compiler.is_compiling()


def kernel_op(name: str, forward: Callable, forward_fake: Callable, backward_kernel: Callable,
              backward_fake: Callable, setup_context: Callable,
              backward: Callable) -> Callable:
    """Register `hnetbench::<name>` (forward) and `hnetbench::<name>_backward`, and return the
    kernel's entry point.

    forward(*args) and backward_kernel(*args) run the C code (their type hints give the ops'
    schemas); the fakes return empty outputs of the right shapes for tracing;
    setup_context(ctx, inputs, output) saves what the backward needs; backward(ctx, kernel,
    *grads) returns one gradient per input, computing them with `kernel` (the backward op when
    traced, `backward_kernel` itself in eager mode)."""
    fwd_op = torch.library.custom_op(f"hnetbench::{name}", forward, mutates_args=())
    fwd_op.register_fake(forward_fake)
    bwd_op = torch.library.custom_op(f"hnetbench::{name}_backward", backward_kernel,
                                     mutates_args=())
    bwd_op.register_fake(backward_fake)

    def traced_backward(ctx, *grads):  # noqa: ANN001, ANN202
        return backward(ctx, bwd_op, *grads)

    fwd_op.register_autograd(traced_backward, setup_context=setup_context)

    class Eager(torch.autograd.Function):
        # forward(ctx, ...), not a separate setup_context: with one, every apply() binds the
        # arguments to forward's signature through inspect (~15 us a call)
        @staticmethod
        def forward(ctx, *args):  # noqa: ANN001, ANN002, ANN205
            output = forward(*args)
            setup_context(ctx, args, output)
            return output

        @staticmethod
        def backward(ctx, *grads):  # noqa: ANN001, ANN002, ANN205
            return backward(ctx, backward_kernel, *grads)

    Eager.__name__ = Eager.__qualname__ = f"{name}_eager"

    def call(*args):  # noqa: ANN002, ANN202
        if tracing():
            return fwd_op(*args)
        if torch.is_grad_enabled() and any(
                isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            return Eager.apply(*args)
        return forward(*args)

    call.__name__ = name
    return call
