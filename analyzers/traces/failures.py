"""Failing endpoints and why they fail: exception types and messages from span events.

A request failed when its entry span did (status error, or a 5xx answer). In
each failed trace the exceptions recorded as span events (``exception.type``,
``exception.message``) say why, wherever they were raised (the database
driver, a called service); a trace with none is described by its innermost
failing span (its status message, or its HTTP status). Findings are grouped
per entry endpoint, service and exception, each counted once per request, with
``impact_ms_per_min``: the time users spent waiting for those failed requests
per minute of traffic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from takealook.analyzers.traces.stats import TopSlowest, merge_into, ratio, rekey
from takealook.analyzers.traces.trace import TraceView, is_error
from takealook.collector import Span

MESSAGE_CHARS = 300


@dataclass(frozen=True)
class ErrorFinding:
    kind: str
    service: str  # where the exception was raised
    endpoint: str
    endpoint_service: str
    exception_type: str
    message: str
    count: int  # failed requests with this exception
    share_of_requests: float
    impact_ms_per_min: float
    trace_ids: tuple[str, ...]


def causes(view: TraceView) -> set[tuple[str, str, str]]:
    """(service, exception type, message) of what made a failed request fail; empty if it did not."""
    root = view.root
    if root is None or not is_error(root):
        return set()
    found: set[tuple[str, str, str]] = set()
    failing: list[Span] = []
    for span in view.by_id.values():
        events = span.events_json
        if events and events != "[]":
            found.update((span.service, kind, message) for kind, message in _exceptions(events))
        if is_error(span):
            failing.append(span)
    if found:
        return found
    span = max(failing or [root], key=lambda s: (_depth(view, s), -s.start_ns))
    label = f"HTTP {span.http_status}" if span.http_status else "error status"
    return {(span.service, label, _clip(span.status_message))}


def _depth(view: TraceView, span: Span) -> int:
    depth = 0
    while span.parent_span_id and depth < 256:  # bounded: a parent chain this long is not a real trace
        span = view.by_id.get(span.parent_span_id)
        if span is None:
            break
        depth += 1
    return depth


def _exceptions(events_json: str) -> list[tuple[str, str]]:
    try:
        events = json.loads(events_json)
    except ValueError:
        return []
    out = []
    for event in events if isinstance(events, list) else ():
        if not isinstance(event, dict) or event.get("name") != "exception":
            continue
        attributes = event.get("attributes") or {}
        kind = str(attributes.get("exception.type") or "exception")
        out.append((kind, _clip(str(attributes.get("exception.message") or ""))))
    return out


def _clip(text: str) -> str:
    text = (text or "").strip().splitlines()[0] if text and text.strip() else ""
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


class ErrorAggregator:
    def __init__(self, evidence: int):
        self.evidence = evidence
        self.groups: dict[tuple, dict] = {}

    def add(self, view: TraceView) -> None:
        entry = view.entry
        if entry is None:
            return
        for service, kind, message in causes(view):
            key = (entry.key, service, kind, message)
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = {"count": 0, "ns": 0, "top": TopSlowest(self.evidence)}
            group["count"] += 1
            group["ns"] += view.root.duration_ns
            group["top"].add(view.root.duration_ns, view.trace_id)

    def merge(self, other: "ErrorAggregator") -> None:
        merge_into(self.groups, other.groups)

    def rekey(self, fold) -> None:
        self.groups = rekey(self.groups, fold)

    def findings(self, endpoints: dict) -> list[ErrorFinding]:
        out = []
        for (entry_key, service, kind, message), group in self.groups.items():
            stats = endpoints.get(entry_key)
            if stats is None:
                continue
            out.append(ErrorFinding(
                kind="error", service=service, endpoint=stats.endpoint, endpoint_service=stats.service,
                exception_type=kind, message=message, count=group["count"],
                share_of_requests=ratio(group["count"], stats.requests),
                impact_ms_per_min=round(group["ns"] / 1e6 / stats.requests * stats.requests_per_min, 3),
                trace_ids=group["top"].ids(),
            ))
        return out
