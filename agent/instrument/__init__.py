"""The instrumentations: each patches one library when (and only if) the app imports it.

Every patch follows the same rules: the library's own exceptions pass through
unchanged, a failure of ours is logged and swallowed, and the patch is applied
once (a marker attribute on the patched class or module).
"""

from __future__ import annotations

import logging

log = logging.getLogger("takealook.agent")


def install_all(agent) -> list:
    """Installs every instrumentation not disabled in the settings; returns their names."""
    from takealook.agent.instrument import asgi, dbapi, django, flask, http_clients, logs, wsgi

    table = {
        "wsgi": wsgi.install,
        "asgi": asgi.install,
        "flask": flask.install,
        "django": django.install,
        "psycopg2": dbapi.install_psycopg2,
        "psycopg": dbapi.install_psycopg,
        "urllib3": http_clients.install_urllib3,
        "httpx": http_clients.install_httpx,
        "urllib": http_clients.install_urllib,
        "logging": logs.install,
    }
    installed = []
    for name, install in table.items():
        if name in agent.settings.disabled:
            continue
        try:
            install(agent)
            installed.append(name)
        except Exception:
            log.warning("takealook: could not set up the %s instrumentation", name, exc_info=True)
    installed += [f"{name} (contrib)" for name in install_contrib(agent)]
    return installed


def install_contrib(agent) -> list:
    """OpenTelemetry's installed contrib instrumentations, for the libraries not in the table above."""
    import os

    from takealook.agent import contrib

    # Users coming from opentelemetry-instrument keep their OTEL_PYTHON_DISABLED_INSTRUMENTATIONS.
    otel_disabled = {n.strip().lower() for n in os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")}
    if "*" in otel_disabled:
        return []
    try:
        return contrib.install(agent, agent.settings.disabled | otel_disabled)
    except Exception:
        log.warning("takealook: could not load OpenTelemetry's contrib instrumentations", exc_info=True)
        return []
