"""Suite-wide hooks."""

from __future__ import annotations

import pytest
import torch


class UniformLM(torch.nn.Module):
    """Every token equally likely (zero logits over `vocab` ids): BPB is exactly
    log2(vocab) x tokens / bytes and every choice of a task ties. One parameter, so optimizers
    and `.parameters()` callers see a real module."""

    def __init__(self, vocab: int = 256) -> None:
        super().__init__()
        self.vocab = vocab
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, targets=None, doc_start=None):  # noqa: ANN001, ANN201
        from hnetbench.models import LMOutput

        return LMOutput(logits=torch.zeros(*input_ids.shape, self.vocab) * self.w)


@pytest.fixture(scope="session")
def uniform_lm() -> type[UniformLM]:
    """The uniform language model class (tests build it with their tokenizer's vocab)."""
    return UniformLM


def _check_float32_as_close_as_torch(torch_fn, c_fn, inputs, dy=None) -> None:  # noqa: ANN001
    """torch_fn and c_fn each run on float32 copies of the float64 `inputs` (the floating ones
    that require grad are the differentiated ones); measured against torch_fn in float64, the
    C pass's largest relative error (output, then each gradient) must be at most twice torch's
    own float32 error, plus 1e-7."""
    wrt = [t for t in inputs if t.is_floating_point() and t.requires_grad]
    want = torch_fn(*inputs)
    want = [want.detach(), *torch.autograd.grad(want, wrt, dy)]
    errs = {}
    for name, fn in (("torch", torch_fn), ("c", c_fn)):
        ins = [t.detach().float().requires_grad_(t.requires_grad) if t.is_floating_point() else t
               for t in inputs]
        out = fn(*ins)
        got = [out, *torch.autograd.grad(out, [t for t in ins if t.requires_grad],
                                         None if dy is None else dy.float())]
        errs[name] = [float((g.detach().double() - w).abs().max()
                            / w.abs().max().clamp_min(1e-30)) for g, w in zip(got, want)]
    for c, t in zip(errs["c"], errs["torch"]):
        assert c <= 2 * t + 1e-7, errs


@pytest.fixture
def float32_as_close_as_torch():  # noqa: ANN201 - yields the check
    """The check that a C pass's float32 result is as close to float64 as torch's float32 (see
    `_check_float32_as_close_as_torch`): check(torch_fn, c_fn, inputs, dy=None)."""
    return _check_float32_as_close_as_torch


@pytest.fixture
def torch_threads():  # noqa: ANN201 - yields torch.set_num_threads
    """`torch.set_num_threads` for a test that compares thread counts; the count it found is
    restored afterwards, whatever the test did."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # An empty collection is a broken checkout or a wrong path, never a pass: pytest already exits
    # 5; say so in one line that CI logs show at the end.
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        line = "hnetbench: pytest collected no tests (exit 5): this run fails on purpose"
        if reporter is not None:
            reporter.write_line(line, red=True, bold=True)
        else:
            print(line)
