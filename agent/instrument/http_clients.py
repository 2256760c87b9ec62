"""CLIENT spans for outgoing HTTP, with W3C trace context injected: urllib3 (and so
requests), httpx (sync and async transports) and the standard library's urllib.

requests sends through urllib3, so patching urllib3's
``HTTPConnectionPool.urlopen`` covers both with one span per call (a span is
never opened inside another client span: retries and redirects inside urlopen
stay one span). urllib goes through ``http.client`` directly and is patched at
``AbstractHTTPHandler.do_open``. The caller's header dict is never modified:
headers are copied before ``traceparent`` is added.

Attributes: ``http.request.method``, ``url.full`` (credentials and fragment
removed; path and query keep ids and this app's words, ``REDACTED`` the rest:
``redact``), ``server.address``/``server.port``, ``http.response.status_code``,
``error.type``. No header is recorded.
"""

from __future__ import annotations

import functools
import logging
import time


from takealook.agent.hooks import when_imported
from takealook.agent.instrument.common import IN_CLIENT_CALL, current_span, inject, inject_ids, suppressed
from takealook.agent.otlp import Record
from takealook.agent.pipeline import URL
from takealook.agent.tracer import STATUS_ERROR, LeanSpan

log = logging.getLogger("takealook.agent")

_agent = None
_CLIENT = 3  # SpanKind.CLIENT as OTLP numbers it
_time_ns = time.time_ns
_new_tuple = tuple.__new__  # a Record from its fields in one call (its generated __new__ is Python)


def _set_agent(agent) -> None:
    global _agent
    _agent = agent


def install_urllib3(agent) -> None:
    _set_agent(agent)
    when_imported("urllib3.connectionpool", _patch_urllib3)


def install_httpx(agent) -> None:
    _set_agent(agent)
    when_imported("httpx", _patch_httpx)


def install_urllib(agent) -> None:
    _set_agent(agent)
    when_imported("urllib.request", _patch_urllib)


# --------------------------------------------------------------------------- shared


def _start(method: str, url: str, host: str, port):
    """(span, token) for a new client call, or (None, None) when it must not be traced."""
    if _agent is None or IN_CLIENT_CALL.get() or suppressed():
        return None, None
    try:
        method = (method or "GET").upper()
        attributes = _call_attributes(method, host, port)
        old_names = _agent.settings.old_http_names
        if old_names:
            attributes.update({"http.method": method, "http.url": ""})
        span = _agent.provider.make_span(method, current_span(), _CLIENT, attributes, _agent.scope)
        if isinstance(span, LeanSpan):
            span.deferred = (_URL_KEYS_OLD if old_names else _URL_KEYS, url, URL)
        return span, IN_CLIENT_CALL.set(True)
    except Exception:
        log.debug("takealook: could not start a client span", exc_info=True)
        return None, None


_URL_KEYS, _URL_KEYS_OLD = ("url.full",), ("url.full", "http.url")


def _call_attributes(method: str, host, port) -> dict:
    """A call's attributes before its answer. The URL goes through the URL rules when the span is
    encoded, with its batch (pipeline.py): until then it is empty."""
    attributes = {"http.request.method": method, "url.full": ""}
    if host:
        attributes["server.address"] = host
    if port:
        attributes["server.port"] = int(port)
    return attributes


def _finish(span, token, status, error) -> None:
    try:
        IN_CLIENT_CALL.reset(token)
    except ValueError:
        pass
    if not isinstance(span, LeanSpan):
        return
    if status:
        span.attributes["http.response.status_code"] = int(status)
        if _agent.settings.old_http_names:
            span.attributes["http.status_code"] = int(status)
        if int(status) >= 400:
            span.status_code = STATUS_ERROR
            span.attributes["error.type"] = str(status)
    if error is not None:
        span.fail(error)
    span.end()


def _headers_with_context(headers, span) -> dict:
    """A copy of the caller's headers (theirs are never changed) with the trace context added."""
    carrier = _copy_headers(headers)
    if isinstance(span, LeanSpan) or (span is not None and span.get_span_context().is_valid):
        inject(carrier, span)
    return carrier


