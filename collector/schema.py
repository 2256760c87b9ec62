"""The span store's SQLite schema, its version, and how connections are opened.

One SQLite file in WAL mode (readers never wait for the writer and the writer
never waits for readers). ``PRAGMA user_version`` holds ``SCHEMA_VERSION`` and
``PRAGMA application_id`` marks the file as a takealook store, so a reader can
tell "not a store", "a store from a newer takealook" and "an empty store" apart.

Tables:
- ``traces``: one row per trace, numbered in arrival order (``tkey``), with
  its first start, last end, the services it touches and the server endpoints
  (service, route) in it, maintained at ingest, so time windows, filters and
  retention work on whole traces without scanning spans. ``services`` and
  ``endpoints`` are newline-delimited lists with a newline at both ends
  (``"\\ngateway\\norders\\n"``, ``"\\norders\\t/api/orders/<id>\\n"``) so
  ``instr()`` finds an exact item. ``load`` is the run label of a load test
  whose requests were marked (``takealook.loadmark``), NULL for real traffic.
- ``spans``: one row per span, keyed by its trace's ``tkey``: ids, name, kind
  and status (as OTLP enum numbers), times, events and links as JSON text
  (NULL when empty, like the status message), and references to a
  deduplicated ``attrsets`` row (the span's attributes as JSON text plus the
  typed semantic-convention columns of ``model.Span``), a deduplicated
  ``resources`` row (every span of one process has the same resource; the
  service name is the resource's) and a ``scopes`` row (the instrumentation
  library). Small rows read fast: a report reads a million of them.
- ``metric_points``: histogram data points (``model.MetricPoint``).

Indexes are few on purpose: each one costs ingest time, and an index on a
random key (a trace id, a hash) dirties a random page per insert, a cost that
grows with the store. So spans are indexed by ``(tkey, span_id)``: new traces
get the highest keys and their spans land at the end of the table; only the
traces table's ``trace_id`` index takes random inserts, once per trace.
``(tkey, span_id)`` is the spans table's primary key (``WITHOUT ROWID``: the
table is that one B-tree, so an insert writes one tree, not a table and an
index, and a trace's spans are read from adjacent pages); it makes re-sent
and re-imported spans harmless. Stores created before this layout (a rowid
table with a unique index on the same columns) have the same columns and
are read and written the same way.

Versions: 1 had no ``traces.load``; a writer that opens a version 1 store adds
the column (NULL: everything stored before was real traffic, as far as anyone
can tell) and sets version 2; a reader of a version 1 store sees no load
traffic. Attribute sets are deduplicated by the writer's memory (a restarted
writer may store a set twice, which readers do not notice).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from takealook.errors import InputError

SCHEMA_VERSION = 2
# "TkLk": marks the file as a takealook store (PRAGMA application_id).
APPLICATION_ID = 0x546B4C6B

# Columns of a span row as stored. Attribute sets live in ``attrsets``: the
# spans of one endpoint repeat the same statement, route and peer, so a span
# row stays small and the typed semantic-convention columns are computed once
# per distinct set.
SPAN_COLUMNS = (
    "tkey", "span_id", "parent_span_id", "name", "kind", "start_ns", "duration_ns",
    "status", "status_message", "attrs_id", "resource_id", "scope_id", "events", "links",
)
ATTRSET_COLUMNS = (
    "id", "attributes", "http_method", "http_route", "http_status", "url_path", "url_full",
    "server_address", "db_system", "db_name", "db_statement", "db_fingerprint",
)
# What readers select: span rows without a join (readers cache attribute sets,
# which repeat), and attribute sets in model.Span's field order.
SPAN_SELECT = "SELECT " + ", ".join(SPAN_COLUMNS) + " FROM spans"
# The same with the trace id in the first column, for spans read without their trace.
SPAN_SELECT_WITH_TRACE_ID = ("SELECT t.trace_id, " + ", ".join(f"s.{c}" for c in SPAN_COLUMNS[1:])
                             + " FROM spans AS s JOIN traces AS t ON t.tkey = s.tkey")
ATTRSET_SELECT = ("SELECT id, http_method, http_route, http_status, url_path, url_full, server_address, "
                  "db_system, db_name, db_statement, db_fingerprint, attributes FROM attrsets")

METRIC_COLUMNS = (
    "service", "name", "unit", "temporality", "start_ns", "time_ns", "http_method", "http_route",
    "http_status", "count", "sum", "bounds", "bucket_counts", "attributes", "resource_id",
)

DDL = """
CREATE TABLE IF NOT EXISTS resources (
    id          INTEGER PRIMARY KEY,
    digest      TEXT NOT NULL UNIQUE,
    service     TEXT NOT NULL,
    attributes  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS attrsets (
    id              INTEGER PRIMARY KEY,
    attributes      TEXT NOT NULL,
    http_method     TEXT,
    http_route      TEXT,
    http_status     INTEGER,
    url_path        TEXT,
    url_full        TEXT,
    server_address  TEXT,
    db_system       TEXT,
    db_name         TEXT,
    db_statement    TEXT,
    db_fingerprint  TEXT
);
CREATE TABLE IF NOT EXISTS scopes (
    id    INTEGER PRIMARY KEY,
    name  TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS traces (
    tkey         INTEGER PRIMARY KEY,
    trace_id     TEXT NOT NULL UNIQUE,
    start_ns     INTEGER NOT NULL,
    end_ns       INTEGER NOT NULL,
    services     TEXT NOT NULL,
    endpoints    TEXT NOT NULL,
    received_ns  INTEGER NOT NULL,
    load         TEXT
);
CREATE INDEX IF NOT EXISTS traces_by_start ON traces (start_ns);
CREATE TABLE IF NOT EXISTS spans (
    tkey            INTEGER NOT NULL,
    span_id         TEXT NOT NULL,
    parent_span_id  TEXT,
    name            TEXT NOT NULL,
    kind            INTEGER NOT NULL,
    start_ns        INTEGER NOT NULL,
    duration_ns     INTEGER NOT NULL,
    status          INTEGER NOT NULL,
    status_message  TEXT,
    attrs_id        INTEGER NOT NULL,
    resource_id     INTEGER NOT NULL,
    scope_id        INTEGER NOT NULL,
    events          TEXT,
    links           TEXT,
    PRIMARY KEY (tkey, span_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS spans_roots_by_start ON spans (start_ns) WHERE parent_span_id IS NULL;
CREATE TABLE IF NOT EXISTS metric_points (
    service        TEXT NOT NULL,
    name           TEXT NOT NULL,
    unit           TEXT NOT NULL,
    temporality    INTEGER NOT NULL,
    start_ns       INTEGER NOT NULL,
    time_ns        INTEGER NOT NULL,
    http_method    TEXT,
    http_route     TEXT,
    http_status    INTEGER,
    count          INTEGER NOT NULL,
    sum            REAL NOT NULL,
    bounds         TEXT NOT NULL,
    bucket_counts  TEXT NOT NULL,
    attributes     TEXT NOT NULL,
    resource_id    INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS metric_points_key
    ON metric_points (name, time_ns, service, start_ns, resource_id, attributes);
"""

TEMPORALITIES = ("unspecified", "delta", "cumulative")


def _uri(path: Path, mode: str) -> str:
    return f"file:{quote(str(path.resolve()))}?mode={mode}"


def connect_writer(path: Path, synchronous: str = "FULL") -> sqlite3.Connection:
    """Open (creating if needed) the store for the one writer; raise InputError if unusable.

    ``synchronous=FULL`` fsyncs the WAL at every commit, so an acknowledged batch
    survives a power loss as well as ``kill -9``; NORMAL survives only a process
    crash. The receiver commits many requests together, so FULL costs one fsync
    per group, not per request (see docs/collector.md).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(_uri(path, "rwc"), uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        version = _check_version(conn, path)
        if version == 0:
            _create(conn)
        elif version < SCHEMA_VERSION:
            _migrate(conn)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: keeps the trace-id index hot
        # After a checkpoint the WAL file is cut back to this, so it does not
        # keep the size of its busiest minute.
        conn.execute("PRAGMA journal_size_limit = 67108864")
        conn.execute("PRAGMA temp_store = MEMORY")
    except sqlite3.Error as error:
        raise InputError(f"cannot write the span store {path}: {error}; pick another --store") from error
    except OSError as error:
        raise InputError(
            f"cannot write the span store {path}: {error.strerror or error}; pick another --store"
        ) from error
    return conn


def _create(conn: sqlite3.Connection) -> None:
    # auto_vacuum must be set before the first table exists; INCREMENTAL lets
    # retention give freed pages back to the file system.
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] == 0:  # another writer may have won
            for statement in DDL.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


# Each step takes a store from the version before it to its own; run in order, in one transaction.
_MIGRATIONS = {
    2: ("ALTER TABLE traces ADD COLUMN load TEXT",),
}


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]  # another writer may have migrated it
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[target]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def connect_reader(path: Path) -> sqlite3.Connection:
    """Open an existing store read-only; raise InputError if it is missing, foreign or newer."""
    path = Path(path)
    if not path.exists():
        raise InputError(
            f"no span store at {path}: run `takealook collect` or `takealook traces import FILE` first, "
            "or point --store (or TAKEALOOK_STORE) at one"
        )
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a span store; point --store at the spans.db file")
    try:
        conn = sqlite3.connect(_uri(path, "ro"), uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA mmap_size = 268435456")
        version = _check_version(conn, path)
    except sqlite3.Error as error:
        raise InputError(f"cannot read the span store {path}: {error}") from error
    if version == 0:
        conn.close()
        raise InputError(f"{path} is not a takealook span store (or was never written to)")
    return conn


def _check_version(conn: sqlite3.Connection, path: Path) -> int:
    """The file's schema version: 0 for a new empty file; InputError for foreign or newer files."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    if version == 0 and app_id == 0:
        has_tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if has_tables:
            raise InputError(f"{path} is an SQLite file but not a takealook span store; pick another --store")
        return 0
    if app_id != APPLICATION_ID:
        raise InputError(f"{path} is an SQLite file but not a takealook span store; pick another --store")
    if version > SCHEMA_VERSION:
        raise InputError(
            f"the span store {path} has schema version {version}, newer than this takealook reads "
            f"({SCHEMA_VERSION}): upgrade takealook"
        )
    return version
