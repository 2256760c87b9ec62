"""Put on PYTHONPATH by ``takealook-run``: every Python process of the command starts the agent.

Then the ``sitecustomize`` this file hides (a distribution's or a venv's own)
runs as it would have.
"""


def _takealook_autostart():
    import importlib.machinery
    import importlib.util
    import os
    import sys

    try:
        import takealook.agent

        takealook.agent.start()
    except Exception as error:  # the app must start whatever happens here
        sys.stderr.write(f"takealook: agent not started: {error}\n")
    here = os.path.dirname(os.path.abspath(__file__))
    others = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if spec is not None and spec.loader is not None and spec.origin != os.path.abspath(__file__):
        module = importlib.util.module_from_spec(spec)
        sys.modules["sitecustomize"] = module
        spec.loader.exec_module(module)


_takealook_autostart()
del _takealook_autostart
