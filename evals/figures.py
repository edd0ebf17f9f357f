"""Moved to `hnetbench.reports.figures`; this alias keeps old imports working."""

import sys

from hnetbench.reports import figures as _moved

sys.modules[__name__] = _moved
