"""``traces compare``: two sides of production traffic, the verdicts of ``load compare``.

    from takealook.analyzers.traces.compare import Side, compare_store
    result = compare_store(".takealook/spans.db", Side((("cloud.provider", "heroku"),)),
                           Side((("cloud.provider", "aws"),)), verdicts.Settings())

A side (``Side``) selects traces by resource attributes of the trace's root
span (every ``key=value`` must match; values compare as text, booleans as
``true``/``false``) and by the time the trace started. Each trace of a side
counts once for its entry endpoint, named as ``traces report`` names it
(``trace.Entry``; a catch-all route's pages past ``paths_per_route`` share the
route's row). Per endpoint the requests' durations and failures (5xx, failed
spans), in time order, make one ``stats.Series`` per instance of the entry
service (``service.instance.id``: a process, a dyno) on each side, and
``takealook.verdicts`` gives the changes, intervals and verdict, exactly as
``load compare`` does for repeated load runs (the block bootstrap resamples
stretches of consecutive traces; what instances differ by beyond their sampling
noise widens the interval). Two processes of the same code differ: hash seeds,
memory layout, a neighbour on the host (Mytkowicz et al., "Producing wrong data
without doing anything obviously wrong!", ASPLOS 2009). Measured here, two
gunicorn processes of one Flask app, requests interleaved, differed by up to
18% at p50 of a 2 ms endpoint; a side with one instance cannot show that, so
the noise floor is then the only guard and the comparison says so. ``compare_where`` says where each change is: the critical
path before and after, the statements and calls whose time per request moved.

Load-test traffic (``takealook.loadmark``) is left out unless ``load`` says
otherwise, as in every analysis of the store.

Errors are ``InputError`` with one line saying what to do: a side that matches
no trace (naming the values the store holds for the attribute that matched
nothing), no endpoint common to both sides.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import sqlite3
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from takealook.analyzers.traces.compare_where import SideTally, Where, where
from takealook.analyzers.traces.endpoints import other_row
from takealook.analyzers.traces.sampling import SAMPLE_MIN_TRACES
from takealook.analyzers.traces.trace import Entry, TraceView, entry_of, is_browser, is_error
from takealook.collector import Load, open_store
from takealook.errors import InputError
from takealook.routes import PATHS_PER_ROUTE
from takealook.verdicts import EndpointComparison, Settings, chance_warning, compare_endpoint, stats

OVERALL = "(all requests)"
PATHS_TRACKED = 1000  # pages of one catch-all route told apart while reading (as analysis.py)
_KEYS_SHOWN = 12
WHERE_TRACES = 200  # on a large window: whole traces read per endpoint and side for "where" (a random sample)


@dataclass(frozen=True)
class Side:
    """What selects one side's traces: resource attributes of the root span, and a start-time window."""

    attributes: tuple[tuple[str, str], ...] = ()
    since_ns: Optional[int] = None  # inclusive
    until_ns: Optional[int] = None  # exclusive
    text: str = ""  # as the user wrote it ("cloud.provider=heroku since 2h"), for messages and reports

    def matches(self, start_ns: int, resource: dict) -> bool:
        if self.since_ns is not None and start_ns < self.since_ns:
            return False
        if self.until_ns is not None and start_ns >= self.until_ns:
            return False
        return all(key in resource and value_text(resource[key]) == value for key, value in self.attributes)


