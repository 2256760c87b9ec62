"""Django: a server span per request, named by the URL pattern, exceptions recorded.

Nothing here reads Django's settings. Projects made from Django's template set
``DJANGO_SETTINGS_MODULE`` with ``setdefault`` in ``wsgi.py``/``manage.py``
*after* ``takealook.agent.start()`` has run, and some call
``settings.configure()`` themselves: touching ``settings`` before that would
configure Django with empty settings and fail every request. So the agent
only patches classes, when their modules are imported, and connects a signal
receiver (``Signal.connect`` looks at ``settings.configured`` only, which does
not configure anything).

- ``WSGIHandler.__call__``: the request's server span (``wsgi.traced_call``); under ASGI,
  ``ASGIHandler.__call__`` makes it (``asgi.py``) and the span is kept in the scope;
- ``BaseHandler.resolve_request``: the route, as ``/`` + ``resolver_match.route``
  (``/orders/<int:pk>/``);
- ``got_request_exception``: the exception Django turns into a 500.
"""

from __future__ import annotations

import sys
from functools import partial

from takealook.agent.hooks import when_imported
from takealook.agent.instrument import wsgi
from takealook.agent.tracer import LeanSpan


def install(agent) -> None:
    when_imported("django.core.handlers.wsgi", _patch_handler)
    when_imported("django.core.handlers.base", _patch_resolver)
    when_imported("django.core.signals", _connect_signal)


def _patch_handler(module) -> None:
    handler = module.WSGIHandler
    if "_takealook" in handler.__dict__:
        return
    original = handler.__call__

    def __call__(self, environ, start_response):
        return wsgi.traced_call(partial(original, self), environ, start_response)

    handler.__call__ = __call__
    handler._takealook = True


def _patch_resolver(module) -> None:
    base = module.BaseHandler
    if "_takealook" in base.__dict__ or not hasattr(base, "resolve_request"):
        return  # Django < 3.1 has no resolve_request: spans keep the method as their name
    original = base.resolve_request

    def resolve_request(self, request):
        match = original(self, request)
        try:
            route = getattr(match, "route", None)
            if route is not None:
                wsgi.set_route(_carrier(request), "/" + route.lstrip("^").lstrip("/"))
        except Exception:
            pass
        return match

    base.resolve_request = resolve_request
    base._takealook = True


def _carrier(request) -> dict:
    """Where the request's span is kept: the WSGI environ, or the ASGI scope (``asgi.py``)."""
    environ = getattr(request, "environ", None)
    return environ if environ is not None else getattr(request, "scope", None) or {}


def _on_exception(sender, request=None, **kwargs) -> None:
    try:
        error = sys.exc_info()[1]
        span = _carrier(request).get(wsgi.SPAN_KEY) if request is not None else None
        if error is not None and isinstance(span, LeanSpan):
            span.fail(error, overwrite_type=False)
    except Exception:
        pass


def _connect_signal(module) -> None:
    module.got_request_exception.connect(_on_exception, weak=False, dispatch_uid="takealook.agent")
