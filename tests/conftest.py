"""Suite-wide hooks."""

from __future__ import annotations

import pytest


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