_caseless = None  # requests.structures.CaseInsensitiveDict, once seen


def _copy_headers(headers) -> dict:
    """The caller's headers as a new dict. requests' CaseInsensitiveDict is a Python mapping: ``dict()``
    of it calls its ``__iter__`` and ``__getitem__`` for every header (4,000 instructions for a call's
    few); its store holds (name as given, value) by lowercase name, which is the same dict in one call."""
    global _caseless
    kind = type(headers)
    if kind is dict:
        return headers.copy()
    if kind is _caseless:  # requests' headers: copied from their store, not key by key in Python
        return dict(headers._store.values())
    if not headers:
        return {}
    if kind.__name__ == "CaseInsensitiveDict" and kind.__module__ == "requests.structures" and \
            isinstance(getattr(headers, "_store", None), dict):
        copied = dict(headers._store.values())
        if copied == dict(headers):  # the store is as described (checked once): use it from now on
            _caseless = kind
        return copied
    return dict(headers)


# --------------------------------------------------------------------------- urllib3 (and requests)


def _patch_urllib3(module) -> None:
    pool = module.HTTPConnectionPool
    if getattr(pool.urlopen, "_takealook", False):
        return
    original = pool.urlopen

    @functools.wraps(original)
    def urlopen(self, method, url, *args, **kwargs):
        full = url if "://" in url else f"{self.scheme}://{_host_port(self.host, self.port, self.scheme)}{url}"
        parent = current_span()
        agent = _agent
        if type(parent) is LeanSpan and agent is not None and agent.provider.inline_children \
                and not agent.settings.old_http_names and not IN_CLIENT_CALL.get() and not suppressed():
            return _recorded_urlopen(agent, parent, original, self, method, url, full, args, kwargs)
        span, token = _start(method, full, self.host, self.port)
        if token is None:
            return original(self, method, url, *args, **kwargs)
        try:
            if len(args) >= 2:  # urlopen(method, url, body, headers, ...)
                args = (args[0], _headers_with_context(args[1], span)) + args[2:]
            else:
                kwargs["headers"] = _headers_with_context(kwargs.get("headers"), span)
            response = original(self, method, url, *args, **kwargs)
        except BaseException as error:
            _finish(span, token, 0, error)
            raise
        _finish(span, token, getattr(response, "status", 0), None)
        return response

    urlopen._takealook = True
    pool.urlopen = urlopen


def _recorded_urlopen(agent, parent: LeanSpan, original, pool, method, url, full: str, args, kwargs):
    """The common call (a request's child, the default sampler): its span is never seen by the app, so it
    is no span object but a record, made when the call is done; a call that raises is a whole LeanSpan
    with its error. The same attributes, trace context and URL rules as ``_start``/``_finish``."""
    token = IN_CLIENT_CALL.set(True)
    try:
        try:
            span_id = agent.provider.span_bits(64) or 1
            if len(args) >= 2:  # urlopen(method, url, body, headers, ...)
                sent_args, sent_kwargs = (args[0], _headers_with_ids(args[1], parent, span_id)) + args[2:], kwargs
            else:
                sent_args, sent_kwargs = args, {**kwargs, "headers": _headers_with_ids(kwargs.get("headers"), parent,
                                                                                     span_id)}
        except Exception:  # telemetry failed: the call goes as the app made it, untraced
            log.debug("takealook: could not prepare a client call", exc_info=True)
            return original(pool, method, url, *args, **kwargs)
        start = _time_ns()
        try:
            response = original(pool, method, url, *sent_args, **sent_kwargs)
        except BaseException as error:
            _failed_call(agent, parent, span_id, start, method, full, pool.host, pool.port, error)
            raise
    finally:
        IN_CLIENT_CALL.reset(token)
    try:
        end = _time_ns()
        method = (method or "GET").upper()
        attributes = _call_attributes(method, pool.host, pool.port)
        status = int(getattr(response, "status", 0) or 0)
        error_status = 0
        if status:
            attributes["http.response.status_code"] = status
            if status >= 400:
                error_status = STATUS_ERROR
                attributes["error.type"] = str(status)
        state = parent.trace_state
        agent.provider.on_end(_new_tuple(Record, (
            parent.trace_id, span_id, parent.span_id, False, method, _CLIENT, start, end, error_status, "",
            attributes, None, None, state.to_header() if state else "", agent.scope[0], agent.scope[1], None,
            (_URL_KEYS, full, URL))))
    except Exception:
        log.debug("takealook: could not record a client call", exc_info=True)
    return response


