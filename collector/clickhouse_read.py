"""The store's read API over a ClickHouse table in the Collector exporter's layout.

``ClickHouseReader`` answers what ``read.StoreReader`` answers (``open_store``
picks it for ``chdb:`` and ``clickhouse://`` stores), with the same ``Span``
records: ids in lowercase hex, kinds and statuses as ``model.KINDS`` and
``STATUSES`` words whichever spelling the table uses, the typed HTTP and
database fields resolved from the attribute map as the collector resolves them
at ingest (``semconv.typed_fields``, once per distinct attribute map).

The table has no per-trace summary, so a trace's start, services, endpoints
and load-test mark are aggregated per ``TraceId`` by the engine. A trace
belongs to a window by its first span's start, like in SQLite; spans are
looked for from ``TRACE_SLACK_NS`` before the window (a trace longer than that
is cut). Whole traces are then read a batch at a time, each batch one query
over the time range its traces span, so the engine prunes by ``Timestamp``.

Grouping by ``TraceId`` over a window (counting traces, listing them, load runs)
holds a row per trace while it runs; every such query carries ``SPILL``
(``bounded``): past ``SPILL_BYTES`` the engine writes partial aggregates and sorts
to disk, so memory stays bounded at any window size, and the figures are the
same.

The exporter writes traces only: metric points are not read from ClickHouse
(``metric_points`` yields nothing), so rates come from the traces.
"""

from __future__ import annotations

import gc
import json
from typing import Callable, Iterator, Optional

from takealook.collector.clickhouse import (
    ERROR_STATUSES, SERVER_KINDS, Query, connect, literal, ns_literal, table_layout,
)
from takealook.collector.location import StoreURL
from takealook.collector.model import KINDS, EntryGroup, MetricPoint, Span, TraceSpans, new_span
from takealook.collector.semconv import typed_fields
from takealook.errors import InputError
from takealook.loadmark import DEFAULT_LABEL, KEY, MAX_LABEL, PREFIX, label_of

TRACE_SLACK_NS = 3600 * 10**9  # how long before the window a trace's spans are looked for
DEFAULT_BATCH = 2000  # traces per span query
ROOT_PAGE = 50_000  # root spans per query of root_spans
_SET_CACHE = 50_000
_MARK = KEY + "=" + PREFIX
SPILL_BYTES = 512 * 2**20  # a grouping or sort of more than this goes to disk (per query thread)
# Extra settings on the queries that group by trace (tests cap memory with them).
SPILL: dict = {}
_KIND_NUMBER = {name: number for number, name in enumerate(KINDS)}


def bounded(sql: str) -> Query:
    """``sql`` with the settings that let the engine spill its per-trace grouping and sorting to disk."""
    return Query(sql, {"max_bytes_before_external_group_by": SPILL_BYTES,
                       "max_bytes_before_external_sort": SPILL_BYTES, **SPILL})


def kind_word(spelling: str) -> str:
    """``Server`` or ``SPAN_KIND_SERVER`` -> ``server``; anything else -> ``unspecified``."""
    word = spelling.lower()
    if word.startswith("span_kind_"):
        word = word[len("span_kind_"):]
    return word if word in _KIND_NUMBER else "unspecified"


def status_word(spelling: str) -> str:
    """``Error`` or ``STATUS_CODE_ERROR`` -> ``error``; anything else -> ``unset``."""
    word = spelling.lower()
    if word.startswith("status_code_"):
        word = word[len("status_code_"):]
    return word if word in ("ok", "error") else "unset"


