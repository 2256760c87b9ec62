"""What the store's read API returns: plain, frozen records of spans and metric points.

These are the contract between the collector (which writes the store) and the
analyzers and load tests (which read it). Semantic-convention differences
(``http.method`` vs ``http.request.method``, ``db.statement`` vs
``db.query.text``, ...) are resolved at ingest, so readers use the typed fields
below and never look for attribute names themselves.

Times are integers in nanoseconds since the Unix epoch, as in OTLP.
Attributes are kept as JSON text and parsed only when asked for, because most
analyses never need them and parsing a million of them would dominate a report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

# Span kinds and status codes as readable words (OTLP's enum numbers are mapped at ingest).
KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
STATUSES = ("unset", "ok", "error")


@dataclass(frozen=True, slots=True)
class SpanEvent:
    name: str
    time_ns: int
    attributes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SpanLink:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Span:
    trace_id: str  # 32 lowercase hex digits
    span_id: str  # 16 lowercase hex digits
    parent_span_id: Optional[str]  # None for a root span
    service: str  # resource service.name ("unknown_service" when absent)
    name: str
    kind: str  # one of KINDS
    start_ns: int
    duration_ns: int
    status: str  # one of STATUSES
    status_message: str = ""
    # HTTP (server and client spans); None when the span is not HTTP.
    http_method: Optional[str] = None
    http_route: Optional[str] = None  # the route template (server spans), e.g. /orders/<int:id>
    http_status: Optional[int] = None
    url_path: Optional[str] = None  # path of the request, without the query string
    url_full: Optional[str] = None  # client spans: the full URL called, query stripped
    server_address: Optional[str] = None  # client spans: the host called
    # Database spans.
    db_system: Optional[str] = None
    db_name: Optional[str] = None
    db_statement: Optional[str] = None  # parametrized text as the agent recorded it
    db_fingerprint: Optional[str] = None  # pglast fingerprint (hex), None when it does not parse
    # Raw attributes as JSON text; use .attributes() / .resource() / .events().
    attributes_json: str = "{}"
    resource_json: str = "{}"
    events_json: str = "[]"
    # Added for the store: links to other spans (JSON list) and the instrumentation scope name.
    links_json: str = "[]"
    scope: str = ""

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.duration_ns

    @property
    def duration_ms(self) -> float:
        return self.duration_ns / 1e6

    @property
    def is_root(self) -> bool:
        return self.parent_span_id is None

    def attributes(self) -> dict[str, Any]:
        return json.loads(self.attributes_json) if self.attributes_json else {}

    def resource(self) -> dict[str, Any]:
        return json.loads(self.resource_json) if self.resource_json else {}

    def events(self) -> list[SpanEvent]:
        raw = json.loads(self.events_json) if self.events_json else []
        return [SpanEvent(e["name"], int(e["time_ns"]), e.get("attributes", {})) for e in raw]

    def links(self) -> list[SpanLink]:
        raw = json.loads(self.links_json) if self.links_json else []
        return [SpanLink(link["trace_id"], link["span_id"], link.get("attributes", {})) for link in raw]


@dataclass(frozen=True)
class EntryGroup:
    """Root server spans of one service, method and route (and path, for routes named by their path), counted by
    the store's ``entry_groups`` over every request in a window: what a report over a large store rests on."""

    service: str
    method: str
    route: str  # http.route as recorded; '' when absent
    path: str  # the request's path for catch-all routes and spans without a route; '' otherwise
    name: str  # the span's name when it has neither route nor path
    requests: int
    errors: int  # failed spans and 5xx answers
    client_errors: int  # 4xx answers
    duration_ns: int  # summed
    quantiles_ns: tuple[float, float, float]  # p50, p95, p99, interpolated between ranks
    first_ns: int
    end_ns: int


class TraceSpans(list):
    """One trace's spans (``Span``, sorted by start), as ``iter_traces`` yields them: a plain list
    that also says whether the trace is load-test traffic.

    ``load`` is the run label the trace's requests were marked with
    (``takealook.loadmark``), None for real traffic.
    """

    __slots__ = ("load",)

    def __init__(self, spans=(), load: Optional[str] = None):
        super().__init__(spans)
        self.load = load


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One histogram data point, e.g. of ``http.server.request.duration``.

    ``bucket_counts`` has one more entry than ``bounds`` (the overflow bucket).
    ``temporality`` is "delta" or "cumulative"; ``unit`` is the metric's unit
    ("s" or "ms"), so readers convert ``sum`` and ``bounds`` themselves.
    """

    service: str
    name: str
    unit: str
    temporality: str
    start_ns: int
    time_ns: int
    http_method: Optional[str]
    http_route: Optional[str]
    http_status: Optional[int]
    count: int
    sum: float
    bounds: tuple[float, ...]
    bucket_counts: tuple[int, ...]
    attributes_json: str = "{}"
    # Added for the store: the resource (service.version, platform...) that sent the point.
    resource_json: str = "{}"

    def attributes(self) -> dict[str, Any]:
        return json.loads(self.attributes_json) if self.attributes_json else {}

    def resource(self) -> dict[str, Any]:
        return json.loads(self.resource_json) if self.resource_json else {}


def _unchecked_constructor(cls):
    """A constructor for ``cls`` (a frozen, slotted dataclass) that skips the frozen checks.

    Added for the store's reader, which builds a million spans per report: a
    frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__`` (about 2.8 µs for a Span), while plain slot
    assignment on a twin class with the same slots, followed by re-labelling the
    object as ``cls``, takes about 0.4 µs. The result is an ordinary ``cls``
    instance (equal, hashable, immutable). Positional arguments only, all of
    them. Falls back to ``cls`` itself if the twin cannot be re-labelled.
    """
    names = [f for f in cls.__slots__]
    twin = type(f"_{cls.__name__}Builder", (), {"__slots__": tuple(names)})
    source = (f"def build({', '.join(names)}):\n    obj = new(twin)\n"
              + "".join(f"    obj.{name} = {name}\n" for name in names)
              + "    obj.__class__ = cls\n    return obj\n")
    namespace = {"new": object.__new__, "twin": twin, "cls": cls}
    exec(source, namespace)  # noqa: S102 - generated from the dataclass's own field names
    build = namespace["build"]
    try:
        probe = build(*range(len(names)))
    except TypeError:  # an interpreter that refuses the re-labelling
        return cls
    return build if type(probe) is cls else cls


# new_span(*values) == Span(*values), faster; every field positional, in declaration order.
new_span = _unchecked_constructor(Span)
