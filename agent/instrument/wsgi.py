"""Server spans for WSGI apps: Flask and Django use this, and so can any WSGI app.

``traced_call`` runs one request under a SERVER span: the remote parent comes
from ``traceparent``/``tracestate``/``baggage``, attributes follow the stable
HTTP semantic conventions (``http.request.method``, ``url.path``,
``http.route``, ``http.response.status_code``), the route is set by the
framework's hook as soon as routing is done, and the span ends when the server
closes the response. No request or response header is recorded (``User-Agent``
only with ``TAKEALOOK_RECORD_USER_AGENT=true``). ``url.query`` and ``url.path``
keep ids and the app's own words, and ``REDACTED`` the rest (``redact``); the
path is recorded when the span is encoded (with its batch, ``pipeline``), shaped by the route matched.

The outermost layer that sees a request makes its span (gunicorn's worker, or
the framework's handler); inner layers find it in the environ and only add the
route. ``wrap(app)`` instruments any other WSGI app by hand.

With ``TAKEALOOK_RESPONSE_HEADERS=true`` responses carry ``traceresponse`` and
``Server-Timing: traceparent;desc=...`` so a browser (the React front end's
OpenTelemetry web SDK) can join the backend's trace.
"""

from __future__ import annotations

import logging
import time

from opentelemetry import trace

from takealook.agent.hooks import when_imported
from takealook.agent.instrument.common import attach, current_span, detach, extract_from_environ
from takealook.agent.tracer import STATUS_ERROR, LeanSpan

log = logging.getLogger("takealook.agent")

SPAN_KEY = "takealook.span"
_SERVER = 2  # SpanKind.SERVER as OTLP numbers it
_agent = None
_time_ns = time.time_ns
_KNOWN_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"))


def install(agent) -> None:
    global _agent
    _agent = agent
    when_imported("gunicorn.workers.base", _patch_gunicorn)


def wrap(app):
    """Instrument any WSGI app: ``application = takealook.agent.wsgi_app(application)``."""
    def traced_app(environ, start_response):
        return traced_call(app, environ, start_response)

    return traced_app


def set_route(environ: dict, route: str) -> None:
    """Called by framework hooks once the request is routed."""
    span = environ.get(SPAN_KEY)
    if not isinstance(span, LeanSpan):  # not sampled: the route still names its series in the histogram
        request = environ.get(UNSAMPLED_KEY)
        if request is not None and route:
            request[3] = route
        return
    if route:
        span.attributes["http.route"] = route
        span.name = f"{span.attributes.get('http.request.method', 'HTTP')} {route}"
        try:  # now, before the view runs: its outgoing calls' paths keep this route's words
            _agent.redactor.learn(route)
        except Exception:
            pass


def traced_call(app, environ, start_response):
    agent = _agent
    if agent is None or SPAN_KEY in environ:
        return app(environ, start_response)
    try:
        span, token = _start(agent, environ)
    except Exception:  # telemetry failed: serve the request untraced
        log.debug("takealook: could not start a server span", exc_info=True)
        return app(environ, start_response)
    status = [0]
    response_headers = agent.settings.response_headers

    def traced_start_response(status_line, headers, exc_info=None):
        try:
            status[0] = int(status_line[:3])
            if response_headers and isinstance(span, LeanSpan):
                headers = list(headers) + _trace_headers(span)
        except Exception:
            pass
        return start_response(status_line, headers, exc_info)

    try:
        result = app(environ, traced_start_response)
    except BaseException as error:
        detach(token)
        _finish(agent, span, status[0] or 500, environ, error)
        raise
    detach(token)
    return _close_hook(result, (agent, span, status, environ))


def _start(agent, environ):
    method = environ.get("REQUEST_METHOD") or "GET"
    if method not in _KNOWN_METHODS:
        method = "_OTHER"
    scheme = environ.get("wsgi.url_scheme", "http")
    attributes = {
        "http.request.method": method,
        "url.scheme": scheme,
    }
    query = environ.get("QUERY_STRING")
    if query:
        attributes["url.query"] = agent.redactor.query(query)
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME")
    if host:
        address = _hosts.get(host)
        if address is None:
            address = _host_address(host)
        attributes["server.address"] = address[0]
        if address[1] is not None:
            attributes["server.port"] = address[1]
    peer = environ.get("REMOTE_ADDR")
    if peer:
        peer = agent.redactor.client_address(peer)
        if peer:
            attributes["client.address"] = peer
    if agent.settings.record_user_agent and environ.get("HTTP_USER_AGENT"):
        attributes["user_agent.original"] = environ["HTTP_USER_AGENT"][:256]
    if agent.settings.old_http_names:
        attributes.update({"http.method": method, "http.scheme": scheme})
    parent = extract_from_environ(environ)
    # Straight to the provider: these attributes are clean already (the tracer's start_span checks each).
    span = agent.provider.make_span(method, current_span() if parent is None else trace.get_current_span(parent),
                                    _SERVER, attributes, agent.scope)
    environ[SPAN_KEY] = span
    if not isinstance(span, LeanSpan):
        environ[UNSAMPLED_KEY] = unsampled(span, method, scheme)
    return span, attach(span, parent)


