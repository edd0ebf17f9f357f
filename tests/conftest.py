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