class ClickHouseReader:
    """Read access to one ClickHouse spans table. Not thread-safe: open one reader per thread."""

    def __init__(self, url: StoreURL):
        self.url = url
        self.path = str(url)
        self._engine = connect(url, read_only=True)
        try:
            self._layout = table_layout(self._engine, url)
        except BaseException:
            self._engine.close()
            raise
        self._sets: dict = {}  # (kind, attributes JSON) -> (attributes JSON, typed fields...)
        self._columns = self._span_columns()

    # -- life cycle ---------------------------------------------------------

    def close(self) -> None:
        self._engine.close()

    def __enter__(self) -> "ClickHouseReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _is_empty(self) -> bool:
        return not self._engine.rows(f"SELECT 1 FROM {self.url.qualified} LIMIT 1")

    # -- overview -----------------------------------------------------------

    def summary(self):
        from takealook.collector.read import StoreSummary

        # traces: uniq() is exact for small tables and an estimate (within about 2%) in bounded memory for large ones.
        row = self._engine.rows(
            f"SELECT count(), uniq(TraceId), toUnixTimestamp64Nano(min(Timestamp)), "
            f"max(toUnixTimestamp64Nano(Timestamp) + toInt64(Duration)) FROM {self.url.qualified}")[0]
        spans, traces, start, end = (int(v) for v in row)
        size = self._size()
        return StoreSummary(self.path, 0, spans, traces, 0, tuple(self.services()), start if spans else None,
                            end if spans else None, size)

    def _size(self) -> int:
        try:
            rows = self._engine.rows(
                f"SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND database = "
                f"{literal(self.url.database)} AND table = {literal(self.url.table)}")
        except InputError:  # a user without access to system tables
            return 0
        return int(rows[0][0] or 0) if rows else 0

    def services(self) -> list[str]:
        return [r[0] for r in self._engine.rows(
            f"SELECT DISTINCT ServiceName FROM {self.url.qualified} ORDER BY ServiceName")]

    def count_traces(self, since_ns: Optional[int] = None, until_ns: Optional[int] = None,
                     service: Optional[str] = None, route: Optional[str] = None, load=True) -> int:
        sql = self.traces_sql(since_ns, until_ns, service, route, load, order=False)
        return int(self._engine.rows(bounded(f"SELECT count() FROM ({sql})"))[0][0])

    def load_runs(self, since_ns: Optional[int] = None, until_ns: Optional[int] = None) -> dict[str, int]:
        if not self._layout.has("TraceState"):
            return {}
        sql = self.traces_sql(since_ns, until_ns, None, None, True, order=False)
        rows = self._engine.rows(bounded(f"SELECT label, count() FROM ({sql}) WHERE label != '' GROUP BY label "
                                         "ORDER BY label"))
        return {label: int(count) for label, count in rows}

    # -- which traces -------------------------------------------------------

    def traces_sql(self, since_ns: Optional[int], until_ns: Optional[int], service: Optional[str],
                   route: Optional[str], load, order: bool = True) -> str:
        """One row per trace that started in the window: TraceId, first start, last start (ns), load label."""
        where, having = [], []
        if since_ns is not None:
            where.append(f"Timestamp >= {ns_literal(int(since_ns) - TRACE_SLACK_NS)}")
            having.append(f"first >= {int(since_ns)}")
        if until_ns is not None:
            where.append(f"Timestamp < {ns_literal(until_ns)}")
            having.append(f"first < {int(until_ns)}")
        server = f"SpanKind IN ({', '.join(map(literal, SERVER_KINDS))})"
        if service is not None and route is not None:
            having.append(f"countIf(ServiceName = {literal(service)} AND {server} AND "
                          f"SpanAttributes['http.route'] = {literal(route)}) > 0")
        elif service is not None:
            having.append(f"countIf(ServiceName = {literal(service)}) > 0")
        elif route is not None:
            having.append(f"countIf({server} AND SpanAttributes['http.route'] = {literal(route)}) > 0")
        state = self._layout.column("TraceState", "''")
        label = self._label_sql("state")
        condition = _load_condition(load, "label", "label = ''")
        outer = [condition] if condition else []
        inner = (f"SELECT TraceId, toUnixTimestamp64Nano(min(Timestamp)) AS first, "
                 f"toUnixTimestamp64Nano(max(Timestamp)) AS last, "
                 f"anyIf({state}, position({state}, '{_MARK}') > 0) AS state "
                 f"FROM {self.url.qualified}"
                 + (f" WHERE {' AND '.join(where)}" if where else "")
                 + " GROUP BY TraceId" + (f" HAVING {' AND '.join(having)}" if having else ""))
        sql = (f"SELECT TraceId, first, last, {label} AS label FROM ({inner})"
               + (f" WHERE {' AND '.join(outer)}" if outer else ""))
        return sql + (" ORDER BY first, TraceId" if order else "")

    @staticmethod
    def _label_sql(state: str) -> str:
        """The run label of a ``tracestate`` value, as ``loadmark.label_of`` reads it ('' when unmarked)."""
        mark = f"trim(extract({state}, '{_MARK}([^,]*)'))"
        return (f"if(position({state}, '{_MARK}') = 0, '', if({mark} = '', {literal(DEFAULT_LABEL)}, "
                f"substring({mark}, 1, {MAX_LABEL})))")

    # -- what the engine computes over all spans ----------------------------

    def entry_groups(self, since_ns: Optional[int], until_ns: Optional[int], service: Optional[str], load,
                     by_path: Callable[[str], bool]) -> list[EntryGroup]:
        """Root server spans grouped by service, method, route (and path, where ``by_path(route)`` or there is
        no route), each group's count, failures, 4xx answers and exact percentiles, computed by the engine."""
        roots = self._roots_sql(since_ns, until_ns, service, load)
        routes = [r[0] for r in self._engine.rows(bounded(f"SELECT DISTINCT route FROM ({roots}) WHERE server"))]
        page = f"if(route IN ({_paged(routes, by_path)}), path, '')"
        rows = self._engine.rows(bounded(
            f"SELECT service, method, route, {page} AS page, if(route = '' AND path = '', name, '') AS label, "
            "count(), countIf(failed), countIf(NOT failed AND status >= 400 AND status < 500), sum(duration), "
            "quantilesExactInclusive(0.5, 0.95, 0.99)(duration), min(start), max(start + duration) "
            f"FROM ({roots}) WHERE server GROUP BY service, method, route, page, label "
            "ORDER BY count() DESC LIMIT 1000 BY service, method, route"))
        return [EntryGroup(r[0], r[1], r[2], r[3], r[4], int(r[5]), int(r[6]), int(r[7]), int(r[8]),
                           tuple(float(q) for q in r[9]), int(r[10]), int(r[11])) for r in rows]

    def sample_traces(self, since_ns: Optional[int], until_ns: Optional[int], service: Optional[str], load,
                      by_path: Callable[[str], bool], slowest: int, failed: int, share: int) -> list[tuple]:
        """A bounded, stratified sample of traces per entry group (as ``entry_groups`` groups them; traces whose
        root is not a server span form groups by root name): its ``slowest`` slowest, up to ``failed`` failed
        ones, and ``share`` more picked at random (by a hash of the trace id, so the same each time). Items as
        ``read_traces`` takes them, oldest first."""
        roots = self._roots_sql(since_ns, until_ns, service, load)
        routes = [r[0] for r in self._engine.rows(bounded(f"SELECT DISTINCT route FROM ({roots}) WHERE server"))]
        group = (f"service, server, method, route, if(route IN ({_paged(routes, by_path)}), path, ''), "
                 "if(NOT server OR (route = '' AND path = ''), name, '')")
        rows = self._engine.rows(bounded(
            f"SELECT trace_id, start, start + duration, state FROM ("
            f"SELECT trace_id, start, duration, failed, state, "
            f"row_number() OVER (PARTITION BY {group} ORDER BY duration DESC, cityHash64(trace_id)) AS slow_rank, "
            f"row_number() OVER (PARTITION BY {group} ORDER BY failed DESC, cityHash64(trace_id)) AS failed_rank, "
            f"row_number() OVER (PARTITION BY {group} ORDER BY cityHash64(trace_id)) AS random_rank "
            f"FROM ({roots})) WHERE slow_rank <= {int(slowest)} OR (failed AND failed_rank <= {int(failed)}) "
            f"OR random_rank <= {int(share)} ORDER BY start, trace_id"))
        # The trace's spans are looked for up to a minute past its root's end (work the root did not wait for).
        return [(r[0], int(r[1]), int(r[2]) + 60 * 10**9, label_of(r[3]) if r[3] else None) for r in rows]

    def _roots_where(self, since_ns: Optional[int], until_ns: Optional[int], load) -> list[str]:
        """Spans without a parent that started in the window, ``load`` by the root's own mark."""
        where = ["ParentSpanId = ''"]
        if since_ns is not None:
            where.append(f"Timestamp >= {ns_literal(since_ns)}")
        if until_ns is not None:
            where.append(f"Timestamp < {ns_literal(until_ns)}")
        state = self._layout.column("TraceState", "''")
        condition = _load_condition(load, self._label_sql(state), f"position({state}, '{_MARK}') = 0")
        if condition:
            where.append(condition)
        return where

    def _roots_sql(self, since_ns: Optional[int], until_ns: Optional[int], service: Optional[str], load) -> str:
        """Root spans with their typed fields, filtered like ``traces_sql`` (by the root's own load mark)."""
        where = self._roots_where(since_ns, until_ns, load)
        if service is not None:
            traces = self.traces_sql(since_ns, until_ns, service, None, True, order=False)
            where.append(f"TraceId IN (SELECT TraceId FROM ({traces}))")
        state = self._layout.column("TraceState", "''")
        attribute = "SpanAttributes"
        status = (f"toInt32OrZero(if({attribute}['http.response.status_code'] != '', "
                  f"{attribute}['http.response.status_code'], {attribute}['http.status_code']))")
        path = (f"multiIf({attribute}['url.path'] != '', {attribute}['url.path'], {attribute}['http.target'] != '', "
                f"splitByChar('?', {attribute}['http.target'])[1], {attribute}['url.full'] != '', "
                f"path({attribute}['url.full']), {attribute}['http.url'] != '', path({attribute}['http.url']), '')")
        return (
            f"SELECT lower(TraceId) AS trace_id, ServiceName AS service, SpanName AS name, "
            f"SpanKind IN ({', '.join(map(literal, SERVER_KINDS))}) AS server, "
            f"if({attribute}['http.request.method'] != '', {attribute}['http.request.method'], "
            f"{attribute}['http.method']) AS method, {attribute}['http.route'] AS route, {path} AS path, "
            f"{status} AS status, toUnixTimestamp64Nano(Timestamp) AS start, toInt64(greatest(toInt64(Duration), 0)) "
            f"AS duration, StatusCode IN ({', '.join(map(literal, ERROR_STATUSES))}) OR (server AND status >= 500) "
            f"AS failed, {state} AS state FROM {self.url.qualified} WHERE {' AND '.join(where)}")

    # -- traces -------------------------------------------------------------

    def iter_traces(self, since_ns: Optional[int] = None, until_ns: Optional[int] = None,
                    service: Optional[str] = None, route: Optional[str] = None,
                    batch: int = DEFAULT_BATCH, load=True) -> Iterator[TraceSpans]:
        """Whole traces that started in [since_ns, until_ns), oldest first (see ``StoreReader.iter_traces``)."""
        if batch < 1:
            raise ValueError("batch must be at least 1")
        listed = self._engine.rows(bounded(self.traces_sql(since_ns, until_ns, service, route, load)))
        yield from self.read_traces([(r[0], int(r[1]), int(r[2]), r[3] or None) for r in listed], batch)

    def read_traces(self, listed: list[tuple], batch: int = DEFAULT_BATCH) -> Iterator[TraceSpans]:
        """The spans of ``listed`` traces ((trace id, first start, last start, load label)), in that order."""
        for at in range(0, len(listed), batch):
            page = listed[at:at + batch]
            low = min(first for _, first, _, _ in page)
            high = max(last for _, _, last, _ in page)
            by_trace = self._spans_of([trace_id for trace_id, _, _, _ in page], low, high)
            for trace_id, _, _, label in page:
                spans = by_trace.get(trace_id)
                if spans:
                    spans.load = label
                    yield spans

    def whole_traces(self, roots: list, batch: int = DEFAULT_BATCH) -> Iterator[TraceSpans]:
        """The whole traces of ``roots`` (spans of ``root_spans``), in that order: each page one query over the time
        its traces span (a trace's spans looked for up to a minute past its root's end, as ``sample_traces``)."""
        return self.read_traces([(root.trace_id, root.start_ns, root.start_ns + root.duration_ns + 60 * 10**9,
                                  None) for root in roots], batch)

    def trace(self, trace_id: str) -> TraceSpans:
        wanted = trace_id.strip().lower()
        spans = self._spans_of([wanted], None, None).get(wanted, TraceSpans())
        state = next((s for s in self._states(wanted) if _MARK in s), "")
        spans.load = label_of(state)
        return spans

    def _states(self, trace_id: str) -> list[str]:
        if not self._layout.has("TraceState"):
            return []
        return [r[0] for r in self._engine.rows(
            f"SELECT DISTINCT TraceState FROM {self.url.qualified} WHERE TraceId = {literal(trace_id)}")]

    def _spans_of(self, trace_ids: list[str], low: Optional[int], high: Optional[int]) -> dict[str, TraceSpans]:
        where = [f"TraceId IN ({', '.join(map(literal, trace_ids))})"]
        if low is not None:
            where.append(f"Timestamp >= {ns_literal(low)} AND Timestamp <= {ns_literal(high)}")
        rows = self._engine.rows(f"SELECT {self._columns} FROM {self.url.qualified} WHERE {' AND '.join(where)} "
                                 "ORDER BY TraceId, Timestamp, SpanId")
        paused = gc.isenabled()
        gc.disable()  # thousands of new objects and no cycles: see read.StoreReader._spans_of
        try:
            out: dict[str, TraceSpans] = {}
            seen: set = set()
            for row in rows:
                key = (row[0], row[1])
                if key in seen:  # the exporter retried a batch: one copy of each span, as in SQLite
                    continue
                seen.add(key)
                group = out.get(row[0])
                if group is None:
                    group = out[row[0]] = TraceSpans()
                group.append(self._span(row))
            return out
        finally:
            if paused:
                gc.enable()

    def _span_columns(self) -> str:
        column = self._layout.column
        return ", ".join((
            "lower(TraceId)", "lower(SpanId)", "lower(ParentSpanId)", "SpanName", "SpanKind",
            "toUnixTimestamp64Nano(Timestamp)", "toInt64(Duration)", "StatusCode",
            column("StatusMessage", "''"), "toJSONString(SpanAttributes)", "ServiceName",
            "toJSONString(" + column("ResourceAttributes", "map()") + ")", column("ScopeName", "''"),
            column("Events.Name", "[]"),
            "arrayMap(x -> toUnixTimestamp64Nano(x), " + column("Events.Timestamp", "CAST([], 'Array(DateTime64(9))')") + ")",
            column("Events.Attributes", "[]"), column("Links.TraceId", "[]"), column("Links.SpanId", "[]"),
            column("Links.Attributes", "[]"),
        ))

    def _span(self, r: list) -> Span:
        kind = kind_word(r[4])
        cached = self._sets.get((kind, r[9]))
        if cached is None:
            if len(self._sets) >= _SET_CACHE:
                self._sets.clear()
            attrs = json.loads(r[9])
            cached = self._sets[(kind, r[9])] = (r[9], *typed_fields(attrs, _KIND_NUMBER[kind]))
        events = _events(r[13], r[14], r[15]) if r[13] else "[]"
        links = (json.dumps([{"trace_id": t.lower(), "span_id": s.lower(), "attributes": a}
                             for t, s, a in zip(r[16], r[17], r[18])]) if r[16] else "[]")
        return new_span(r[0], r[1], r[2] or None, r[10] or "unknown_service", r[3], kind, int(r[5]),
                        max(0, int(r[6])), status_word(r[7]), r[8] or "", *cached[1:], cached[0], r[11], events,
                        links, r[12] or "")

    # -- spans --------------------------------------------------------------

    def root_spans(self, since_ns: Optional[int] = None, until_ns: Optional[int] = None,
                   service: Optional[str] = None, route: Optional[str] = None, load=True) -> Iterator[Span]:
        """Spans without a parent that started in the window, by start time; ``load`` by the root's own mark (the
        agent carries a trace's mark to every span of it), so no per-trace grouping: memory grows with the roots
        returned, not the spans."""
        where = self._roots_where(since_ns, until_ns, load)
        if service is not None:
            where.append(f"ServiceName = {literal(service)}")
        if route is not None:
            where.append(f"SpanAttributes['http.route'] = {literal(route)}")
        # A page of roots per query (keyset by start, trace and span id): memory stays a page, not the window.
        order = "Timestamp, lower(TraceId), lower(SpanId)"
        after = ""
        while True:
            rows = self._engine.rows(bounded(f"SELECT {self._columns} FROM {self.url.qualified} "
                                             f"WHERE {' AND '.join(where)}{after} ORDER BY {order} "
                                             f"LIMIT {ROOT_PAGE}"))
            for row in rows:
                yield self._span(row)
            if len(rows) < ROOT_PAGE:
                return
            last = rows[-1]
            after = f" AND ({order}) > ({ns_literal(int(last[5]))}, {literal(last[0])}, {literal(last[1])})"

    # -- metrics ------------------------------------------------------------

    def metric_points(self, name: Optional[str] = None, since_ns: Optional[int] = None,
                      until_ns: Optional[int] = None, service: Optional[str] = None,
                      load=True) -> Iterator[MetricPoint]:
        """None: the exporter's metric tables are not read (rates come from the traces)."""
        return iter(())


def _load_condition(load, label: str, unmarked: str) -> Optional[str]:
    """What selects ``load``'s traffic: None for all of it (True), ``unmarked`` for none of the load tests' (False),
    the label compared for one run's."""
    if load is True:
        return None
    if load is False:
        return unmarked
    if isinstance(load, str) and load:
        return f"{label} = {literal(load)}"
    raise ValueError("load must be True, False or a run label")


def _paged(routes: list[str], by_path: Callable[[str], bool]) -> str:
    """The routes whose requests are told apart by path, as an SQL list ('' stands for no route)."""
    return ", ".join(literal(route) for route in routes if not route or by_path(route)) or "''"


def _events(names: list, times: list, attributes: list) -> str:
    return json.dumps([{"name": n, "time_ns": int(t), "attributes": a} for n, t, a in zip(names, times, attributes)])

