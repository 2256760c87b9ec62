"""Flask: a server span per request (through ``wsgi.traced_call``), named by the URL rule.

Patched at class level when ``flask.app`` is imported: ``Flask.__call__`` (so
``app.wsgi_app = Middleware(app.wsgi_app)`` stays inside the span),
``full_dispatch_request`` (routing is done by then: ``request.url_rule``) and
``handle_exception`` (an unhandled exception becomes a 500 inside Flask; we
record its type and message on the span before Flask answers).
"""

from __future__ import annotations

from functools import partial

from takealook.agent.hooks import when_imported
from takealook.agent.instrument import wsgi
from takealook.agent.tracer import LeanSpan


def install(agent) -> None:
    when_imported("flask.app", _patch)


def _patch(module) -> None:
    flask_class = module.Flask
    if "_takealook" in flask_class.__dict__:
        return
    from flask.globals import request

    original_call = flask_class.__call__
    original_dispatch = flask_class.full_dispatch_request
    original_handle_exception = flask_class.handle_exception

    def __call__(self, environ, start_response):
        return wsgi.traced_call(partial(original_call, self), environ, start_response)

    def full_dispatch_request(self):
        try:
            current = request._get_current_object()  # one context lookup, not one per attribute
            rule = current.url_rule
            if rule is not None:
                wsgi.set_route(current.environ, rule.rule)
        except Exception:
            pass
        return original_dispatch(self)

    def handle_exception(self, e):
        try:
            span = request.environ.get(wsgi.SPAN_KEY)
            if isinstance(span, LeanSpan):
                span.fail(e, overwrite_type=False)
        except Exception:
            pass
        return original_handle_exception(self, e)

    flask_class.__call__ = __call__
    flask_class.full_dispatch_request = full_dispatch_request
    flask_class.handle_exception = handle_exception
    flask_class._takealook = True
