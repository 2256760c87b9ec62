"""Trace context on load-test requests: a fresh W3C ``traceparent`` per request and per redirect hop,
and the ``tracestate`` mark that keeps load traffic apart (``takealook.loadmark``).

Used inside Locust by the recorder (every suite ``load run`` runs) and by
``users.py`` (generated suites, also under plain ``locust``). Imports
``requests`` only; the session class to patch is passed in.

- ``mark(headers, label)`` gives a request its own trace unless the suite set a
  ``traceparent``, and puts our ``tracestate`` entry first (other entries the
  suite set are kept). It returns the trace id sent.
- ``install(session_class)`` (``install_fast(request_class)`` for Locust's
  ``FastHttpSession``) makes every redirect hop a request of its own:
  requests follows a redirect by copying the request with its headers, so the
  hop would reuse the first ``traceparent``, and the page it lands on (an N+1 in
  ``GET /index``) would be reported under the request that redirected
  (``POST /login``). ``Session.rebuild_auth`` runs once per hop, on the hop's
  copy only (requests' ``resolve_redirects``), so a new ``traceparent`` is
  written there; the mark stays.
- ``run_label(session)``: the run label: Locust's ``--takealook-label`` (which
  ``load run`` passes, and a master passes on to its workers), else
  ``$TAKEALOOK_LOAD_RUN``, else ``locust``.
"""

from __future__ import annotations

import os
from typing import Optional

from takealook import loadmark

LABEL_ENV = "TAKEALOOK_LOAD_RUN"
# A suite that cannot go on (no user can log in, users.py) sets this attribute on the Locust
# environment; the recorder writes it into the run. Workers send it to the master in this message.
STOP_REASON = "takealook_stop_reason"
STOP_MESSAGE = "takealook_stop"


def new_traceparent() -> tuple[str, str]:
    """(trace id, header value) of a fresh sampled trace."""
    # os.urandom, not random: Locust forks its workers (--processes), which would
    # otherwise share one random state and send the same trace ids.
    trace_id = os.urandom(16).hex()
    return trace_id, f"00-{trace_id}-{os.urandom(8).hex()}-01"


def trace_id_of(traceparent: str) -> Optional[str]:
    parts = traceparent.strip().split("-")
    if len(parts) >= 4 and len(parts[1]) == 32:
        return parts[1].lower()
    return None


def _find(headers: dict, name: str) -> Optional[str]:
    return next((k for k in headers if k.lower() == name), None)


def mark(headers: dict, label: str) -> str:
    """Add ``traceparent`` (unless set) and our ``tracestate`` entry to ``headers`` in place; the trace id."""
    key = _find(headers, "traceparent")
    trace_id = trace_id_of(str(headers[key])) if key else None
    if trace_id is None:
        if key:
            del headers[key]
        trace_id, headers["traceparent"] = new_traceparent()
    state_key = _find(headers, "tracestate")
    state = str(headers.pop(state_key)) if state_key else ""
    headers["tracestate"] = loadmark.with_entry(state, label)
    return trace_id


def run_label(session) -> str:
    user = getattr(session, "user", None)
    options = getattr(getattr(user, "environment", None), "parsed_options", None)
    return getattr(options, "takealook_label", "") or os.environ.get(LABEL_ENV) or loadmark.DEFAULT_LABEL


def install(session_class) -> None:
    """Give each redirect hop of ``session_class`` (a requests.Session subclass) a traceparent of its own."""
    if getattr(session_class.rebuild_auth, "takealook_hops", False):
        return
    original = session_class.rebuild_auth

    def rebuild_auth(self, prepared_request, response):
        original(self, prepared_request, response)
        prepared_request.headers["traceparent"] = new_traceparent()[1]
        if "tracestate" not in prepared_request.headers:
            prepared_request.headers["tracestate"] = loadmark.entry(run_label(self))

    rebuild_auth.takealook_hops = True
    session_class.rebuild_auth = rebuild_auth


def install_fast(request_class) -> None:
    """The same for Locust's ``FastHttpSession``: geventhttpclient follows a redirect by changing the request
    in place (``request_class.redirect``), its headers with it; the mark stays. A geventhttpclient without
    that method is left alone (its hops then share the first request's trace)."""
    original = getattr(request_class, "redirect", None)
    if original is None or getattr(original, "takealook_hops", False):
        return

    def redirect(self, code, location):
        original(self, code, location)
        self.headers["traceparent"] = new_traceparent()[1]

    redirect.takealook_hops = True
    request_class.redirect = redirect
