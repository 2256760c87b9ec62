"""Locust entry file of ``load run`` in the open model (``--rate``) and on workers.

``load run`` passes this file to Locust before the suite (``-f this,SUITE.py``);
Locust finds the ``TakealookOpenModel`` user class here, and importing it
registers the recorder. Workers always load this file, so a master may run
either model. Not for import from anywhere else: it imports locust.
"""

from takealook.loadtests.open_model import TakealookOpenModel  # noqa: F401
