"""``load generate``: write a plain, readable locustfile from the traces in the store.

``from_store(path, since_ns, ...)`` reads whole traces through the collector's
read API (``takealook.collector.open_store``), real traffic only unless asked
(``load``: load tests' own traffic is left out, as in every analysis);
``collect(traces, ...)`` does the work over any iterable of traces (lists of
``Span``); ``select`` leaves out what a suite must not replay by default, and
``suitefile.render`` writes the suite. Nothing here imports locust; the suite
imports it.

What the suite holds:

- One task per entry endpoint: a server span with no server span above it in
  its trace (the request a user or the front end made; calls between the
  user's services are left out, they happen by themselves). Endpoints are
  named by ``takealook.routes``, as ``traces report`` names them (so the
  report can join load results to endpoints): the span's ``http_route`` in one
  style (Flask ``/orders/<int:id>``, Django ``orders/<int:pk>/`` and
  ``^orders/(?P<pk>\\d+)/$`` become ``/orders/{id}``, ``/orders/{pk}/``); under a
  catch-all route or without a route, the path templated (numeric, UUID, long
  hexadecimal segments become ``{id}``, ``{uuid}``, ``{hex}``), the busiest
  ``PATHS_PER_ROUTE`` pages of a route a task each and the rest one task named
  by the route's template.
- Task weights proportional to the observed requests (scaled to at most 1000).
- Up to ``values`` real request paths per endpoint (query strings kept,
  parameters whose names look secret or whose values the agent redacted
  dropped; a path the agent recorded with a ``REDACTED`` segment, a personal
  value it left out, is no value to replay, and an endpoint left with none is
  not in the suite), each with a weight: how many real requests used it,
  requests at or above the endpoint's p90 duration counting ``slow_weight``
  times (``--slow-weight 3``: the slow ones are what you want to reproduce).
  The values kept are drawn by weight without replacement, so a path one
  request used does not get a task's traffic to itself; the suite draws by
  weight.
- Headers: only ``accept``, ``accept-language`` and ``content-type`` when the
  spans recorded them; never cookies, authorization or API keys (the user
  gives those as ``--header`` or a login, with ``${VAR}`` from the
  environment). Bodies are not in traces.
- Left out (``Suite.left_out`` says which and why): writes (POST, PUT, PATCH,
  DELETE) unless ``include_writes`` (replaying writes on a real system is the
  user's decision), the login endpoints when the suite logs in by itself,
  logout endpoints, and paths the agent redacted that cannot be replayed.
- One ``TakealookUser`` class per entry service (``users.py``: logs in, marks
  its traffic, counts "not logged in" as a failure), weighted by its traffic;
  the ``--host`` given is written into the classes (``load run --host``
  overrides).

The file runs as is with ``locust -f SUITE.py --host URL``.

A large window (``LARGE_WINDOW`` traces or more, load tests left out) is read by
each trace's root span only, not its whole trace: the root server span is the
entry of the usual trace, so the weights, latencies and values are those of
reading every trace, at a cost per request instead of per span; traces whose
entry is not their root (a caller propagated the trace and exported nothing, a
browser's root above the server span) are left out and counted in the suite's
docstring.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union
from urllib.parse import parse_qsl, urlencode

from takealook.collector import Span
from takealook.errors import InputError
from takealook.loadtests.suitefile import SuiteOptions, render
from takealook.routes import PATHS_PER_ROUTE, endpoint_route

MAX_CANDIDATES = 5000  # requests remembered per endpoint to sample values from
# A window this large is read by its root spans only (as analyzers/traces/sampling.SAMPLE_MIN_TRACES, which the
# load tests may not import; tests/loadtests/test_generate_large.py checks they agree).
LARGE_WINDOW = 20_000
PAGES_TRACKED = 1000  # pages of one catch-all route with a task of their own while reading (then folded)
SAFE_HEADERS = ("accept", "accept-language", "content-type")
_SECRET = re.compile(r"(pass|secret|token|key|auth|session|sig|cookie|credential)", re.I)
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
_LOGOUT = re.compile(r"(^|/)(log[-_]?out|sign[-_]?out|sign[-_]?off)(/|$)", re.I)
# What the agent records for a value it keeps out (a username in a path, a search term); such a
# path cannot be replayed, such a query parameter is dropped.
REDACTED = "REDACTED"


@dataclass(frozen=True)
class Endpoint:
    service: str
    method: str
    template: str  # /orders/{id}
    route: str  # as the traces had it (or the template)
    requests: int
    p50_ms: float
    p95_ms: float
    values: tuple[tuple[str, float], ...]  # (real path with query, weight), sampled; heaviest first
    headers: tuple[tuple[str, str], ...]

    @property
    def label(self) -> str:
        return f"{self.method} {self.template}"


@dataclass(frozen=True)
class Suite:
    text: str
    endpoints: tuple[Endpoint, ...]
    traces: int
    left_out: tuple[tuple[str, str], ...] = ()  # (endpoint, why)


def _entries(trace: Sequence[Span]) -> Iterable[Span]:
    """Server spans of a trace with no server span above them."""
    by_id = {s.span_id: s for s in trace}
    for span in trace:
        if span.kind != "server" or not span.http_method:
            continue
        parent, hops, inside = by_id.get(span.parent_span_id or ""), 0, False
        while parent is not None and hops < 64:
            if parent.kind == "server":
                inside = True
                break
            parent, hops = by_id.get(parent.parent_span_id or ""), hops + 1
        if not inside:
            yield span


def _query(attributes: dict) -> str:
    query = attributes.get("url.query")
    if query is None:
        target = attributes.get("http.target") or ""
        query = target.split("?", 1)[1] if "?" in target else ""
    pairs = [(k, v) for k, v in parse_qsl(str(query), keep_blank_values=True)
             if not _SECRET.search(k) and REDACTED not in v]
    return urlencode(pairs)


def _headers(attributes: dict) -> tuple[tuple[str, str], ...]:
    out = []
    for name in SAFE_HEADERS:
        value = attributes.get(f"http.request.header.{name}")
        if isinstance(value, list):
            value = value[0] if value else None
        if value:
            out.append((name, str(value)))
    return tuple(out)


class _Traffic:
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.count = 0
        self.durations: list[float] = []
        self.candidates: list[tuple[str, float]] = []  # (path?query, duration_ms), a reservoir
        self.headers: dict[tuple, int] = defaultdict(int)
        self.route = ""
        self.page_of: Optional[str] = None  # a page of a catch-all route: the route's template

    def absorb(self, other: "_Traffic") -> None:
        """Add a folded page's traffic (its candidates thinned at random past MAX_CANDIDATES)."""
        self.count += other.count
        self.durations.extend(other.durations)
        for headers, n in other.headers.items():
            self.headers[headers] += n
        self.candidates.extend(other.candidates)
        if len(self.candidates) > MAX_CANDIDATES:
            self.candidates = self.rng.sample(self.candidates, MAX_CANDIDATES)

    def add(self, span: Span, value: Optional[str], headers) -> None:
        self.count += 1
        duration = span.duration_ms
        self.durations.append(duration)
        self.headers[headers] += 1
        if value is None:
            return
        if len(self.candidates) < MAX_CANDIDATES:
            self.candidates.append((value, duration))
        else:
            slot = self.rng.randrange(self.count)
            if slot < MAX_CANDIDATES:
                self.candidates[slot] = (value, duration)

    def sample(self, values: int, slow_weight: float) -> tuple[tuple[str, float], ...]:
        """Up to ``values`` distinct paths with their weights (requests, slow ones ``slow_weight`` times)."""
        if not self.candidates:
            return ()
        ordered = sorted(d for _, d in self.candidates)
        p50, p90 = ordered[len(ordered) // 2], ordered[int(0.9 * (len(ordered) - 1))]
        weights: dict[str, float] = defaultdict(float)
        for value, duration in self.candidates:
            # Slow: at or above p90 and above the median (a flat distribution has no slow requests).
            weights[value] += slow_weight if duration >= p90 and duration > p50 else 1.0
        # Weighted sampling without replacement (Efraimidis & Spirakis 2006): key u^(1/w), keep the largest.
        keyed = sorted(((self.rng.random() ** (1.0 / w), v) for v, w in sorted(weights.items())), reverse=True)
        chosen = [(value, round(weights[value], 2)) for _, value in keyed[:values]]
        return tuple(sorted(chosen, key=lambda pair: (-pair[1], pair[0])))


def collect(traces: Iterable[Sequence[Span]], services: Sequence[str] = (), values: int = 20,
            slow_weight: float = 1.0, seed: int = 1) -> tuple[list[Endpoint], int]:
    """Entry endpoints of the traces with weights and sampled values; also the number of traces read."""
    if slow_weight <= 0 or values < 1:
        raise InputError("--slow-weight must be > 0 and --values at least 1")
    rng = random.Random(seed)
    traffic: dict[tuple[str, str, str], _Traffic] = {}
    pages: dict[tuple[str, str, str], int] = defaultdict(int)  # catch-all route -> its pages with a task
    count = 0
    for trace in traces:
        count += 1
        for span in _entries(trace):
            if services and span.service not in services:
                continue
            path = span.url_path or ""
            if not (span.http_route or path):
                continue
            name = endpoint_route(span.http_route, path)
            method = span.http_method.upper()
            key = (span.service, method, name.route)
            entry = traffic.get(key)
            if entry is None and name.by_path:
                route = (span.service, method, name.template)
                if pages[route] >= PAGES_TRACKED:  # a route of endless paths: the rest go to its one task
                    key, name = route, endpoint_route(name.template, None)
                    entry = traffic.get(key)
                else:
                    pages[route] += 1
            if entry is None:
                entry = traffic[key] = _Traffic(rng)
                entry.route = span.http_route or name.route
                entry.page_of = name.template if name.by_path else None
            attributes = span.attributes()
            query = _query(attributes)
            replayable = path and REDACTED not in path.split("/")
            value = (path + ("?" + query if query else "")) if replayable else None
            entry.add(span, value, _headers(attributes))
    _fold_pages(traffic)
    endpoints = []
    for (service, method, template), t in sorted(traffic.items()):
        durations = sorted(t.durations)
        sampled = t.sample(values, slow_weight)
        if not sampled and ("{" in template or REDACTED in template.split("/")):
            continue  # no concrete path to send
        endpoints.append(Endpoint(
            service, method, template, t.route, t.count, _pct(durations, 0.5), _pct(durations, 0.95),
            sampled or ((template, float(t.count)),), max(t.headers, key=t.headers.get) if t.headers else ()))
    return endpoints, count


def select(endpoints: Sequence[Endpoint], options: SuiteOptions) -> tuple[list[Endpoint], list[tuple[str, str]]]:
    """The endpoints a suite replays, and the others with why they are left out."""
    kept, left_out = [], []
    login_paths = options.login.paths() if options.login is not None else ()
    for e in endpoints:
        path = e.template.split("?")[0]
        if any(path.rstrip("/") == p.rstrip("/") for p in login_paths):
            left_out.append((e.label, "the login: each user logs in by itself"))
        elif _LOGOUT.search(path):
            left_out.append((e.label, "logs the user out"))
        elif e.method in WRITE_METHODS and not options.include_writes:
            left_out.append((e.label, "a write: --include-writes replays writes"))
        else:
            kept.append(e)
    return kept, left_out


def _fold_pages(traffic: dict[tuple[str, str, str], _Traffic]) -> None:
    """Past the busiest PATHS_PER_ROUTE pages of a catch-all route, one task named by the route's template."""
    routes: dict[tuple[str, str, str], list] = defaultdict(list)
    for key, t in traffic.items():
        if t.page_of is not None:
            routes[(key[0], key[1], t.page_of)].append(key)
    for route, keys in routes.items():
        keys.sort(key=lambda k: (-traffic[k].count, k[2]))
        for key in keys[PATHS_PER_ROUTE:]:
            t = traffic.pop(key)
            into = traffic.get(route)
            if into is None:
                t.page_of, t.route = None, route[2]
                traffic[route] = t
            else:
                into.absorb(t)


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def from_store(store: Path, since_ns: Optional[int], services: Sequence[str] = (), host: Optional[str] = None,
               values: int = 20, slow_weight: float = 1.0, seed: int = 1,
               options: Optional[SuiteOptions] = None, load: Union[bool, str] = False,
               sample: Optional[bool] = None) -> Suite:
    """The suite from the traces in ``store``; ``load`` as in the read API (False: real traffic only).

    ``sample``: read only each trace's root span (a large window: ``LARGE_WINDOW`` traces or more, load tests
    left out; None decides by the window's size). The endpoint mix and latencies are then over every request
    whose root span is its entry (the usual trace), the values from the same bounded reservoir per endpoint
    (``MAX_CANDIDATES``), at a cost per request instead of per span; the suite's docstring says what it rests on.
    """
    from takealook.collector import open_store

    options = options or SuiteOptions()
    note = ""
    with open_store(store) as reader:
        if sample is None:
            sample = load is False and reader.count_traces(since_ns, load=load) >= LARGE_WINDOW
        if sample:
            endpoints, traces = collect(([root] for root in reader.root_spans(since_ns, load=load)), services,
                                        values, slow_weight, seed)
            in_window = reader.count_traces(since_ns, load=load)
            note = (f" (a large window: the root spans of its {in_window:,} traces"
                    + (f", {in_window - traces:,} without a root span of their own left out" if in_window > traces
                       else "") + ")")
        else:
            endpoints, traces = collect(reader.iter_traces(since_ns=since_ns, load=load), services, values,
                                        slow_weight, seed)
        runs = reader.load_runs(since_ns) if load is False and not endpoints else {}
    if not endpoints:
        hint = (f"only load-test traffic ({', '.join(runs)}) is there: pass --include-load" if runs else
                "widen --since or check that the backends run under takealook-run")
        raise InputError(f"no entry HTTP requests in {store}" + (" for those services" if services else "")
                         + f" in that time: {hint}")
    kept, left_out = select(endpoints, options)
    if not kept:
        raise InputError(f"every endpoint in {store} was left out ({'; '.join(f'{e}: {why}' for e, why in left_out)})")
    source = f"{traces} traces in {store}{note}"
    return Suite(render(kept, host, source, slow_weight, options, left_out), tuple(kept), traces, tuple(left_out))
