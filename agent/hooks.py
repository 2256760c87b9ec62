"""Run a function when a module has been imported: now if it already is, else right after its import.

The agent patches a library only when the app imports it, so ``start()``
imports nothing the app does not use, and patches libraries the app imports
later (``start()`` runs first in ``wsgi.py`` and ``manage.py``). A finder at
the head of ``sys.meta_path`` wraps the loader of each watched module; after
the module's code has run, the hooks run. A failing hook is logged, never
raised: the import itself always succeeds as it would have without us.
"""

from __future__ import annotations

import importlib.abc
import logging
import sys
import threading
from typing import Callable

log = logging.getLogger("takealook.agent")

_hooks: dict = {}
_lock = threading.RLock()
_finder = None


def when_imported(module_name: str, hook: Callable) -> None:
    """Call ``hook(module)`` once ``module_name`` is imported (at once if it already is)."""
    with _lock:
        module = sys.modules.get(module_name)
        if module is not None and getattr(module, "__spec__", None) is not None \
                and not getattr(module.__spec__, "_initializing", False):
            _run(hook, module)
            return
        _hooks.setdefault(module_name, []).append(hook)
        _install_finder()


def _run(hook: Callable, module) -> None:
    try:
        hook(module)
    except Exception:  # a patch that fails leaves the library as it was
        log.warning("takealook: could not instrument %s", module.__name__, exc_info=True)


def _install_finder() -> None:
    global _finder
    if _finder is None:
        _finder = _PostImportFinder()
        sys.meta_path.insert(0, _finder)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    def __init__(self):
        self._busy = threading.local()

    def find_spec(self, fullname, path, target=None):
        if fullname not in _hooks or getattr(self._busy, fullname, False):
            return None
        setattr(self._busy, fullname, True)
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            setattr(self._busy, fullname, False)
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _HookedLoader(spec.loader, fullname)
        return spec


class _HookedLoader(importlib.abc.Loader):
    """Delegates to the real loader, then runs the hooks of the module."""

    def __init__(self, loader, fullname: str):
        self._loader = loader
        self._fullname = fullname

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # The module's spec must show the real loader (importlib.resources and others look at it).
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        module.__loader__ = self._loader
        self._loader.exec_module(module)
        with _lock:
            hooks = _hooks.pop(self._fullname, [])
        for hook in hooks:
            _run(hook, module)