def value_text(value) -> str:
    """A resource attribute's value as filters compare it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


@dataclass(frozen=True)
class TracesEndpoint:
    comparison: EndpointComparison  # name, verdict, every metric's change
    service: str
    method: str
    route: str
    where: Where
    where_traces: tuple[int, int] = (0, 0)  # the traces (before, after) "where" rests on


@dataclass(frozen=True)
class TracesComparison:
    before: Side
    after: Side
    settings: Settings
    endpoints: tuple[TracesEndpoint, ...]
    overall: EndpointComparison
    only_before: tuple[str, ...]
    only_after: tuple[str, ...]
    traces_before: int
    traces_after: int
    window_before: tuple[Optional[int], Optional[int]]  # first start, last end of the side's traces (ns)
    window_after: tuple[Optional[int], Optional[int]]
    notes: tuple[str, ...] = ()  # what was left out (load tests)
    warnings: tuple[str, ...] = field(default=())
    instances_before: int = 1  # instances (service.instance.id) of the entry services: one series each
    instances_after: int = 1
    # A large window: the verdicts over every request's root span, "where" over a random sample of whole traces
    # per endpoint and side (``TracesEndpoint.where_traces``); False: every trace was read whole.
    sampled: bool = False


class _Collected:
    """One side's traces, per entry endpoint: (duration ms, failed, instance) in time order, and where the time
    went."""

    def __init__(self):
        self.samples: dict[tuple, list[tuple[float, bool, str]]] = {}
        self.tallies: dict[tuple, SideTally] = {}
        self.traces = 0
        self.first_ns: Optional[int] = None
        self.last_ns: Optional[int] = None

    def add(self, key: tuple, root, instance: str) -> None:
        """A request of the endpoint ``key``: its root span's duration and failure, for the verdicts."""
        self.traces += 1
        self.first_ns = root.start_ns if self.first_ns is None else min(self.first_ns, root.start_ns)
        self.last_ns = root.end_ns if self.last_ns is None else max(self.last_ns, root.end_ns)
        self.samples.setdefault(key, []).append((root.duration_ns / 1e6, is_error(root), instance))

    def tally(self, key: tuple, view: TraceView) -> None:
        """A whole trace of the endpoint ``key``, for where the time went."""
        tally = self.tallies.get(key)
        if tally is None:
            tally = self.tallies[key] = SideTally()
        tally.add(view)

    def fold(self, fold: dict[tuple, tuple]) -> None:
        for old, new in fold.items():
            if old in self.samples:  # time order is lost across pages of a route; the bootstrap blocks stay whole
                self.samples.setdefault(new, []).extend(self.samples.pop(old))
                self.tallies.setdefault(new, SideTally()).merge(self.tallies.pop(old, SideTally()))

    @property
    def seconds(self) -> float:
        if self.first_ns is None or self.last_ns is None:
            return 0.0
        return max((self.last_ns - self.first_ns) / 1e9, 1.0)


class _Reader:
    """One pass over the store for both sides."""

    def __init__(self, before: Side, after: Side, paths_per_route: int):
        self.sides = {"before": (before, _Collected()), "after": (after, _Collected())}
        self.paths_per_route = paths_per_route
        self.entries: dict[tuple, Entry] = {}
        self.pages: dict[tuple, set] = {}
        self.resources: dict[str, dict] = {}  # resource JSON -> parsed
        self.keys = {key for side in (before, after) for key, _ in side.attributes}
        self.values: dict[str, Counter] = {key: Counter() for key in self.keys}  # what roots carry, for errors
        self.seen_keys: Counter = Counter()
        self.read = 0

    def add(self, spans) -> None:
        """A whole trace: its request and where its time went."""
        view = TraceView(spans)
        if view.root is None or view.entry is None:
            return
        for collected, key in self.add_root(view.root, view.entry):
            collected.tally(key, view)

    def add_root(self, root, entry: Entry) -> list[tuple["_Collected", tuple]]:
        """A request by its root span: counted on each side it matches; (side, endpoint key) for each."""
        self.read += 1
        resource = self.resources.get(root.resource_json)
        if resource is None:
            resource = self.resources[root.resource_json] = root.resource()
            self.seen_keys.update(resource)
        for key in self.keys:
            if key in resource:
                self.values[key][value_text(resource[key])] += 1
        admitted, out = None, []
        for side, collected in self.sides.values():
            if side.matches(root.start_ns, resource):
                admitted = admitted or self._admit(entry)
                collected.add(admitted.key, root, value_text(resource.get("service.instance.id", "")))
                out.append((collected, admitted.key))
        return out

    def _admit(self, entry: Entry) -> Entry:
        if entry.by_path:
            pages = self.pages.setdefault((entry.service, entry.method, entry.template), set())
            if entry.route not in pages and len(pages) >= PATHS_TRACKED:
                entry = other_row(entry)
            else:
                pages.add(entry.route)
        self.entries.setdefault(entry.key, entry)
        return entry

    def fold_paths(self) -> None:
        """Pages of a catch-all route past its busiest ``paths_per_route`` (both sides) become its one row."""
        groups: dict[tuple, list[tuple]] = {}
        for key, entry in self.entries.items():
            if entry.by_path:
                groups.setdefault((entry.service, entry.method, entry.template), []).append(key)
        fold: dict[tuple, tuple] = {}
        for keys in groups.values():
            if len(keys) <= self.paths_per_route:
                continue
            busy = lambda k: -sum(len(c.samples.get(k, ())) for _, c in self.sides.values())  # noqa: E731
            for key in sorted(keys, key=lambda k: (busy(k), k[2]))[self.paths_per_route:]:
                other = other_row(self.entries[key])
                fold[key] = other.key
                self.entries.setdefault(other.key, other)
        for _, collected in self.sides.values():
            collected.fold(fold)


