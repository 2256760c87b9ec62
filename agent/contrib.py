"""OpenTelemetry's contrib instrumentations join takealook's traces.

``opentelemetry-instrument`` loads every installed instrumentor (the
``opentelemetry_instrumentor`` entry points of ``opentelemetry-instrumentation-*``
packages); so does the agent, for the libraries it does not instrument itself
(Redis, Celery, SQLAlchemy, boto3, ...). Each gets takealook's tracer provider,
so its spans are children of the request's span, in the same trace, and leave
through the same export helper.

Rules, in order, per entry point:
- takealook's own instrumentation wins where both exist (``OWN``): the contrib
  one is not loaded, so a call never has two spans;
- a name in ``TAKEALOOK_DISABLED_INSTRUMENTATIONS`` (or OpenTelemetry's
  ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``) is skipped;
- the dependency check is OpenTelemetry's own (the distribution's
  ``instruments`` requirements, as ``opentelemetry-instrument`` checks them): a
  library that is not installed is skipped quietly, one at a version the
  instrumentor does not support is one warning;
- the instrumentor is loaded when the app imports the library, not before, so
  ``start()`` imports nothing the app does not use (as for our own
  instrumentations, ``hooks.when_imported``); when the library's module cannot
  be told from the distribution's files, it is loaded at once;
- an instrumentor that fails to import or to instrument is one warning; the
  app runs on without it.

Contrib spans follow the agent's no-values policy: ``contrib_policy`` scrubs
their attributes when they end, before anything leaves the process.
"""

from __future__ import annotations

import logging
import re

from takealook.agent.hooks import when_imported

log = logging.getLogger("takealook.agent")

GROUP = "opentelemetry_instrumentor"
# Entry point names of the libraries the agent instruments itself (settings.INSTRUMENTATIONS,
# under OpenTelemetry's names): "requests" is covered by our urllib3 patch, "asgi"/"wsgi"/"dbapi"
# by our server hooks and drivers.
OWN = frozenset(("flask", "django", "psycopg2", "psycopg", "requests", "urllib3", "httpx", "urllib", "logging",
                 "wsgi", "asgi", "dbapi"))
_MODULE_NAME = re.compile(r"^[A-Za-z_]\w*$")


def entry_points() -> list:
    """The installed ``opentelemetry_instrumentor`` entry points (none without contrib packages)."""
    try:
        from opentelemetry.util._importlib_metadata import entry_points as find
    except ImportError:  # pragma: no cover - an API older than 1.12
        from importlib.metadata import entry_points as find
    try:
        return list(find(group=GROUP))
    except Exception:  # broken metadata of some distribution: no contrib instrumentations
        log.debug("takealook: could not list %s entry points", GROUP, exc_info=True)
        return []


def install(agent, disabled) -> list:
    """Arranges for each eligible contrib instrumentor to load; returns their names."""
    provider = agent.provider
    planned = []
    seen = set()
    for entry_point in entry_points():
        name = entry_point.name
        if name in OWN or name in disabled or name in seen:
            continue
        seen.add(name)
        try:
            modules = _plan(entry_point)
        except Exception:
            log.warning("takealook: could not check the %s instrumentation's dependencies; not loading it", name,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            continue
        if modules is None:
            continue
        loader = _Loader(entry_point, provider)
        if modules:
            for module in modules:
                when_imported(module, loader)
        else:
            loader(None)
        planned.append(name)
    return planned


def _plan(entry_point):
    """None: do not load (dependency missing or conflicting); else the modules whose import loads it."""
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return []  # no distribution to check against: the instrumentor checks itself when loaded
    from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts

    conflict = get_dist_dependency_conflicts(dist)
    if conflict is not None:
        if conflict.found or getattr(conflict, "found_any", None):
            log.warning("takealook: not loading the %s instrumentation: %s", entry_point.name, conflict)
        else:
            log.debug("takealook: %s instrumentation: its library is not installed", entry_point.name)
        return None
    return _library_modules(dist)


def _library_modules(dist) -> list:
    """Top-level modules of the libraries a contrib distribution instruments (its ``instruments`` extras)."""
    from importlib.metadata import PackageNotFoundError, distribution

    modules = []
    for requirement in dist.requires or ():
        if "instruments" not in requirement:
            continue
        name = re.split(r"[\s;<>=!~\[(]", requirement.strip(), maxsplit=1)[0]
        try:
            files = distribution(name).files or ()
        except PackageNotFoundError:
            continue  # one of an "instruments-any" set that is not installed
        for top in {file.parts[0] for file in files if file.parts}:
            module = top.split(".", 1)[0] if top.endswith((".py", ".so", ".pyd")) else top
            if _MODULE_NAME.match(module) and module != "__pycache__" and module not in modules:
                modules.append(module)
    return modules


class _Loader:
    """Loads and runs one instrumentor, once, when the first of its library's modules is imported."""

    def __init__(self, entry_point, provider):
        self.entry_point = entry_point
        self.provider = provider
        self.done = False

    def __call__(self, _module) -> None:
        if self.done:
            return
        self.done = True
        name = self.entry_point.name
        try:
            instrumentor = self.entry_point.load()()
            if getattr(instrumentor, "is_instrumented_by_opentelemetry", False):
                return  # the app instrumented this library itself
            # The dependency check above is OpenTelemetry's own; instrument() need not repeat it.
            instrumentor.instrument(tracer_provider=self.provider, skip_dep_check=True)
            log.debug("takealook: loaded the %s instrumentation", name)
        except Exception as error:
            log.warning("takealook: the %s instrumentation failed (%s: %s); the app runs without it", name,
                        type(error).__name__, error, exc_info=log.isEnabledFor(logging.DEBUG))
