"""Where an endpoint's change is: its critical path, statements and calls per request, side by side.

``SideTally`` adds up one side's traces of one endpoint: the critical path
(``critical_path.critical_path``: nanoseconds per service and category, which
add up to each request's duration exactly), and per statement (grouped by
fingerprint, else text) and per outbound call (caller, method, host) the calls
and the time. ``where(before, after)`` turns two tallies into:

- ``PathChange`` rows: mean milliseconds per request of each (service,
  category) before and after, the change, and its share of the endpoint's mean
  change (the rows' changes add up to the change of the mean duration, so a
  share says how much of the added time a part explains);
- the statements and calls whose time per request changed most (their own
  time, summed: statements run in parallel each count whole);
- ``cause``: one line naming the part that moved most in the direction of the
  change, and the statement or call behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from takealook.analyzers.traces.critical_path import critical_path
from takealook.analyzers.traces.stats import ratio
from takealook.analyzers.traces.trace import CODE, TraceView, host_of

TOP_ITEMS = 5  # statements and calls listed per endpoint
_MIN_CHANGE_MS = 0.05  # smaller changes per request are rounding, not a cause


@dataclass(frozen=True)
class PathChange:
    service: str
    category: str  # code | sql | connect | http | another database system
    ms_before: float  # mean per request
    ms_after: float
    change_ms: float
    share_of_change: Optional[float]  # of the endpoint's mean change; None when the mean did not move


@dataclass(frozen=True)
class ItemChange:
    """A statement or an outbound call, per request on each side."""

    service: str  # the service that ran the statement or made the call
    text: str  # the statement, or "GET host" for a call
    fingerprint: str  # statements: the pglast fingerprint ("" when it did not parse); calls: ""
    calls_before: float  # per request
    calls_after: float
    ms_before: float  # per request
    ms_after: float
    change_ms: float


@dataclass(frozen=True)
class Where:
    shares_before: dict[str, float]  # the flat shares of ``traces report`` (service code, "sql", "http"...)
    shares_after: dict[str, float]
    path: tuple[PathChange, ...]  # largest change first
    statements: tuple[ItemChange, ...]
    calls: tuple[ItemChange, ...]
    cause: str  # "" when nothing moved


class SideTally:
    """One side's traces of one endpoint: critical path, statements and calls, summed."""

    __slots__ = ("requests", "duration_ns", "path_ns", "statements", "calls", "texts")

    def __init__(self):
        self.requests = 0
        self.duration_ns = 0
        self.path_ns: dict[tuple[str, str], int] = {}
        self.statements: dict[tuple[str, str], list[int]] = {}  # (service, fingerprint or text) -> [calls, ns]
        self.calls: dict[tuple[str, str], list[int]] = {}  # (service, "METHOD host") -> [calls, ns]
        self.texts: dict[tuple[str, str], tuple[str, str]] = {}  # statement key -> (text, fingerprint)

    def add(self, view: TraceView) -> None:
        self.requests += 1
        self.duration_ns += view.root.duration_ns
        for part, ns in critical_path(view, view.root).items():
            self.path_ns[part] = self.path_ns.get(part, 0) + ns
        for span in view.sql:
            key = (span.service, span.db_fingerprint or " ".join((span.db_statement or span.name).split()))
            _count(self.statements, key, span.duration_ns)
            if key not in self.texts:
                self.texts[key] = (" ".join((span.db_statement or span.name).split()), span.db_fingerprint or "")
        for span in view.calls:
            _count(self.calls, (span.service, f"{span.http_method or 'GET'} {host_of(span) or '?'}"), span.duration_ns)

    def merge(self, other: "SideTally") -> None:
        self.requests += other.requests
        self.duration_ns += other.duration_ns
        for part, ns in other.path_ns.items():
            self.path_ns[part] = self.path_ns.get(part, 0) + ns
        for mine, theirs in ((self.statements, other.statements), (self.calls, other.calls)):
            for key, (calls, ns) in theirs.items():
                tally = mine.setdefault(key, [0, 0])
                tally[0] += calls
                tally[1] += ns
        for key, text in other.texts.items():
            self.texts.setdefault(key, text)

    def shares(self) -> dict[str, float]:
        """The flat critical-path shares of ``traces report``: a service's own code under its name, the rest
        by category."""
        flat: dict[str, int] = {}
        for (service, kind), ns in self.path_ns.items():
            name = service if kind == CODE else kind
            flat[name] = flat.get(name, 0) + ns
        return {name: ratio(ns, self.duration_ns) for name, ns in sorted(flat.items(), key=lambda kv: -kv[1])}