def compare_store(path, before: Side, after: Side, settings: Optional[Settings] = None, load: Load = False,
                  paths_per_route: int = PATHS_PER_ROUTE, sample: Optional[bool] = None,
                  where_traces: int = WHERE_TRACES) -> TracesComparison:
    """``sample``: read every request's root span and a random sample of whole traces (``where_traces`` per
    endpoint and side) for "where"; None (the default): when the window holds ``SAMPLE_MIN_TRACES`` traces or
    more and load-test traffic is left out (its traces have no root span of their own: the load test's client
    exports none)."""
    settings = settings or Settings()
    reader = _Reader(before, after, paths_per_route)
    since, until = _union(before, after)
    notes: tuple[str, ...] = ()
    try:
        with open_store(path) as store:
            runs = store.load_runs(since, until)
            summary = store.summary()
            total = store.count_traces(since, until, load=load) if sample is not False else 0
            if sample is None:
                sample = load is False and total >= SAMPLE_MIN_TRACES
            if sample:
                notes = _read_sampled(store, reader, since, until, load, where_traces, total)
            else:
                for spans in store.iter_traces(since, until, load=load):
                    reader.add(spans)
    except sqlite3.DatabaseError as error:
        raise InputError(f"cannot read the span store {path}: {error}; is it a takealook store "
                         "written by this version?") from error
    for flag, (side, collected) in (("--before", reader.sides["before"]), ("--after", reader.sides["after"])):
        if not collected.traces:
            raise InputError(_nothing_matched(flag, side, reader, summary, load, runs))
    reader.fold_paths()
    return _compare(reader, settings, _notes(load, runs) + notes, sampled=bool(sample))


