"""Request counts from metric points, for when traces are sampled.

A sampled store holds a fraction of the requests, so counting traces
under-counts traffic; the HTTP server duration histogram
(``http.server.request.duration``, or the older ``http.server.duration``) is
recorded for every request. ``request_counts`` adds its points up per
(service, method, route): delta points by summing their counts, cumulative
series by their increase inside the window (a series that started inside the
window counts from zero). Error counts are the points whose status is 5xx,
client errors those with a 4xx. Routes are named by ``takealook.routes``, as
the entry endpoints are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from takealook.collector import MetricPoint
from takealook.routes import route_template

SERVER_DURATION_METRICS = ("http.server.request.duration", "http.server.duration")


@dataclass(frozen=True)
class RequestCount:
    requests: int
    errors: int
    client_errors: int = 0


def request_counts(
    points: Iterable[MetricPoint], since_ns: Optional[int] = None, until_ns: Optional[int] = None
) -> dict[tuple[str, str, str], RequestCount]:
    """Requests and 5xx per (service, method, route) in the window; the newer metric name wins per service."""
    series: dict[tuple, list[MetricPoint]] = {}
    names_by_service: dict[str, set[str]] = {}
    for point in points:
        if point.name not in SERVER_DURATION_METRICS:
            continue
        if until_ns is not None and point.time_ns > until_ns:
            continue
        if since_ns is not None and point.time_ns < since_ns:
            continue
        names_by_service.setdefault(point.service, set()).add(point.name)
        key = (point.service, point.name, point.http_method or "", point.http_route or "", point.http_status,
               point.attributes_json, point.temporality, point.start_ns if point.temporality == "cumulative" else 0)
        series.setdefault(key, []).append(point)
    totals: dict[tuple[str, str, str], list[int]] = {}
    names: dict[str, str] = {}
    for key, points_of_series in series.items():
        service, name, method, route, status, _, temporality, start = key
        if len(names_by_service[service]) > 1 and name != SERVER_DURATION_METRICS[0]:
            continue
        count = _increase(points_of_series, temporality, start, since_ns)
        name = names.get(route)
        if name is None:
            name = names[route] = route_template(route).text if route else ""
        entry = totals.setdefault((service, method, name), [0, 0, 0])
        entry[0] += count
        if status is not None and status >= 500:
            entry[1] += count
        elif status is not None and status >= 400:
            entry[2] += count
    return {key: RequestCount(*counts) for key, counts in totals.items()}


def _increase(points: list[MetricPoint], temporality: str, start_ns: int, since_ns: Optional[int]) -> int:
    if temporality != "cumulative":
        return sum(max(0, p.count) for p in points)
    points.sort(key=lambda p: p.time_ns)
    last = points[-1].count
    if since_ns is None or start_ns >= since_ns:
        return max(0, last)
    return max(0, last - points[0].count)