UNSAMPLED_KEY = "takealook.unsampled"


def unsampled(span, method: str, scheme: str) -> list:
    """What the histogram needs of a request that is not sampled (no span records it): [method, scheme,
    start, route (set by the framework's hook), load label]."""
    return [method, scheme, _time_ns(), "", _load_label(span.get_span_context().trace_state)]


def _count_unsampled(agent, carrier, code: int) -> None:
    request = carrier.pop(UNSAMPLED_KEY, None)  # popped: a request is counted once
    if request is not None:
        method, scheme, start, route, load = request
        agent.pipeline.record_request((_time_ns() - start) / 1e9, method, route, code or 500, scheme, load)


_hosts: dict = {}
_PATH_KEYS, _PATH_KEYS_OLD = ("url.path",), ("url.path", "http.target")


def _host_address(host: str) -> tuple:
    """(server.address, server.port or None) of a Host header, remembered (a server answers to a few)."""
    name, _, port = host.rpartition(":") if host.rfind(":") > host.rfind("]") else (host, "", "")
    address = (name or host, int(port) if port.isdigit() else None)
    if len(host) <= 256:
        if len(_hosts) >= 64:  # many names (a wildcard domain): start over rather than grow
            _hosts.clear()
        _hosts[host] = address
    return address


def _finish(agent, span, code: int, environ, error) -> None:
    if not isinstance(span, LeanSpan):
        try:
            _count_unsampled(agent, environ, code)
        except Exception:
            pass
        return
    if span.end_ns:
        return
    attributes = span.attributes
    # The path goes through the URL rules when the span is encoded, with its batch (pipeline.py), by the
    # route known now (it says which segments are the app's words); until then the attribute is empty.
    attributes["url.path"] = ""
    if agent.settings.old_http_names:
        attributes["http.target"] = ""
        span.deferred = (_PATH_KEYS_OLD, environ.get("PATH_INFO") or "/", attributes.get("http.route"))
    else:
        span.deferred = (_PATH_KEYS, environ.get("PATH_INFO") or "/", attributes.get("http.route"))
    if code:
        attributes["http.response.status_code"] = code
        if agent.settings.old_http_names:
            attributes["http.status_code"] = code
    if error is not None:
        span.fail(error, overwrite_type=False)
    elif code >= 500:
        span.status_code = STATUS_ERROR
        attributes.setdefault("error.type", str(code))
    span.end()
    try:
        state = span.trace_state
        agent.pipeline.record_request((span.end_ns - span.start_ns) / 1e9, attributes["http.request.method"],
                                      attributes.get("http.route", ""), code or 500, attributes["url.scheme"],
                                      _load_label(state) if state else "")
    except Exception:
        pass


def _load_label(state) -> str:
    """The run label of a load-test request (its ``tracestate`` has ``takealook=load:<label>``), else ''."""
    value = state.get("takealook") if state else None
    return value[5:] if value and value.startswith("load:") else ""


def _trace_headers(span: LeanSpan) -> list:
    value = f"00-{span.trace_id:032x}-{span.span_id:016x}-01"
    return [("traceresponse", value), ("Server-Timing", f'traceparent;desc="{value}"')]


class _ClosingResponse:
    """The app's response iterable; ends the span when the server closes it (``_finish`` with what it
    was given: agent, span, [status], environ)."""

    __slots__ = ("_result", "_finishing", "_closed")

    def __init__(self, result, finishing: tuple):
        self._result = result
        self._finishing = finishing
        self._closed = False

    def __iter__(self):
        return iter(self._result)

    def close(self):
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            if not self._closed:
                self._closed = True
                agent, span, status, environ = self._finishing
                _finish(agent, span, status[0], environ, None)


def _close_hook(result, finishing: tuple):
    # A wsgi.file_wrapper response must stay one, or the server loses sendfile().
    agent, span, status, environ = finishing
    file_wrapper = environ.get("wsgi.file_wrapper")
    if file_wrapper is not None and isinstance(file_wrapper, type) and isinstance(result, file_wrapper):
        original = getattr(result, "close", None)

        def close():
            try:
                if original is not None:
                    original()
            finally:
                _finish(agent, span, status[0], environ, None)

        try:
            result.close = close
            return result
        except AttributeError:
            pass
    return _ClosingResponse(result, finishing)


def _patch_gunicorn(module) -> None:
    """gunicorn serves any WSGI app: trace at its door, so apps of any framework get server spans."""
    worker = module.Worker
    if "_takealook" in worker.__dict__:
        return
    original = worker.load_wsgi

    def load_wsgi(self):
        original(self)
        self.wsgi = wrap(self.wsgi)

    worker.load_wsgi = load_wsgi
    worker._takealook = True


# Shared with asgi.py, whose server spans are made and ended the same way.
KNOWN_METHODS = _KNOWN_METHODS
trace_headers = _trace_headers


def finish(agent, span, code: int, error, path: str, scope: dict) -> None:
    if isinstance(span, LeanSpan):
        _finish(agent, span, code, {"PATH_INFO": path}, error)
    else:
        _finish(agent, span, code, scope, error)