def _count(table: dict, key, ns: int) -> None:
    tally = table.get(key)
    if tally is None:
        tally = table[key] = [0, 0]
    tally[0] += 1
    tally[1] += ns


def _per_request(ns: float, requests: int) -> float:
    return round(ns / requests / 1e6, 3) if requests else 0.0


def where(before: SideTally, after: SideTally) -> Where:
    total = _per_request(after.duration_ns, after.requests) - _per_request(before.duration_ns, before.requests)
    path = []
    for part in set(before.path_ns) | set(after.path_ns):
        b = _per_request(before.path_ns.get(part, 0), before.requests)
        a = _per_request(after.path_ns.get(part, 0), after.requests)
        share = round((a - b) / total, 3) if abs(total) >= _MIN_CHANGE_MS else None
        path.append(PathChange(part[0], part[1], b, a, round(a - b, 3), share))
    path.sort(key=lambda p: (-abs(p.change_ms), p.service, p.category))
    statements = _items(before, after, before.statements, after.statements, {**after.texts, **before.texts})
    calls = _items(before, after, before.calls, after.calls, {})
    return Where(before.shares(), after.shares(), tuple(path), statements, calls,
                 _cause(total, path, statements, calls))


def _items(before: SideTally, after: SideTally, b_table: dict, a_table: dict, texts: dict) -> tuple[ItemChange, ...]:
    out = []
    for key in set(b_table) | set(a_table):
        b_calls, b_ns = b_table.get(key, (0, 0))
        a_calls, a_ns = a_table.get(key, (0, 0))
        b, a = _per_request(b_ns, before.requests), _per_request(a_ns, after.requests)
        if abs(a - b) < _MIN_CHANGE_MS:
            continue
        text, fingerprint = texts.get(key, (key[1], ""))
        out.append(ItemChange(key[0], text, fingerprint, _calls(b_calls, before.requests),
                              _calls(a_calls, after.requests), b, a, round(a - b, 3)))
    out.sort(key=lambda i: (-abs(i.change_ms), i.service, i.text))
    return tuple(out[:TOP_ITEMS])


def _calls(calls: int, requests: int) -> float:
    return round(calls / requests, 2) if requests else 0.0


def _cause(total: float, path: list[PathChange], statements, calls) -> str:
    """The part that moved most in the direction of the mean change, and what is behind it."""
    if abs(total) < _MIN_CHANGE_MS or not path:
        return ""
    grew = total > 0
    part = max(path, key=lambda p: p.change_ms if grew else -p.change_ms)
    if (part.change_ms > 0) != grew:
        return ""
    what = f"{part.category} in {part.service}" if part.category != CODE else f"{part.service}'s own code"
    line = (f"mean {total:+.1f} ms per request; {what} {part.change_ms:+.1f} ms "
            f"({100 * (part.share_of_change or 0):.0f}% of the change)")
    kind, items = {"sql": ("statement", statements), "http": ("call", calls)}.get(part.category, ("", ()))
    same_way = [i for i in items if i.service == part.service and (i.change_ms > 0) == grew]
    if same_way:
        item = same_way[0]
        count = "" if item.calls_before == item.calls_after else \
            f", {item.calls_before:g} → {item.calls_after:g} per request"
        line += f"; {kind} {_short(item.text)} {item.change_ms:+.1f} ms{count}"
    return line


def _short(text: str, width: int = 90) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
