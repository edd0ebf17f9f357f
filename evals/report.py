"""Moved to `hnetbench.reports.report`; this alias keeps old imports working."""

import sys

from hnetbench.reports import report as _moved

sys.modules[__name__] = _moved