def _read_sampled(store, reader: _Reader, since: Optional[int], until: Optional[int], load: Load,
                  per_side: int, total: int) -> tuple[str, ...]:
    """Every request by its root span (bounded per request, not per span), then ``per_side`` whole traces per
    endpoint and side, picked by a hash of the trace id (the same each time), for where the time went."""
    picked: dict[tuple, list] = {}  # (side, endpoint key) -> heap of (-hash, start, trace id, number, root)
    unnamed = browser = 0
    for number, root in enumerate(store.root_spans(since, until, load=load)):
        entry = entry_of(root)
        if entry is None:  # a job's root (no entry either way), or a browser's (named by its children)
            unnamed += 1
            browser += is_browser(root)
            continue
        rank = -zlib.crc32(root.trace_id.encode())
        for collected, key in reader.add_root(root, entry):
            heap = picked.setdefault((id(collected), key), [])
            item = (rank, root.start_ns, root.trace_id, number, root)
            if len(heap) < per_side:
                heapq.heappush(heap, item)
            elif item[:4] > heap[0][:4]:
                heapq.heapreplace(heap, item)
    wanted: dict[str, list] = {}
    by_id = {id(collected): collected for _, collected in reader.sides.values()}
    for (side_id, key), heap in picked.items():
        for _, _, trace_id, _, root in heap:
            wanted.setdefault(trace_id, [root]).append((by_id[side_id], key))
    roots = sorted((places[0] for places in wanted.values()), key=lambda r: (r.start_ns, r.trace_id))
    for spans in store.whole_traces(roots):
        view = TraceView(spans)
        if view.root is None:
            continue
        for collected, key in wanted.get(spans[0].trace_id, [None])[1:]:
            collected.tally(key, view)
    notes = [f"verdicts rest on every request of the window (its root span); where the time went (critical path, "
             f"statements, calls) on a random sample of up to {per_side} whole traces per endpoint and side"]
    missing = total - reader.read - unnamed
    if browser:
        notes.append(f"{browser:,} traces entered from a browser are not compared in a large window")
    if missing > 0:
        notes.append(f"{missing:,} of the {total:,} traces in the window have no root span of their own (their "
                     "caller propagated the trace without exporting spans) and are not compared in a large window")
    return tuple(notes)


def _union(before: Side, after: Side) -> tuple[Optional[int], Optional[int]]:
    since = None if before.since_ns is None or after.since_ns is None else min(before.since_ns, after.since_ns)
    until = None if before.until_ns is None or after.until_ns is None else max(before.until_ns, after.until_ns)
    return since, until


def _name(key: tuple, entry: Entry, labels: Counter) -> str:
    """The endpoint as ``traces report`` names it; prefixed by its service when two services share the name."""
    return entry.label if labels[entry.label] == 1 else f"{key[0]} {entry.label}"


def _compare(reader: _Reader, settings: Settings, notes: tuple[str, ...], sampled: bool = False) -> TracesComparison:
    (side_b, got_b), (side_a, got_a) = reader.sides["before"], reader.sides["after"]
    keys = set(got_b.samples) | set(got_a.samples)
    labels = Counter(reader.entries[k].label for k in keys)
    names = {k: _name(k, reader.entries[k], labels) for k in keys}
    common = sorted((k for k in keys if k in got_b.samples and k in got_a.samples), key=lambda k: names[k])
    if not common:
        raise InputError(f"the two sides have no endpoint in common (before: {_few(names[k] for k in got_b.samples)}; "
                         f"after: {_few(names[k] for k in got_a.samples)})")

    def one(name: str, b: list, a: list) -> EndpointComparison:
        return compare_endpoint(name, _series(b, got_b.seconds), _series(a, got_a.seconds), settings.metric,
                                settings.noise_floor_pct, settings.error_floor_pts, settings.resamples, settings.seed,
                                settings.confidence)

    endpoints = []
    for key in common:
        entry = reader.entries[key]
        comparison = one(names[key], got_b.samples[key], got_a.samples[key])
        tally_b, tally_a = got_b.tallies.get(key, SideTally()), got_a.tallies.get(key, SideTally())
        endpoints.append(TracesEndpoint(comparison, entry.service, entry.method, entry.route, where(tally_b, tally_a),
                                        (tally_b.requests, tally_a.requests)))
    overall = one(OVERALL, _all(got_b), _all(got_a))
    return TracesComparison(
        before=side_b, after=side_a, settings=settings, endpoints=tuple(endpoints), overall=overall,
        only_before=tuple(sorted(names[k] for k in got_b.samples if k not in got_a.samples)),
        only_after=tuple(sorted(names[k] for k in got_a.samples if k not in got_b.samples)),
        traces_before=got_b.traces, traces_after=got_a.traces, window_before=(got_b.first_ns, got_b.last_ns),
        window_after=(got_a.first_ns, got_a.last_ns), notes=notes,
        warnings=tuple(_warnings(side_b, side_a, _instances(got_b), _instances(got_a)))
        + tuple(filter(None, [chance_warning(len(endpoints), settings.confidence)])),
        instances_before=_instances(got_b), instances_after=_instances(got_a), sampled=sampled)


