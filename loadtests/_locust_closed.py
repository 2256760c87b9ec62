"""Locust entry file of ``load run`` in the closed model (``--users``).

``load run`` passes this file to Locust before the suite (``-f this,SUITE.py``);
importing the recorder registers its listeners and options. Not for import
from anywhere else: it imports locust.
"""

import takealook.loadtests.recorder  # noqa: F401
