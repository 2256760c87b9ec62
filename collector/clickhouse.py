"""ClickHouse as a span store: the connection, and the table layout of the Collector's exporter.

The OpenTelemetry Collector's contrib ``clickhouse`` exporter writes one row per
span into a MergeTree table (``otel_traces`` by default). Its layout, as its
``internal/sqltemplates/traces_table.sql`` creates it (opentelemetry-collector-
contrib, exporter/clickhouseexporter): ``Timestamp DateTime64(9)`` (the start),
``TraceId``/``SpanId``/``ParentSpanId`` as lowercase hex ('' for a root),
``TraceState``, ``SpanName``, ``SpanKind`` and ``StatusCode`` as words
(``Server``, ``Error``: pdata's ``SpanKind.String()`` less its prefix),
``ServiceName``, ``ResourceAttributes`` and ``SpanAttributes`` as
``Map(LowCardinality(String), String)`` (every value as a string), ``ScopeName``,
``ScopeVersion``, ``Duration UInt64`` (nanoseconds), ``StatusMessage``, and
``Events``/``Links`` as ``Nested`` columns. Older releases wrote
``SPAN_KIND_SERVER`` and ``STATUS_CODE_ERROR``, a signed ``Duration Int64``, and
no scope columns; readers here take either.

``connect(url)`` gives an ``Engine``: the embedded engine (``chdb``: one data
folder per process, shared by every reader and writer in it) or a server over
HTTP(S) (``clickhouse-connect``). Both answer ``rows(sql)`` in
``JSONCompactEachRow`` and take inserts as ``JSONEachRow``, so the readers and
the writer run the same SQL on either.

``table_layout`` checks a table before anything is read: a missing table, or
one without the exporter's columns, is an ``InputError`` naming what is wrong.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

from takealook.collector.location import StoreURL
from takealook.errors import ConnectionFailed, InputError, MissingExtra

CONNECT_TIMEOUT_S = 10
QUERY_TIMEOUT_S = 600
# Columns the analyses cannot do without, and the type each must have (by prefix).
REQUIRED = {
    "Timestamp": "DateTime64", "TraceId": "", "SpanId": "", "ParentSpanId": "", "SpanName": "",
    "SpanKind": "", "ServiceName": "", "SpanAttributes": "Map(", "Duration": "", "StatusCode": "",
}
# Read when present, else taken as empty (older exporter releases lack some of them).
OPTIONAL = ("TraceState", "ResourceAttributes", "ScopeName", "ScopeVersion", "StatusMessage", "Events.Timestamp",
            "Events.Name", "Events.Attributes", "Links.TraceId", "Links.SpanId", "Links.TraceState",
            "Links.Attributes")
SERVER_KINDS = ("Server", "SPAN_KIND_SERVER")
ERROR_STATUSES = ("Error", "STATUS_CODE_ERROR")


class Query(NamedTuple):
    """A statement with settings of its own, written as its SETTINGS clause with the engine's."""

    sql: str
    settings: dict


