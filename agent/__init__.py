"""takealook's agent: traces a Python backend down to each SQL statement, at little cost to it.

Three ways in, all configured by environment variables (see ``settings.py``)::

    takealook-run --service orders gunicorn app:app      # any command
    takealook-run python manage.py runserver

    import takealook.agent                               # first lines of wsgi.py / manage.py
    takealook.agent.start()                              # or start(service_name="orders")

What it traces, when the app imports the library: Django and Flask (and any
WSGI app served by gunicorn) as SERVER spans named by route; psycopg2 and
psycopg 3 statements as CLIENT spans with the text and never the values;
requests/urllib3, httpx and urllib calls as CLIENT spans, with W3C
``traceparent``/``tracestate``/``baggage`` passed on, so a request crossing
three apps is one trace. Log records get the trace id. The HTTP server
duration histogram is exported as a metric.

The agent never breaks the app: ``start()`` never raises (a failure is one
warning and the app runs untraced), a collector that is down, refusing or
hanging costs the app nothing but the spans (a bounded queue in the export
helper process; drops are counted and logged at most once a minute), and no
exception of ours reaches a request.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Optional

log = logging.getLogger("takealook.agent")

_lock = threading.Lock()
_agent: Optional["Agent"] = None


class Agent:
    """What a running agent holds; instrumentations read it."""

    def __init__(self, settings, pipeline, provider, instrumentations=()):
        from takealook import __version__
        from takealook.agent.redact import Redactor

        self.settings = settings
        self.pipeline = pipeline
        self.provider = provider
        self.scope = ("takealook.agent", __version__)
        self.tracer = provider.get_tracer("takealook.agent", __version__)
        self.instrumentations = list(instrumentations)
        self.redactor = Redactor(settings.record_query_values, settings.record_query_names,
                                 settings.record_path_values, settings.record_path_names,
                                 settings.record_client_address)


def start(**settings) -> bool:
    """Start tracing this process; True if the agent runs. Idempotent, never raises.

    Keyword arguments override the environment: ``service_name``, ``endpoint``
    (base URL of the OTLP/HTTP collector), ``sampler``, ``sampler_arg``,
    ``response_headers``, ``sqlcommenter``, ``export_mode``, ...
    """
    global _agent
    with _lock:
        if _agent is not None:
            return True
        from takealook.agent.channel import HELPER_ENV

        if os.environ.get(HELPER_ENV):
            return False  # inside our own export helper
        try:
            _agent = _start(settings)
        except TypeError as error:  # unknown keyword: say so, run untraced
            log.warning("takealook: %s", error)
        except Exception as error:
            log.warning("takealook: the agent could not start (%s); the app runs untraced", error,
                        exc_info=log.isEnabledFor(logging.DEBUG))
        return _agent is not None


def _start(overrides: dict) -> Optional[Agent]:
    from opentelemetry import trace

    from takealook.agent.channel import open_channel
    from takealook.agent.contrib_policy import contrib_on_end
    from takealook.agent.instrument import install_all
    from takealook.agent.pipeline import Pipeline
    from takealook.agent.resource import base_resource
    from takealook.agent.settings import AgentSettings
    from takealook.agent.tracer import LeanTracerProvider, build_sampler

    settings = AgentSettings.load(**overrides)
    if not settings.enabled:
        log.info("takealook: OTEL_SDK_DISABLED is set; not tracing")
        return None
    resource = base_resource(settings.service_name, settings.resource_attributes)
    pipeline = Pipeline(open_channel(settings), resource, settings.metric_interval_s,
                        settings.export_traces, settings.export_metrics)
    provider = LeanTracerProvider(pipeline.on_end, build_sampler(settings.sampler, settings.sampler_arg),
                                  contrib_on_end(pipeline.on_end))
    provider._ids.on_fork = pipeline.check_fork  # noqa: SLF001 - under uWSGI a new trace is where a fork shows first
    pipeline.on_fork = provider._ids.check_fork  # noqa: SLF001 - elsewhere the next message is
    _install_provider(provider, pipeline)
    agent = Agent(settings, pipeline, provider)
    pipeline.url_rules = agent.redactor
    agent.instrumentations = install_all(agent)
    log.info("takealook: tracing %s (%s) to %s", settings.service_name, ", ".join(agent.instrumentations),
             settings.traces_endpoint)
    return agent


def _install_provider(provider, pipeline) -> None:
    """Make ours the global provider, unless the app set one up already (then ship its spans too)."""
    from opentelemetry import trace

    current = trace.get_tracer_provider()
    if type(current).__name__ == "ProxyTracerProvider":
        trace.set_tracer_provider(provider)
        return
    add = getattr(current, "add_span_processor", None)
    if add is not None:
        from takealook.agent.sdk_bridge import BridgeProcessor

        add(BridgeProcessor(pipeline))
        log.info("takealook: the app has its own TracerProvider; its spans are exported through takealook too")
    else:
        log.warning("takealook: the app has set a TracerProvider of type %s; its own spans are not exported "
                    "by takealook", type(current).__name__)


def shutdown(timeout: float = 5.0) -> None:
    """Flush what is buffered (the agent also does this at exit)."""
    agent = _agent
    if agent is not None:
        from takealook.agent.channel import close_channel

        agent.pipeline.close()
        close_channel(timeout)


def current() -> Optional[Agent]:
    """The running agent, or None."""
    return _agent


def wsgi_app(app):
    """Instrument a WSGI app that no built-in hook reaches (not Flask, Django, or served by gunicorn)."""
    from takealook.agent.instrument.wsgi import wrap

    return wrap(app)


def asgi_app(app):
    """Instrument an ASGI 3 app that no built-in hook reaches (Django's ``asgi.py`` needs nothing)."""
    from takealook.agent.instrument.asgi import wrap

    return wrap(app)


def traceparent() -> str:
    """The W3C traceparent of the current span ("" outside one), for an HTML template's
    ``<meta name="traceparent" content="...">``: the browser's document-load span then joins
    the backend trace that served the page."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
