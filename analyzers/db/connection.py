"""Read-only sessions on a user's PostgreSQL, and the DSN shown to people.

``connect(dsn, options)`` opens a psycopg 3 connection that

- is read-only twice over: ``default_transaction_read_only`` is on for the
  session, and every transaction we open is ``BEGIN READ ONLY`` (ours, tagged,
  ended by ROLLBACK: there is never anything to commit);
- has ``statement_timeout``, ``lock_timeout`` and
  ``idle_in_transaction_session_timeout`` set, and ``application_name=takealook``;
- tags every statement with ``/* takealook */`` (``Session.query`` adds it), so
  the pg_stat_statements miner skips what we ran ourselves;
- never prepares statements behind our back (psycopg's auto-prepare is off), so
  our own PREPAREs are the only ones in the session.

The DSN follows psql: a ``key=value`` string or a ``postgresql://`` URI; what it
leaves out comes from libpq's ``PGHOST``, ``PGPORT``, ``PGUSER``,
``PGDATABASE``, ``PGPASSWORD``, ``PGSERVICE`` and ``~/.pgpass``. An empty DSN
is all libpq defaults. Passwords never leave this module: ``mask_dsn`` and
``mask_secrets`` hide them in every display and error message.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import unquote

import psycopg
from psycopg.rows import dict_row

from takealook.errors import ConnectionFailed, InputError, UsageError
from takealook.analyzers.db.options import ConnectOptions

TAG = "/* takealook */"
MASK = "****"

# password=... in a key/value DSN (quoted or not); user:password@ and ?password= in a URI.
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:\\.|[^'\\])*'|\S*)", re.IGNORECASE)
_URI_USERINFO = re.compile(r"^(postgres(?:ql)?://[^/?#@:]*:)([^@/?#]*)(@)", re.IGNORECASE)
_URI_PARAM = re.compile(r"([?&]password=)([^&#]*)", re.IGNORECASE)
_NOT_POSTGRES = ("invalid response to SSL negotiation", "expected authentication request",
                 "server closed the connection unexpectedly", "unsupported frontend protocol",
                 "received invalid response")


def mask_dsn(dsn: str | None) -> str:
    """The DSN as shown to people: any password replaced by ``****``."""
    if not dsn or not dsn.strip():
        return _describe_environment()
    text = dsn.strip()
    if re.match(r"postgres(ql)?://", text, re.IGNORECASE):
        text = _URI_USERINFO.sub(lambda m: m.group(1) + MASK + m.group(3), text)
        return _URI_PARAM.sub(lambda m: m.group(1) + MASK, text)
    return _KV_PASSWORD.sub(lambda m: m.group(1) + MASK, text)


def _describe_environment() -> str:
    keys = {"PGSERVICE": "service", "PGHOST": "host", "PGHOSTADDR": "hostaddr", "PGPORT": "port",
            "PGDATABASE": "dbname", "PGUSER": "user"}
    parts = [f"{name}={os.environ[key]}" for key, name in keys.items() if os.environ.get(key)]
    return "libpq defaults" + (f" ({' '.join(parts)})" if parts else "")


def _passwords(dsn: str | None) -> list[str]:
    found = []
    for pattern, group in ((_KV_PASSWORD, 2), (_URI_USERINFO, 2), (_URI_PARAM, 2)):
        for match in pattern.finditer(dsn or ""):
            value = match.group(group)
            if value.startswith("'"):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            for form in {value, unquote(value)}:
                if form:
                    found.append(form)
    if os.environ.get("PGPASSWORD"):
        found.append(os.environ["PGPASSWORD"])
    return found


def mask_secrets(text: str, dsn: str | None) -> str:
    """``text`` with every password of ``dsn`` (and $PGPASSWORD) replaced by ``****``."""
    for secret in sorted(set(_passwords(dsn)), key=len, reverse=True):
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", MASK, text)
    return text


def one_line(error: BaseException | str) -> str:
    """A driver message on one line: libpq's tab-indented hints joined with '; '."""
    text = str(error).strip()
    if text.startswith("connection failed: "):
        text = text[len("connection failed: "):]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines)


