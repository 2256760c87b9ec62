"""``traces import FILE --store chdb:...|clickhouse://...``: spans written as the Collector's exporter writes them.

``ClickHouseWriter`` has the write API of ``store.SpanStore`` (``write(batches)``,
``close()``) for ``importer.import_files``. Each span becomes one row of the
exporter's layout (see ``clickhouse.py``): hex ids, kind and status as words
(``Server``, ``Error``; ``SPAN_KIND_SERVER``, ``STATUS_CODE_ERROR`` when the table
already holds an older release's spelling), every attribute value as a string
(numbers and booleans as text, lists and maps as JSON, as the exporter's
``AsString`` does), events and links in their ``Nested`` columns. A load-test
trace keeps its mark in ``TraceState`` (``takealook=load:LABEL``).

The table is created when missing, with the exporter's columns and types; the
database too (chdb, or a server user allowed to). Importing is idempotent as
with SQLite: spans the table already has (same trace and span id) are skipped.
Metric points are not written (the exporter keeps them in other tables, and
takealook reads rates from traces there); ``points_ignored`` counts them.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Sequence

from takealook.collector.clickhouse import connect, exists, literal, table_layout
from takealook.collector.location import StoreURL
from takealook.collector.model import KINDS, STATUSES
from takealook.collector.store import IngestBatch, WriteResult
from takealook.loadmark import entry

# Kind and status words per spelling: the exporter's (pdata's String() less the prefix) and its older releases'.
NEW_KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
NEW_STATUSES = ("Unset", "Ok", "Error")
OLD_KINDS = tuple("SPAN_KIND_" + k.upper() for k in KINDS)
OLD_STATUSES = tuple("STATUS_CODE_" + s.upper() for s in STATUSES)

# The exporter's column names and types (its traces_table.sql), partitioned by day and ordered as it orders them,
# with its bloom filter on TraceId, which whole-trace reads use.
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (Timestamp DateTime64(9), Name LowCardinality(String),
                   Attributes Map(LowCardinality(String), String)) CODEC(ZSTD(1)),
    Links Nested (TraceId String, SpanId String, TraceState String,
                  Attributes Map(LowCardinality(String), String)) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
"""
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class ClickHouseWriter:
    """Writes ``IngestBatch``es into a ClickHouse table in the exporter's layout."""

    def __init__(self, url: StoreURL):
        self.url = url
        self.points_ignored = 0
        self._engine = connect(url, create=True)
        try:
            if not exists(self._engine, url):
                self._engine.command(f"CREATE DATABASE IF NOT EXISTS {url.database}")
                self._engine.command(CREATE_TABLE.format(table=url.qualified))
            layout = table_layout(self._engine, url)
            old = self._engine.rows(f"SELECT 1 FROM {url.qualified} WHERE SpanKind LIKE 'SPAN\\\\_KIND\\\\_%' LIMIT 1")
        except BaseException:
            self._engine.close()
            raise
        self._columns = set(layout.columns)
        self._kinds, self._statuses = (OLD_KINDS, OLD_STATUSES) if old else (NEW_KINDS, NEW_STATUSES)
        self._maps: dict[int, dict] = {}  # attribute set id -> string map
        self._resources: dict[str, dict] = {}

    def close(self) -> None:
        self._engine.close()

    def write(self, batches: Sequence[IngestBatch]) -> WriteResult:
        traces = {trace_id for batch in batches for trace_id in batch.traces}
        stored = self._stored(traces)
        lines: list[str] = []
        duplicate = 0
        for batch in batches:
            self.points_ignored += len(batch.metrics)
            for digest, scope, rows in batch.spans:
                service, resource = batch.resources[digest][0], self._resource(digest, batch)
                for row in rows:
                    key = (row[0], row[1])
                    if key in stored:
                        duplicate += 1
                        continue
                    stored.add(key)
                    lines.append(self._line(row, batch, service, resource, scope))
        self._engine.insert(self.url.qualified, lines)
        return WriteResult(len(lines), duplicate, 0, 0)

    def _stored(self, traces: set[str]) -> set[tuple[str, str]]:
        if not traces:
            return set()
        marks = ", ".join(map(literal, sorted(traces)))
        return {(r[0], r[1]) for r in self._engine.rows(
            f"SELECT lower(TraceId), lower(SpanId) FROM {self.url.qualified} WHERE TraceId IN ({marks})")}

    def _resource(self, digest: str, batch: IngestBatch) -> dict:
        known = self._resources.get(digest)
        if known is None:
            known = self._resources[digest] = string_map(json.loads(batch.resources[digest][1]))
        return known

    def _line(self, row: tuple, batch: IngestBatch, service: str, resource: dict, scope: str) -> str:
        # row: trace id, span id, parent id, name, kind, start, duration, code, message, set id, events, links
        trace_id, span_id, parent, name, kind, start, duration, code, message, set_id, events, links = row
        attributes = self._maps.get(set_id)
        if attributes is None:
            attributes = self._maps[set_id] = string_map(json.loads(batch.attrsets[set_id][0]))
        info = batch.traces.get(trace_id)
        values: dict[str, Any] = {
            "Timestamp": seconds(start), "TraceId": trace_id, "SpanId": span_id, "ParentSpanId": parent,
            "TraceState": entry(info.load) if info is not None and info.load else "", "SpanName": name,
            "SpanKind": self._kinds[kind], "ServiceName": service, "ResourceAttributes": resource,
            "ScopeName": scope, "ScopeVersion": "", "SpanAttributes": attributes, "Duration": duration,
            "StatusCode": self._statuses[code], "StatusMessage": message,
        }
        decoded = json.loads(events) if events else []
        values["Events.Timestamp"] = [seconds(e["time_ns"]) for e in decoded]
        values["Events.Name"] = [e["name"] for e in decoded]
        values["Events.Attributes"] = [string_map(e.get("attributes", {})) for e in decoded]
        decoded = json.loads(links) if links else []
        values["Links.TraceId"] = [link["trace_id"] for link in decoded]
        values["Links.SpanId"] = [link["span_id"] for link in decoded]
        values["Links.TraceState"] = ["" for _ in decoded]
        values["Links.Attributes"] = [string_map(link.get("attributes", {})) for link in decoded]
        return _dumps({k: v for k, v in values.items() if k in self._columns})


def seconds(ns: int) -> str:
    """Nanoseconds since the epoch as the text a DateTime64(9) reads whatever the server's time zone."""
    return str(Decimal(int(ns)).scaleb(-9))


def string_map(attributes: dict) -> dict[str, str]:
    """Attribute values as the exporter writes them into a Map(String, String)."""
    return {key: as_string(value) for key, value in attributes.items()}


def as_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if value is None:
        return ""
    return _dumps(value)
