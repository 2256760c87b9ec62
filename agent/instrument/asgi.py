"""Server spans for ASGI apps: Django's ``asgi.py`` (under uvicorn, daphne, hypercorn) and any ASGI app.

``traced_call`` runs one HTTP request under a SERVER span exactly as
``wsgi.traced_call`` does for WSGI: the remote parent from
``traceparent``/``tracestate``/``baggage``, the same attributes (stable HTTP
semantic conventions, no header recorded, URLs by the rules of ``redact``), the route set by Django's hook
(``django.py``) once routing is done, the status from the
``http.response.start`` message, and the span ended when the app's coroutine
returns, after the last body message.

Context crosses ``await`` by itself: OpenTelemetry's context is a contextvar,
attached in the request's task, and asyncio copies it into the tasks the app
starts (Django's handler runs the view in one), and asgiref's ``sync_to_async``
into the thread that runs a sync view; so psycopg (sync and async cursors) and
httpx (``Client`` and ``AsyncClient``) spans land under the request's span.

Only ``http`` scopes are traced; ``lifespan`` and ``websocket`` pass through.
``wrap(app)`` (``takealook.agent.asgi_app``) instruments any ASGI 3 app by hand;
Django's ``ASGIHandler`` is patched when imported.
"""

from __future__ import annotations

import logging

from opentelemetry import trace

from takealook.agent.hooks import when_imported
from takealook.agent.instrument import wsgi
from takealook.agent.instrument.common import attach, detach, extract_from_environ
from takealook.agent.tracer import LeanSpan

log = logging.getLogger("takealook.agent")

SPAN_KEY = wsgi.SPAN_KEY  # the same key in the scope: Django's route hook finds the span either way
_agent = None
_SERVER = 2
# Headers the server span reads, as the ASGI scope spells them; propagation fields go to the extractor
# under their WSGI names, so both servers share one extraction.
_HOST, _USER_AGENT = b"host", b"user-agent"
_PROPAGATION = {b"traceparent": "HTTP_TRACEPARENT", b"tracestate": "HTTP_TRACESTATE", b"baggage": "HTTP_BAGGAGE"}


def install(agent) -> None:
    global _agent
    _agent = agent
    when_imported("django.core.handlers.asgi", _patch_django)


def wrap(app):
    """Instrument any ASGI 3 app: ``application = takealook.agent.asgi_app(application)``."""
    async def traced_app(scope, receive, send):
        return await traced_call(app, scope, receive, send)

    return traced_app


async def traced_call(app, scope, receive, send):
    agent = _agent
    if agent is None or scope.get("type") != "http" or SPAN_KEY in scope:
        return await app(scope, receive, send)
    try:
        span, token = _start(agent, scope)
    except Exception:  # telemetry failed: serve the request untraced
        log.debug("takealook: could not start a server span", exc_info=True)
        return await app(scope, receive, send)
    status = [0]
    response_headers = agent.settings.response_headers

    async def traced_send(message):
        if message.get("type") == "http.response.start":
            try:
                status[0] = int(message.get("status") or 0)
                if response_headers and isinstance(span, LeanSpan):
                    message = {**message, "headers": list(message.get("headers") or ()) + [
                        (name.encode(), value.encode()) for name, value in wsgi.trace_headers(span)]}
            except Exception:
                pass
        return await send(message)

    try:
        result = await app(scope, receive, traced_send)
    except BaseException as error:
        detach(token)
        wsgi.finish(agent, span, status[0] or 500, error, scope.get("path") or "/", scope)
        raise
    detach(token)
    wsgi.finish(agent, span, status[0], None, scope.get("path") or "/", scope)
    return result


def _start(agent, scope):
    method = scope.get("method") or "GET"
    if method not in wsgi.KNOWN_METHODS:
        method = "_OTHER"
    scheme = scope.get("scheme") or "http"
    # url.path is set when the span ends, by the route matched (wsgi.finish, the URL rules of ``redact``).
    attributes = {"http.request.method": method, "url.scheme": scheme}
    query = scope.get("query_string")
    if query:
        attributes["url.query"] = agent.redactor.query(query.decode("latin-1"))
    carrier = None
    host = user_agent = None
    for name, value in scope.get("headers") or ():
        if name == _HOST:
            host = value.decode("latin-1")
        elif name == _USER_AGENT:
            user_agent = value
        elif name in _PROPAGATION:
            if carrier is None:
                carrier = {}
            carrier[_PROPAGATION[name]] = value.decode("latin-1")
    if host is None and scope.get("server"):
        host = str(scope["server"][0])
    if host:
        name, _, port = host.rpartition(":") if host.rfind(":") > host.rfind("]") else (host, "", "")
        attributes["server.address"] = name or host
        if port.isdigit():
            attributes["server.port"] = int(port)
    client = scope.get("client")
    if client:
        peer = agent.redactor.client_address(str(client[0]))
        if peer:
            attributes["client.address"] = peer
    if user_agent and agent.settings.record_user_agent:
        attributes["user_agent.original"] = user_agent[:256].decode("latin-1")
    if agent.settings.old_http_names:
        attributes.update({"http.method": method, "http.scheme": scheme})
    parent = extract_from_environ(carrier) if carrier else None
    span = agent.provider.make_span(method, trace.get_current_span(parent), _SERVER, attributes, agent.scope)
    scope[SPAN_KEY] = span
    if not isinstance(span, LeanSpan):
        scope[wsgi.UNSAMPLED_KEY] = wsgi.unsampled(span, method, scheme)
    return span, attach(span, parent)


def _patch_django(module) -> None:
    handler = module.ASGIHandler
    if "_takealook" in handler.__dict__:
        return
    original = handler.__call__

    async def __call__(self, scope, receive, send):
        return await traced_call(lambda s, r, w: original(self, s, r, w), scope, receive, send)

    handler.__call__ = __call__
    handler._takealook = True
