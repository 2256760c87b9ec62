"""Sequential outbound calls that could run in parallel, and what that would save.

Within one parent span, outbound HTTP calls to different endpoints that run one
after the other (each starts after the previous one ended; no overlap) show no
data dependency the trace can see. Run together they would take as long as the
slowest of them: the saving is their sum minus their maximum. A call to an
endpoint already in the run starts a new run (repeats of one endpoint are the
N+1 analysis's business).

Reported per entry endpoint, operation and sequence of calls when the mean
saving per occurrence reaches ``sequential_min_saving_ms``; ``impact_ms_per_min``
is that saving per minute of the endpoint's traffic. The trace cannot show a
dependency carried in the application's memory (call B uses A's answer), so
each finding is a question to check in the code, not a proof.
"""

from __future__ import annotations

from dataclasses import dataclass

from takealook.analyzers.traces.n_plus_one import _callee_route, _operation
from takealook.analyzers.traces.settings import Settings
from takealook.analyzers.traces.stats import TopSlowest, merge_into, ms, ratio, rekey
from takealook.analyzers.traces.trace import TraceView, host_of
from takealook.collector import Span


@dataclass(frozen=True)
class SequentialRun:
    service: str
    operation: str
    calls: tuple[str, ...]
    total_ns: int
    saving_ns: int


@dataclass(frozen=True)
class SequentialCalls:
    kind: str
    service: str
    endpoint: str
    endpoint_service: str
    operation: str
    calls: tuple[str, ...]  # "GET orders /api/orders/<int:id>", in the order they ran
    saving_ms: float  # mean per occurrence, if they ran in parallel
    total_ms: float  # mean time of the calls one after the other
    occurrences: int
    affected_share: float
    impact_ms_per_min: float
    trace_ids: tuple[str, ...]


def find_sequential(view: TraceView) -> list[SequentialRun]:
    """Runs of two or more back-to-back calls to different endpoints, per parent span."""
    found: list[SequentialRun] = []
    if len(view.calls) < 2:
        return found
    by_parent: dict[str, list[Span]] = {}
    for call in view.calls:
        by_parent.setdefault(call.parent_span_id, []).append(call)
    for parent_id, calls in by_parent.items():
        if len(calls) < 2:
            continue
        calls.sort(key=lambda s: s.start_ns)
        run: list[tuple[Span, str]] = []
        latest = 0  # the latest end of any call so far: a call starting before it ran in parallel
        for call in calls:
            label = call_label(view, call)
            if run and (call.start_ns < latest or any(label == seen for _, seen in run)):
                _close(view, parent_id, run, found)
                run = []
            run.append((call, label))
            latest = max(latest, call.start_ns + call.duration_ns)
        _close(view, parent_id, run, found)
    return found


def _close(view: TraceView, parent_id: str, run: list, found: list) -> None:
    if len(run) < 2:
        return
    durations = [call.duration_ns for call, _ in run]
    total = sum(durations)
    parent = view.by_id.get(parent_id)
    found.append(SequentialRun(run[0][0].service, _operation(view, parent), tuple(label for _, label in run),
                               total, total - max(durations)))


def call_label(view: TraceView, call: Span) -> str:
    """"GET orders /api/orders/<int:id>": method, callee service (else host), route (else path template)."""
    server = view.server_child(call)
    target = server.service if server is not None else (host_of(call) or "?")
    method = call.http_method or ""
    return f"{method} {target} {_callee_route(view, call)}".strip()


class SequentialAggregator:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.groups: dict[tuple, dict] = {}

    def add(self, view: TraceView, runs: list[SequentialRun]) -> None:
        entry = view.entry
        if entry is None:
            return
        seen = set()
        for run in runs:
            key = (entry.key, run.service, run.operation, run.calls)
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = {"saving": 0, "total": 0, "traces": 0,
                                            "top": TopSlowest(self.settings.evidence_traces)}
            group["saving"] += run.saving_ns
            group["total"] += run.total_ns
            if key not in seen:
                seen.add(key)
                group["traces"] += 1
            group["top"].add(run.saving_ns, view.trace_id)

    def merge(self, other: "SequentialAggregator") -> None:
        merge_into(self.groups, other.groups)

    def rekey(self, fold) -> None:
        self.groups = rekey(self.groups, fold)

    def findings(self, endpoints: dict) -> list[SequentialCalls]:
        out = []
        for (entry_key, service, operation, calls), group in self.groups.items():
            stats = endpoints.get(entry_key)
            occurrences = group["traces"]
            if stats is None or group["saving"] / occurrences < self.settings.sequential_min_saving_ms * 1e6:
                continue
            impact = group["saving"] / 1e6 / stats.requests * stats.requests_per_min
            out.append(SequentialCalls(
                kind="sequential_calls", service=service, endpoint=stats.endpoint, endpoint_service=stats.service,
                operation=operation, calls=calls, saving_ms=ms(group["saving"] / occurrences),
                total_ms=ms(group["total"] / occurrences), occurrences=occurrences,
                affected_share=ratio(occurrences, stats.requests), impact_ms_per_min=round(impact, 3),
                trace_ids=group["top"].ids(),
            ))
        return out
