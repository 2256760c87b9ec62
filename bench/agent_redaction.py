"""What recording URLs without personal values costs a successful request, next to what its spans cost.

A successful request pays for the URL rules (``agent/redact.py``) and nothing
else of the scrubbing: error messages are scrubbed only when something fails.
Per request this times, in one process and one run:

- redaction: the query string of the request, its route learnt, its path by
  the route, and the URL of one outgoing call (what ``wsgi`` and
  ``http_clients`` do per request);
- the rules before issue 11, as a reference: only secret-looking query names
  redacted, the path recorded as it came (a copy of the removed functions);
- baseline: the spans of the same request (one SERVER, three statements, one
  outgoing call: five LeanSpans made and ended, attributes set), the agent's own
  per-request work measured the same way.

Prints microseconds per request for each and the ratios; all are CPU-bound and
alike in kind, so the ratios hold on a busy machine better than latency does.

    python bench/agent_redaction.py [--requests 20000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from takealook.agent.redact import Redactor  # noqa: E402
from takealook.agent.tracer import LeanTracerProvider  # noqa: E402

ROUTE = "/orders/<int:order_id>/items"
PATH = "/orders/48213/items"
QUERY = "page=2&per_page=20&sort=-created_at&q=red+shoes"
CALL = "http://inventory:8000/api/stock/48213?expand=items&warehouse=7"


def redaction(redactor: Redactor, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        redactor.query(QUERY)
        redactor.learn(ROUTE)
        redactor.server_path(PATH, ROUTE)
        redactor.url(CALL)
    return (time.perf_counter() - started) / count


_OLD_SECRET = re.compile(
    r"(?i)^(.*(token|secret|passw|pwd|auth|key|signature|sig|session|cookie|credential|code|jwt|bearer).*)$")


def _old_query(query: str) -> str:
    parts = []
    for item in query.split("&"):
        key, sep, value = item.partition("=")
        if sep and value and _OLD_SECRET.match(key):
            item = f"{key}=REDACTED"
        parts.append(item)
    return "&".join(parts)


def before(count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        _old_query(QUERY)
        parts = urlsplit(CALL)
        urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, _old_query(parts.query), ""))
    return (time.perf_counter() - started) / count


def spans(provider: LeanTracerProvider, count: int) -> float:
    from opentelemetry import trace

    root_parent = trace.INVALID_SPAN
    scope = ("bench", "")
    started = time.perf_counter()
    for _ in range(count):
        server = provider.make_span("GET", root_parent, 2, {"http.request.method": "GET", "url.scheme": "http"}, scope)
        server.attributes["http.route"] = ROUTE
        for _ in range(3):
            statement = provider.make_span("SELECT orders", server, 3, {
                "db.system": "postgresql", "db.query.text": "SELECT * FROM items WHERE order_id = %s",
                "db.namespace": "orders", "db.operation.name": "SELECT"}, scope)
            statement.end()
        call = provider.make_span("GET", server, 3, {"http.request.method": "GET", "server.address": "inventory"},
                                  scope)
        call.attributes["http.response.status_code"] = 200
        call.end()
        server.attributes["http.response.status_code"] = 200
        server.end()
    return (time.perf_counter() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    redactor = Redactor()
    provider = LeanTracerProvider(lambda span: None)
    redaction(redactor, 1000), before(1000), spans(provider, 1000)  # warm caches and the interpreter
    cost, old, base = [], [], []
    for _ in range(args.repeats):  # interleaved, so drift of the machine hits all three
        cost.append(redaction(redactor, args.requests))
        old.append(before(args.requests))
        base.append(spans(provider, args.requests))
    cost_us, old_us, base_us = (statistics.median(x) * 1e6 for x in (cost, old, base))
    print(f"redaction per request:   {cost_us:.2f} µs   (query {QUERY!r}, path {PATH!r}, one outgoing URL)")
    print(f"rules before issue 11:   {old_us:.2f} µs   (secret names only, paths as they came)")
    print(f"spans per request:       {base_us:.2f} µs   (5 LeanSpans made, attributed and ended; baseline)")
    print(f"redaction / spans:       {cost_us / base_us:.2f}   (before: {old_us / base_us:.2f})")
    print(f"added on a 1.7 ms request (the overhead benchmark's endpoint): +{100 * (cost_us - old_us) / 1700:.2f}%")


if __name__ == "__main__":
    main()
