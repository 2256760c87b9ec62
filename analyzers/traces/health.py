"""Instrumentation health: what in the traces themselves makes the other figures less true.

- ``orphan_span``: spans whose parent never arrived (dropped by a full export
  queue, a sampler that disagrees, a caller that propagates ``traceparent``
  but exports nothing: a browser, a proxy). Counted per service; ``entry``
  orphans are the top span of their trace (an uninstrumented caller),
  ``inner`` ones lost a parent mid-trace (lost spans). Load-test traffic makes
  none: the top span of a load request has the load generator's span as its
  parent, which exports nothing by design, and spans lost while a load test
  overloads the exporters are the load test's doing (the agent counts its
  dropped spans), not a caller's.
- ``missing_db_spans``: a service with server spans but not one database span:
  if it uses PostgreSQL, its driver is not instrumented.
- ``clock_skew``: a child span starting before its parent in another service by
  more than ``clock_skew_tolerance_ms``: the two hosts' clocks disagree, and
  per-service times across that call are shifted.
- ``broken_trace``: an outbound call with no server span under it, to a host
  that is one of the user's services (or a private address): the callee is not
  instrumented, did not accept the propagated context, or lost its spans.
  Calls that never reached a server (connection errors) are not counted.

These cost users nothing directly, so their ``impact_ms_per_min`` is 0; they
rank after the performance findings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from takealook.analyzers.traces.public_calls import public_reason
from takealook.analyzers.traces.settings import Settings
from takealook.analyzers.traces.stats import TopSlowest, merge_into, ms
from takealook.analyzers.traces.trace import TraceView, host_of, scheme_of


@dataclass(frozen=True)
class OrphanSpans:
    kind: str
    service: str
    endpoint: str
    spans: int
    entry: int  # top span of its trace: the caller is not instrumented or does not export
    inner: int  # lost a parent mid-trace
    traces: int
    impact_ms_per_min: float
    trace_ids: tuple[str, ...]


@dataclass(frozen=True)
class MissingDbSpans:
    kind: str
    service: str
    endpoint: str
    server_spans: int
    impact_ms_per_min: float
    trace_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClockSkew:
    kind: str
    service: str  # the child's service, whose clock runs behind its caller's
    endpoint: str
    parent_service: str
    spans: int
    max_skew_ms: float
    mean_skew_ms: float
    impact_ms_per_min: float
    trace_ids: tuple[str, ...]


@dataclass(frozen=True)
class BrokenTrace:
    kind: str
    service: str  # the caller
    endpoint: str  # the endpoint where it happens most
    host: str
    callee_service: Optional[str]  # known when other traces reach a server span at that host
    calls: int
    traces: int
    impact_ms_per_min: float
    trace_ids: tuple[str, ...]


class HealthAggregator:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.tolerance_ns = settings.clock_skew_tolerance_ms * 1e6
        self.orphans: dict[str, dict] = {}
        self.skews: dict[tuple[str, str], dict] = {}
        self.calls: dict[tuple[str, str], dict] = {}

    def _group(self, table: dict, key, **start) -> dict:
        group = table.get(key)
        if group is None:
            group = table[key] = {"top": TopSlowest(self.settings.evidence_traces), "endpoints": {}, **start}
        return group

    def add(self, view: TraceView, load: bool = False) -> None:
        """``load``: the trace is load-test traffic (no orphans counted, see the module docstring)."""
        label = view.entry.label if view.entry is not None else ""
        by_id = view.by_id
        for span in () if load else view.orphans:
            group = self._group(self.orphans, span.service, spans=0, entry=0, inner=0, traces=set())
            group["spans"] += 1
            group["entry" if span is view.root else "inner"] += 1
            group["traces"].add(view.trace_id)
            group["top"].add(span.duration_ns, view.trace_id)
            _count(group["endpoints"], label)
        tolerance = self.tolerance_ns
        # Spans of another service than their parent's are, in practice, server spans under client spans.
        for span in view.servers:
            parent = by_id.get(span.parent_span_id) if span.parent_span_id else None
            if parent is None or parent.service == span.service:
                continue
            if span.start_ns < parent.start_ns - tolerance:
                skew = parent.start_ns - span.start_ns
                group = self._group(self.skews, (parent.service, span.service), spans=0, sum=0, max=0)
                group["spans"] += 1
                group["sum"] += skew
                group["max"] = max(group["max"], skew)
                group["top"].add(skew, view.trace_id)
                _count(group["endpoints"], label)
        for span in view.calls:
            if view.server_child(span) is None:
                if span.status == "error" and span.http_status is None:
                    continue  # never reached a server: an error, not a broken trace
                host = host_of(span) or "?"
                group = self._group(self.calls, (span.service, host), calls=0, traces=set(), scheme=None)
                group["calls"] += 1
                group["scheme"] = scheme_of(span)
                group["traces"].add(view.trace_id)
                group["top"].add(span.duration_ns, view.trace_id)
                _count(group["endpoints"], label)

    def merge(self, other: "HealthAggregator") -> None:
        for table in ("orphans", "skews", "calls"):
            merge_into(getattr(self, table), getattr(other, table), maxima=frozenset({"max"}))

    def findings(self, service_sql: dict[str, tuple[int, int]], own_hosts: dict[str, str],
                 first_trace: dict[str, str]) -> list:
        """``service_sql``: service -> (server spans, DB spans); ``own_hosts``: host -> service answering there."""
        out: list = []
        for service, g in sorted(self.orphans.items()):
            out.append(OrphanSpans("orphan_span", service, _top(g["endpoints"]), g["spans"], g["entry"],
                                   g["inner"], len(g["traces"]), 0.0, g["top"].ids()))
        for service, (server_spans, db_spans) in sorted(service_sql.items()):
            if server_spans and not db_spans:
                trace = first_trace.get(service)
                out.append(MissingDbSpans("missing_db_spans", service, "", server_spans, 0.0,
                                          (trace,) if trace else ()))
        for (parent_service, service), g in sorted(self.skews.items()):
            out.append(ClockSkew("clock_skew", service, _top(g["endpoints"]), parent_service, g["spans"],
                                 ms(g["max"]), ms(g["sum"] / g["spans"]), 0.0, g["top"].ids()))
        for (service, host), g in sorted(self.calls.items()):
            callee = own_hosts.get(host)
            if callee is None and public_reason(host, g["scheme"]) is not None:
                continue  # a third-party API: no server span expected
            out.append(BrokenTrace("broken_trace", service, _top(g["endpoints"]), host, callee, g["calls"],
                                   len(g["traces"]), 0.0, g["top"].ids()))
        return out


def _count(table: dict, label: str) -> None:
    if label:
        table[label] = table.get(label, 0) + 1


def _top(table: dict) -> str:
    return max(table.items(), key=lambda kv: kv[1])[0] if table else ""
