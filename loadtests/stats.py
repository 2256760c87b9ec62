"""The statistics of ``load compare``: they live in ``takealook.verdicts.stats``, shared with ``traces compare``.

This module keeps the old import path (``from takealook.loadtests import stats``) working.
"""

from takealook.verdicts.stats import *  # noqa: F401,F403