class Session:
    """One read-only connection and what we learnt about the server on opening it."""

    def __init__(self, conn: psycopg.Connection, display: str, raw_dsn: str | None):
        self.conn = conn
        self.display = display
        self._raw_dsn = raw_dsn
        self._in_transaction = False
        info = self.query_one(_SERVER_SQL)
        self.server_version_num: int = info["server_version_num"]
        self.server_version: str = info["server_version"]
        self.database: str = info["database"]
        self.user: str = info["user"]
        self.is_superuser: bool = bool(info["is_superuser"])
        self.end()

    # -- running statements
    def query(self, sql: str, params: Any = ()) -> list[dict]:
        """Run one tagged statement of ours inside the current read-only transaction; rows as dicts.

        Parameters are always bound (so ``%%`` is a literal ``%`` in our SQL).
        On a database error the transaction is rolled back (so the next call
        works) and the error is raised for the caller to turn into a finding.
        """
        return self._run(f"{TAG} {sql}", params)

    def raw(self, sql: str) -> list[dict]:
        """Run a statement that embeds user SQL (an EXPLAIN): no placeholder processing at all."""
        return self._run(f"{TAG} {sql}", None)

    def _run(self, sql: str, params: Any) -> list[dict]:
        try:
            self._begin()
            with self.conn.cursor(row_factory=dict_row) as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        except psycopg.Error:
            self._rollback_quietly()
            raise

    def _begin(self) -> None:
        # Our own BEGIN/ROLLBACK, tagged, rather than the driver's: untagged ones would be counted
        # in pg_stat_statements together with the application's.
        if not self._in_transaction:
            self.conn.execute(f"{TAG} BEGIN READ ONLY", prepare=False)
            self._in_transaction = True

    def query_one(self, sql: str, params: Any = ()) -> dict | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def script(self, statements: list[str]) -> list[list[dict]]:
        """Several statements, each tagged, no parameters, one round trip; the rows of each.

        pg_stat_statements records each statement of a multi-statement string
        by its own text, so each needs its own tag. Each goes on its own line, so
        a ``--`` comment left in one can never swallow the ones after it.
        """
        try:
            self._begin()
            results = []
            with self.conn.cursor(row_factory=dict_row) as cur:
                cur.execute(";\n".join(f"{TAG} {sql}" for sql in statements), prepare=False)
                while True:
                    results.append(cur.fetchall() if cur.description else [])
                    if not cur.nextset():
                        break
            return results
        except psycopg.Error:
            self._rollback_quietly()
            raise

    def end(self) -> None:
        """Close the read-only transaction: a long one would hold back vacuum on a live database."""
        self._rollback_quietly()

    def close(self) -> None:
        try:
            self.conn.close()
        except psycopg.Error:
            pass

    def _rollback_quietly(self) -> None:
        if not self._in_transaction:
            return
        self._in_transaction = False
        try:
            self.conn.execute(f"{TAG} ROLLBACK", prepare=False)
        except psycopg.Error:
            pass

    def describe_error(self, error: BaseException) -> str:
        return mask_secrets(one_line(error), self._raw_dsn)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_SERVER_SQL = """
SELECT current_setting('server_version_num')::int AS server_version_num,
       current_setting('server_version') AS server_version,
       current_database() AS database, current_user AS "user",
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS is_superuser
"""

_SETUP_SQL = """
SELECT set_config('default_transaction_read_only', 'on', false),
       set_config('statement_timeout', %s, false),
       set_config('lock_timeout', %s, false),
       set_config('idle_in_transaction_session_timeout', '300s', false)
"""


def connect(dsn: str | None, options: ConnectOptions | None = None) -> Session:
    """A read-only ``Session`` on ``dsn`` (empty: libpq's PG* environment).

    Raises ``ConnectionFailed`` (unreachable, refused, wrong password, not
    PostgreSQL), ``UsageError`` (a DSN that does not parse) or ``InputError``
    (a server older than PostgreSQL 13); messages name the masked DSN.
    """
    options = options or ConnectOptions()
    raw = (dsn or "").strip()
    display = mask_dsn(raw)
    # autocommit: the Session opens its own (tagged) read-only transactions.
    kwargs: dict[str, Any] = {"application_name": "takealook", "autocommit": True}
    try:
        given = psycopg.conninfo.conninfo_to_dict(raw)
    except psycopg.ProgrammingError as error:
        raise UsageError(f"invalid DSN {display}: {mask_secrets(one_line(error), raw)}") from None
    if "connect_timeout" not in given and not os.environ.get("PGCONNECT_TIMEOUT"):
        kwargs["connect_timeout"] = options.connect_timeout_s
    try:
        conn = psycopg.connect(raw, **kwargs)
    except psycopg.ProgrammingError as error:
        raise UsageError(f"invalid DSN {display}: {mask_secrets(one_line(error), raw)}") from None
    except psycopg.Error as error:
        raise _connection_failed(error, display, raw) from None
    if not raw:
        display = _display_from_connection(conn)
    conn.prepare_threshold = None
    try:
        _untracked(conn)
        with conn.cursor() as cur:  # outside a transaction block: the settings hold for the session
            cur.execute(f"{TAG} {_SETUP_SQL}", (f"{options.statement_timeout_ms}ms", f"{options.lock_timeout_ms}ms"))
        session = Session(conn, display, raw)
    except psycopg.Error as error:
        conn.close()
        raise InputError(f"{display}: cannot read the server's settings "
                         f"({mask_secrets(one_line(error), raw)})") from None
    if session.server_version_num < 130000:
        session.close()
        raise InputError(f"{display}: PostgreSQL {session.server_version} is too old; "
                         "takealook audits PostgreSQL 13 or newer")
    return session


def _untracked(conn: psycopg.Connection) -> None:
    """Keep our statements out of pg_stat_statements when the role may (superuser, or PG15+'s
    GRANT SET ON PARAMETER pg_stat_statements.track): an audit's thousands of EXPLAINs would
    otherwise take entries that pg_stat_statements.max then evicts the application's for.
    Without the privilege they are recorded, tagged, and skipped by the miner."""
    try:
        conn.execute(f"{TAG} SELECT set_config('pg_stat_statements.track', 'none', false)", prepare=False)
    except psycopg.Error:
        pass


def _connection_failed(error: BaseException, display: str, raw: str) -> ConnectionFailed:
    message = mask_secrets(one_line(error), raw)
    if any(marker in message for marker in _NOT_POSTGRES):
        return ConnectionFailed(f"{display}: cannot connect, is this a PostgreSQL server? ({message})")
    if "password authentication failed" in message or "no password supplied" in message:
        return ConnectionFailed(f"{display}: {message} (check the password in the DSN, PGPASSWORD or ~/.pgpass)")
    return ConnectionFailed(f"{display}: cannot connect: {message}")


def _display_from_connection(conn: psycopg.Connection) -> str:
    """For a DSN from the environment: what libpq actually used (it never returns the password)."""
    params = conn.info.get_parameters()
    keys = ("host", "port", "dbname", "user")
    return " ".join(f"{key}={params[key]}" for key in keys if params.get(key))