class Engine:
    """One connection. ``rows`` returns each row as a list of JSON values; errors become InputError.

    A reader's engine (``read_only``) runs every statement with ``readonly = 2`` (reads only; settings
    may change) and ``max_execution_time`` (the server stops a query the client gave up on) in its SETTINGS
    clause, unless the user's profile already makes it read-only or locks the setting; it has no
    ``command`` or ``insert``."""

    def __init__(self, url: StoreURL, client, session, read_only: bool = False):
        self.url, self._client, self._session = url, client, session
        self.read_only = read_only
        self._guard: dict = {}
        if read_only:
            self._guard = self._read_only_settings()

    def _read_only_settings(self) -> dict:
        found = {row[0]: (str(row[1]), int(row[2])) for row in self.rows(
            "SELECT name, value, readonly FROM system.settings WHERE name IN ('readonly', 'max_execution_time')")}
        guard = {}
        value, locked = found.get("readonly", ("0", 1))
        if value == "0" and not locked:
            guard["readonly"] = 2
        if not found.get("max_execution_time", ("0", 1))[1]:
            guard["max_execution_time"] = QUERY_TIMEOUT_S
        return guard

    def rows(self, sql) -> list[list]:
        """Rows of ``sql``: a statement, or a ``Query`` with settings of its own."""
        settings = {**sql.settings, **self._guard} if isinstance(sql, Query) else self._guard
        text = sql.sql if isinstance(sql, Query) else sql
        if settings:
            text += " SETTINGS " + ", ".join(f"{name} = {int(value)}" for name, value in settings.items())
        return [json.loads(line) for line in self._raw(text).splitlines() if line]

    def command(self, sql: str) -> None:
        self._writable()
        self._raw(sql)

    def _writable(self) -> None:
        if self.read_only:
            raise RuntimeError(f"a reader of {self.url} does not write")

    def insert(self, table: str, lines: list[str]) -> None:
        """Rows as JSONEachRow lines into ``table`` (database.table)."""
        self._writable()
        if not lines:
            return
        body = "\n".join(lines)
        if self._session is not None:
            self._raw(f"INSERT INTO {table} FORMAT JSONEachRow\n{body}")
            return
        try:
            self._client.raw_insert(table, insert_block=body.encode("utf-8"), fmt="JSONEachRow")
        except Exception as error:  # noqa: BLE001 - the driver's errors have no common base we can name
            raise _input_error(self.url, error) from None

    def _raw(self, sql: str) -> str:
        try:
            if self._session is not None:
                return self._session.query(sql, "JSONCompactEachRow").bytes().decode("utf-8")
            return self._client.raw_query(sql, fmt="JSONCompactEachRow").decode("utf-8")
        except Exception as error:  # noqa: BLE001 - chdb and clickhouse-connect raise their own types
            raise _input_error(self.url, error) from None

    def close(self) -> None:
        if self._session is not None:
            _release_chdb(self._session)
            self._session = None
        if self._client is not None:
            self._client.close()
            self._client = None


def connect(url: StoreURL, create: bool = False, read_only: bool = False) -> Engine:
    """An engine for ``url``. ``create``: make the chdb folder when missing (writers); readers need it to exist.
    ``read_only``: every statement runs read-only and with a server-side time limit (``Engine``)."""
    if url.scheme == "chdb":
        session = _open_chdb(url, create)
        try:
            return Engine(url, None, session, read_only)
        except BaseException:
            _release_chdb(session)
            raise
    try:
        import clickhouse_connect
    except ImportError:
        raise MissingExtra("clickhouse", "clickhouse-connect") from None
    # The driver logs each failure before raising it; the error raised here says it once, on one line.
    driver_log = logging.getLogger("clickhouse_connect")
    if not driver_log.handlers:
        driver_log.addHandler(logging.NullHandler())
    try:
        client = clickhouse_connect.get_client(
            host=url.host, port=url.port, username=url.user or "default", password=url.password,
            database=url.database, secure=url.secure, connect_timeout=CONNECT_TIMEOUT_S,
            send_receive_timeout=QUERY_TIMEOUT_S, autogenerate_session_id=False)
    except Exception as error:  # noqa: BLE001 - connection refused, TLS, authentication, unknown database
        raise ConnectionFailed(f"cannot use ClickHouse at {url.host}:{url.port} ({_reason(error)}); check the host, "
                               "port (HTTP: 8123, HTTPS: 8443 with secure=1), user and database in --store") from None
    try:
        return Engine(url, client, None, read_only)
    except BaseException:
        client.close()
        raise


# chdb runs ClickHouse inside this process, on one data folder at a time: every engine opened on
# that folder shares one session, closed when the last engine is.
_chdb_session: Optional[list] = None  # [folder, session, engines open]


