"""Moved to `hnetbench.reports.commands`; this alias keeps old imports working."""

import sys

from hnetbench.reports import commands as _moved

sys.modules[__name__] = _moved
