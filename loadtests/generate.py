"""``load generate``: write a plain, readable locustfile from the traces in the store.

``from_store(path, since_ns, ...)`` reads whole traces through the collector's
read API (``takealook.collector.open_store``); ``collect(traces, ...)`` does the
work over any iterable of traces (lists of ``Span``), and ``render(...)``
writes the suite. Nothing here imports locust; the suite imports it.

What the suite holds:

- One task per entry endpoint: a server span with no server span above it in
  its trace (the request a user or the front end made; calls between the
  user's services are left out, they happen by themselves). Endpoints are
  ``(method, route template)``: the span's ``http_route`` rewritten in one
  style (Flask ``/orders/<int:id>``, Django ``orders/<int:pk>/`` and
  ``^orders/(?P<pk>\\d+)/$`` become ``/orders/{id}``, ``/orders/{pk}/``), or,
  without a route, the path templated: numeric, UUID and long hexadecimal
  segments become ``{id}``, ``{uuid}``, ``{hex}``.
- Task weights proportional to the observed requests (scaled to at most 1000).
- Up to ``values`` real request paths per endpoint (query strings kept,
  parameters whose names look secret dropped; a path the agent recorded with a
  ``REDACTED`` segment, a personal value it left out, is no value to replay, and
  an endpoint left with none is not in the suite), sampled without replacement
  with requests at or above the endpoint's p90 duration ``slow_weight`` times
  as likely (``--slow-weight 3``: the slow ones are what you want to reproduce).
- Headers: only ``accept``, ``accept-language`` and ``content-type`` when the
  spans recorded them; never cookies, authorization or API keys. Bodies are not
  in traces: POST/PUT/PATCH tasks send none and say so in a comment.
- One ``HttpUser`` class per entry service, weighted by its traffic; the
  ``--host`` given is written into the classes (``load run --host`` overrides).

The file runs as is with ``locust -f SUITE.py --host URL``.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence
from urllib.parse import parse_qsl, urlencode

from takealook.collector import Span
from takealook.errors import InputError

MAX_WEIGHT = 1000
MAX_CANDIDATES = 5000  # requests remembered per endpoint to sample values from
SAFE_HEADERS = ("accept", "accept-language", "content-type")
_SECRET = re.compile(r"(pass|secret|token|key|auth|session|sig|cookie|credential)", re.I)
_FLASK = re.compile(r"<(?:[a-zA-Z_][a-zA-Z0-9_]*(?:\([^)]*\))?:)?([a-zA-Z_][a-zA-Z0-9_]*)>")
_DJANGO_RE = re.compile(r"\(\?P<([a-zA-Z_][a-zA-Z0-9_]*)>[^)]*\)")
_NUMERIC = re.compile(r"^\d+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HEX = re.compile(r"^(?=.*\d)[0-9a-fA-F]{8,}$")
_BODY_METHODS = ("POST", "PUT", "PATCH")
_REDACTED = "REDACTED"  # what the agent records for a path segment it keeps out (a username, say)


@dataclass(frozen=True)
class Endpoint:
    service: str
    method: str
    template: str  # /orders/{id}
    route: str  # as the traces had it (or the template)
    requests: int
    p50_ms: float
    p95_ms: float
    values: tuple[str, ...]  # real paths (with query), sampled
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Suite:
    text: str
    endpoints: tuple[Endpoint, ...]
    traces: int


def route_template(route: str) -> str:
    """A route of any framework in one style: ``/orders/{id}``."""
    text = route.strip()
    if text.startswith("^") or text.endswith("$") or "(?P<" in text:
        text = _DJANGO_RE.sub(r"{\1}", text).lstrip("^").rstrip("$")
    text = _FLASK.sub(r"{\1}", text)
    return text if text.startswith("/") else "/" + text


def template_from_path(path: str) -> str:
    """Template a concrete path: ``/orders/17/items/3`` -> ``/orders/{id}/items/{id2}``."""
    seen: dict[str, int] = defaultdict(int)
    parts = []
    for segment in path.split("/"):
        name = ("id" if _NUMERIC.match(segment) else "uuid" if _UUID.match(segment)
                else "hex" if _HEX.match(segment) else None)
        if name is None:
            parts.append(segment)
            continue
        seen[name] += 1
        parts.append("{" + name + (str(seen[name]) if seen[name] > 1 else "") + "}")
    return "/".join(parts) or "/"


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
    pairs = [(k, v) for k, v in parse_qsl(str(query), keep_blank_values=True) if not _SECRET.search(k)]
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

    def sample(self, values: int, slow_weight: float) -> tuple[str, ...]:
        if not self.candidates:
            return ()
        ordered = sorted(d for _, d in self.candidates)
        p50, p90 = ordered[len(ordered) // 2], ordered[int(0.9 * (len(ordered) - 1))]
        # Slow: at or above p90 and above the median (a flat distribution has no slow requests).
        weight = [slow_weight if d >= p90 and d > p50 else 1.0 for _, d in self.candidates]
        # Weighted sampling without replacement (Efraimidis & Spirakis 2006): key u^(1/w), keep the largest.
        keyed = [(self.rng.random() ** (1.0 / w), v) for w, (v, _) in zip(weight, self.candidates)]
        keyed.sort(reverse=True)
        chosen: list[str] = []
        for _, value in keyed:
            if value not in chosen:
                chosen.append(value)
            if len(chosen) >= values:
                break
        return tuple(chosen)


def collect(traces: Iterable[Sequence[Span]], services: Sequence[str] = (), values: int = 20,
            slow_weight: float = 1.0, seed: int = 1) -> tuple[list[Endpoint], int]:
    """Entry endpoints of the traces with weights and sampled values; also the number of traces read."""
    if slow_weight <= 0 or values < 1:
        raise InputError("--slow-weight must be > 0 and --values at least 1")
    rng = random.Random(seed)
    traffic: dict[tuple[str, str, str], _Traffic] = {}
    count = 0
    for trace in traces:
        count += 1
        for span in _entries(trace):
            if services and span.service not in services:
                continue
            path = span.url_path or ""
            template = route_template(span.http_route) if span.http_route else template_from_path(path) if path else ""
            if not template:
                continue
            key = (span.service, span.http_method.upper(), template)
            entry = traffic.get(key)
            if entry is None:
                entry = traffic[key] = _Traffic(rng)
                entry.route = span.http_route or template
            attributes = span.attributes()
            query = _query(attributes)
            replayable = path and _REDACTED not in path.split("/")
            value = (path + ("?" + query if query else "")) if replayable else None
            entry.add(span, value, _headers(attributes))
    endpoints = []
    for (service, method, template), t in sorted(traffic.items()):
        durations = sorted(t.durations)
        sampled = t.sample(values, slow_weight)
        if not sampled and ("{" in template or _REDACTED in template.split("/")):
            continue  # no concrete path to send
        endpoints.append(Endpoint(
            service, method, template, t.route, t.count, _pct(durations, 0.5), _pct(durations, 0.95),
            sampled or (template,), max(t.headers, key=t.headers.get) if t.headers else ()))
    return endpoints, count


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def from_store(store: Path, since_ns: Optional[int], services: Sequence[str] = (), host: Optional[str] = None,
               values: int = 20, slow_weight: float = 1.0, seed: int = 1) -> Suite:
    from takealook.collector import open_store

    with open_store(store) as reader:
        endpoints, traces = collect(reader.iter_traces(since_ns=since_ns), services, values, slow_weight, seed)
    if not endpoints:
        raise InputError(f"no entry HTTP requests in {store}"
                         + (" for those services" if services else "") + " in that time: widen --since or "
                         "check that the backends run under takealook-run")
    source = f"{traces} traces in {store}"
    return Suite(render(endpoints, host, source, slow_weight), tuple(endpoints), traces)


# --------------------------------------------------------------------------- the locustfile


def _identifier(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower() or "root"
    if base[0].isdigit():
        base = "_" + base
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def _weights(endpoints: Sequence[Endpoint]) -> list[int]:
    top = max(e.requests for e in endpoints)
    scale = min(1.0, MAX_WEIGHT / top)
    return [max(1, round(e.requests * scale)) for e in endpoints]


def render(endpoints: Sequence[Endpoint], host: Optional[str], source: str, slow_weight: float = 1.0) -> str:
    by_service: dict[str, list[Endpoint]] = defaultdict(list)
    for e in endpoints:
        by_service[e.service].append(e)
    total = sum(e.requests for e in endpoints)
    lines = [
        f'"""Locust suite generated by `takealook load generate` from {source}.',
        "",
        "Endpoints, task weights (observed requests) and parameter values come from real",
        "traffic" + (f"; requests at or above each endpoint's p90 were sampled {slow_weight:g}x as often." if
                     slow_weight != 1 else "."),
        "It is a plain locustfile: edit it freely. Run it with",
        "    takealook load run THIS_FILE --host URL --label NAME",
        "or  locust -f THIS_FILE --host URL",
        '"""',
        "",
        "import random",
        "",
        "from locust import HttpUser, between, task",
        "",
    ]
    names: set[str] = set()
    value_names = {}
    for e in endpoints:
        if len(e.values) > 1:
            constant = _identifier(f"{e.service}_{e.method}_{e.template}", names).upper()
            value_names[id(e)] = constant
            lines.append(f"# {e.method} {e.template}: paths of real requests")
            lines.append(f"{constant} = [")
            lines.extend(f"    {v!r}," for v in e.values)
            lines.append("]")
            lines.append("")
    classes: set[str] = set()
    for service, group in sorted(by_service.items()):
        count = sum(e.requests for e in group)
        cls = _identifier(service, classes).title().replace("_", "") + "User"
        lines += ["", f"class {cls}(HttpUser):",
                  f'    """Entry endpoints of {service}: {count} of {total} requests observed."""', ""]
        lines.append(f"    weight = {max(1, round(100 * count / total))}")
        if host:
            lines.append(f"    host = {host.rstrip('/')!r}")
        lines.append("    wait_time = between(0.5, 2)")
        methods: set[str] = set()
        for e, weight in zip(group, _weights(group)):
            lines += _task(e, weight, _identifier(f"{e.method}_{e.template}", methods), value_names.get(id(e)))
    return "\n".join(lines).rstrip() + "\n"


def _task(e: Endpoint, weight: int, name: str, constant: Optional[str]) -> list[str]:
    path = f"random.choice({constant})" if constant else repr(e.values[0])
    args = [path, f"name={e.template!r}"]
    if e.headers:
        args.append(f"headers={dict(e.headers)!r}")
    out = ["", f"    @task({weight})", f"    def {name}(self):",
           f'        """{e.method} {e.route}: {e.requests} requests, p50 {e.p50_ms:.0f} ms, '
           f'p95 {e.p95_ms:.0f} ms."""']
    if e.method in _BODY_METHODS:
        out.append("        # Traces do not carry request bodies: add one (json=...) if the endpoint needs it.")
    method = e.method.lower()
    if method in ("get", "post", "put", "patch", "delete", "head", "options"):
        out.append(f"        self.client.{method}({', '.join(args)})")
    else:
        out.append(f"        self.client.request({e.method!r}, {', '.join(args)})")
    return out