def _series(samples: list[tuple[float, bool, str]], seconds: float) -> list[stats.Series]:
    """One series per instance, each in time order; the side's time shared by their requests (they ran at once)."""
    by_instance: dict[str, list[tuple[float, bool, str]]] = {}
    for sample in samples:
        by_instance.setdefault(sample[2], []).append(sample)
    return [stats.Series(tuple(s[0] for s in group), tuple(s[1] for s in group), seconds * len(group) / len(samples))
            for group in by_instance.values()]


def _instances(collected: _Collected) -> int:
    return len({sample[2] for samples in collected.samples.values() for sample in samples})


def _all(collected: _Collected) -> list[tuple[float, bool, str]]:
    """Every request of the side in one series; by endpoint, each endpoint's in time order (stretches stay whole)."""
    return [sample for key in sorted(collected.samples) for sample in collected.samples[key]]


def _warnings(before: Side, after: Side, instances_before: int, instances_after: int) -> list[str]:
    out = []
    if instances_before < 2 and instances_after < 2:
        out.append("one instance (service.instance.id) on each side: what two processes of the same code differ by "
                   "(often 5-20% on a fast endpoint) is not measured, only the noise floor guards against it; sides "
                   "served by several instances each, at the same time, compare best")
    if before.attributes == after.attributes and (before.since_ns, before.until_ns) == (after.since_ns, after.until_ns):
        out.append("both sides select the same traces")
    return out


def _notes(load: Load, runs: dict[str, int]) -> tuple[str, ...]:
    if load is False and runs:
        listed = ", ".join(f"{label} ({count})" for label, count in runs.items())
        return (f"left out {sum(runs.values())} traces of load tests (runs: {listed}); --include-load takes them "
                "in, --load-run LABEL compares one run's traffic alone",)
    if isinstance(load, str):
        return (f"only the traces of load run {load!r}",)
    return ()


def _nothing_matched(flag: str, side: Side, reader: _Reader, summary, load: Load, runs: dict) -> str:
    text = f"{flag} {side.text!r}" if side.text else flag
    for key, value in side.attributes:
        values = reader.values.get(key, Counter())
        if value in values:
            continue
        if values:
            seen = ", ".join(f"{v} ({n})" for v, n in sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[:10])
            return f"{text} matches no trace: no root span has {key}={value}; values of {key} seen: {seen}"
        keys = ", ".join(sorted(reader.seen_keys)[:_KEYS_SHOWN]) or "none"
        return (f"{text} matches no trace: no root span carries resource attribute {key!r}; attributes seen: "
                f"{keys} (set it with OTEL_RESOURCE_ATTRIBUTES)")
    if not reader.read and load is False and runs:
        return (f"{text} matches no trace: the only traces in that time are load-test traffic "
                f"({', '.join(runs)}): pass --include-load, or --load-run LABEL")
    if side.attributes and (side.since_ns is None and side.until_ns is None):
        return f"{text} matches no trace: no root span has all of {', '.join(f'{k}={v}' for k, v in side.attributes)}"
    return (f"{text} matches no trace between {_when(side.since_ns, 'the start')} and {_when(side.until_ns, 'now')}"
            + (" with those attributes" if side.attributes else "")
            + f"; the store holds traces from {_when(summary.start_ns, '?')} to {_when(summary.end_ns, '?')}")


def _when(ns: Optional[int], default: str) -> str:
    if ns is None:
        return default
    return dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _few(names) -> str:
    names = sorted(set(names))
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "") if names else "none"