def _headers_with_ids(headers, parent: LeanSpan, span_id: int) -> dict:
    carrier = _copy_headers(headers)
    inject_ids(carrier, parent.trace_id, span_id, parent.trace_state)
    return carrier


def _failed_call(agent, parent, span_id, start, method, full, host, port, error) -> None:
    """The span of a call that raised, as a LeanSpan with the ids its request was sent with."""
    try:
        method = (method or "GET").upper()
        span = LeanSpan(method, parent.trace_id, span_id, parent.span_id, False, _CLIENT,
                        _call_attributes(method, host, port), parent.trace_state, agent.scope,
                        agent.provider.on_end, start)
        span.deferred = (_URL_KEYS, full, URL)
        span.fail(error)
        span.end()
    except Exception:
        log.debug("takealook: could not record a failed client call", exc_info=True)


def _host_port(host: str, port, scheme: str) -> str:
    if port is None or (scheme == "http" and port == 80) or (scheme == "https" and port == 443):
        return host
    return f"{host}:{port}"


# --------------------------------------------------------------------------- httpx


def _patch_httpx(module) -> None:
    sync_transport = module.HTTPTransport
    if getattr(sync_transport.handle_request, "_takealook", False):
        return
    original_sync = sync_transport.handle_request
    original_async = module.AsyncHTTPTransport.handle_async_request

    def prepare(request):
        url = request.url
        span, token = _start(request.method, str(url), url.host, url.port)
        if token is not None and isinstance(span, LeanSpan):
            for key, value in _headers_with_context({}, span).items():
                request.headers[key] = value
        return span, token

    @functools.wraps(original_sync)
    def handle_request(self, request):
        span, token = prepare(request)
        if token is None:
            return original_sync(self, request)
        try:
            response = original_sync(self, request)
        except BaseException as error:
            _finish(span, token, 0, error)
            raise
        _finish(span, token, response.status_code, None)
        return response

    @functools.wraps(original_async)
    async def handle_async_request(self, request):
        span, token = prepare(request)
        if token is None:
            return await original_async(self, request)
        try:
            response = await original_async(self, request)
        except BaseException as error:
            _finish(span, token, 0, error)
            raise
        _finish(span, token, response.status_code, None)
        return response

    handle_request._takealook = True
    handle_async_request._takealook = True
    sync_transport.handle_request = handle_request
    module.AsyncHTTPTransport.handle_async_request = handle_async_request


# --------------------------------------------------------------------------- urllib


def _patch_urllib(module) -> None:
    handler = module.AbstractHTTPHandler
    if getattr(handler.do_open, "_takealook", False):
        return
    original = handler.do_open

    @functools.wraps(original)
    def do_open(self, http_class, req, **http_conn_args):
        host = req.host or ""
        name, _, port = host.rpartition(":") if ":" in host.rsplit("]", 1)[-1] else (host, "", "")
        span, token = _start(req.get_method(), req.full_url, name or host, port if port.isdigit() else None)
        if token is None:
            return original(self, http_class, req, **http_conn_args)
        try:
            for key, value in _headers_with_context({}, span).items():
                req.add_unredirected_header(key.capitalize(), value)
            response = original(self, http_class, req, **http_conn_args)
        except BaseException as error:
            _finish(span, token, 0, error)
            raise
        _finish(span, token, getattr(response, "status", 0), None)
        return response

    do_open._takealook = True
    handler.do_open = do_open