def _open_chdb(url: StoreURL, create: bool):
    global _chdb_session
    folder = os.path.realpath(url.path)
    if _chdb_session is not None:
        if _chdb_session[0] != folder:
            raise InputError(f"chdb:{url.path}: this process has chdb:{_chdb_session[0]} open, and chdb opens one "
                             "folder per process")
        _chdb_session[2] += 1
        return _chdb_session[1]
    if not Path(folder).is_dir():
        if not create:
            raise InputError(f"no chdb store at {url.path}: load one with `takealook traces import FILE --store "
                             f"chdb:{url.path}`, or point --store at the folder")
        Path(folder).mkdir(parents=True, exist_ok=True)
    try:
        from chdb import session as chdb_session
    except ImportError:
        raise MissingExtra("clickhouse", "chdb") from None
    try:
        opened = chdb_session.Session(folder)
    except Exception as error:  # noqa: BLE001 - a folder that is not chdb's, or locked by another process
        raise InputError(f"cannot open chdb:{url.path}: {_reason(error)}") from None
    _chdb_session = [folder, opened, 1]
    return opened


def _release_chdb(opened) -> None:
    global _chdb_session
    if _chdb_session is None or _chdb_session[1] is not opened:
        return
    _chdb_session[2] -= 1
    if _chdb_session[2] <= 0:
        _chdb_session = None
        opened.close()


@dataclass(frozen=True)
class Layout:
    """The columns of a spans table (name -> type), as ClickHouse describes them."""

    columns: dict

    def has(self, name: str) -> bool:
        return name in self.columns

    def column(self, name: str, empty: str) -> str:
        """``name`` as SQL when the table has it, else the expression ``empty``."""
        return f"`{name}`" if name in self.columns else empty


def table_layout(engine: Engine, url: StoreURL) -> Layout:
    """The table's layout; InputError when it is missing or is not in the exporter's layout."""
    if not exists(engine, url):
        raise InputError(f"no table {url.qualified} in {url}: point the Collector's clickhouse exporter at it "
                         "(traces_table_name), or name the table with ?table=NAME")
    described = engine.rows(f"DESCRIBE TABLE {url.qualified}")
    columns = {row[0]: row[1] for row in described}
    missing = [name for name in REQUIRED if name not in columns]
    if missing:
        raise InputError(f"{url.qualified} in {url} is not a spans table in the clickhouse exporter's layout: no "
                         f"column {', '.join(missing)}")
    for name, prefix in REQUIRED.items():
        kind = re.sub(r"^(LowCardinality|Nullable)\((.*)\)$", r"\2", columns[name])
        if prefix and not kind.startswith(prefix):
            raise InputError(f"{url.qualified} in {url}: column {name} is {columns[name]}, not {prefix.rstrip('(')}"
                             " as the clickhouse exporter writes it (the JSON-typed layout is not read yet)")
    return Layout(columns)


def exists(engine: Engine, url: StoreURL) -> bool:
    return bool(engine.rows(f"EXISTS TABLE {url.qualified}")[0][0])


def literal(value: str) -> str:
    """A string as a ClickHouse literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def ns_literal(ns: int) -> str:
    """A time in nanoseconds as a DateTime64(9) expression."""
    return f"fromUnixTimestamp64Nano(toInt64({int(ns)}))"


def _input_error(url: StoreURL, error: Exception) -> InputError:
    return InputError(f"ClickHouse at {url} answered: {_reason(error)}")


def _reason(error: Exception) -> str:
    """The first line of a driver's message, without ClickHouse's stack trace or the server's version."""
    text = str(error).strip() or type(error).__name__
    code = re.search(r"DB::Exception: (.*?)(?: \(version [^)]*\))?(?: \([A-Z_]+\))?(?:\.|$)", text, re.S)
    if code:
        text = code.group(1)
    refused = re.search(r"Connection refused|Name or service not known|timed out|Failed to resolve", text, re.I)
    if refused:
        text = refused.group(0).lower()
    return " ".join(text.split())[:300]
