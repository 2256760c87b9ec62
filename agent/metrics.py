"""The HTTP server duration histogram, aggregated in the app's process.

One histogram series per (method, route, status code, scheme), the
``http.server.request.duration`` metric of OpenTelemetry's HTTP semantic
conventions, in seconds, with the buckets those conventions advise. Requests are
counted in batches (``record_all``: the pipeline queues each request's duration
and hands them over when it sends spans, and at least twice a second): a dict
lookup, a bisect and a few additions each, under one lock; the deltas are handed
to the pipeline every export interval and encoded elsewhere.
This is what gives rates and error ratios (RED) when traces are sampled.

Requests of a load test (their ``tracestate`` carries ``takealook=load:<run
label>``) go to series of their own with the attribute ``takealook.load`` set to
the label, so analyses can leave them out as they leave out the traces.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left

NAME = "http.server.request.duration"
LOAD_ATTRIBUTE = "takealook.load"
UNIT = "s"
# Bucket bounds from the HTTP semantic conventions (http.server.request.duration).
BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class ServerDurationHistogram:
    def __init__(self):
        self._lock = threading.Lock()
        self._series: dict = {}
        self._since = time.time_ns()

    def record(self, seconds: float, method: str, route: str, status: int, scheme: str, load: str = "") -> None:
        self.record_all(((seconds, method, route, status, scheme, load),))

    def record_all(self, durations) -> None:
        """Many requests' (seconds, method, route, status, scheme, load), under one taking of the lock."""
        with self._lock:
            all_series = self._series
            for seconds, method, route, status, scheme, load in durations:
                key = (method, route, status, scheme, load)
                series = all_series.get(key)
                if series is None:
                    series = all_series[key] = [0, 0.0, seconds, seconds, [0] * (len(BOUNDS) + 1)]
                series[0] += 1
                series[1] += seconds
                if seconds < series[2]:
                    series[2] = seconds
                if seconds > series[3]:
                    series[3] = seconds
                series[4][bisect_left(BOUNDS, seconds)] += 1

    def collect(self) -> list:
        """The deltas since the last call, as plain tuples; resets the series."""
        now = time.time_ns()
        with self._lock:
            series, self._series = self._series, {}
            since, self._since = self._since, now
        points = []
        for (method, route, status, scheme, load), (count, total, low, high, buckets) in series.items():
            attributes = {"http.request.method": method, "http.response.status_code": status, "url.scheme": scheme}
            if route:
                attributes["http.route"] = route
            if load:
                attributes[LOAD_ATTRIBUTE] = load
            points.append((NAME, UNIT, attributes, since, now, count, total, low, high, tuple(buckets), BOUNDS))
        return points

    def reset(self) -> None:
        with self._lock:
            self._series = {}
            self._since = time.time_ns()
