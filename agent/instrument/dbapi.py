"""DB spans for psycopg2 and psycopg 3: one CLIENT span per statement, text without values.

psycopg 3: ``Cursor.execute``/``executemany`` (and the async and server-side
cursors) are Python methods, patched on the classes, so every connection is
covered, those opened before ``start()`` and Django's own cursor classes
(which subclass psycopg's) included.

psycopg2: cursors are C types whose methods cannot be patched. Connections
stay genuine ``psycopg2.extensions.connection`` objects (wrapping them in a
proxy breaks ``psycopg2.extras.register_default_jsonb(conn)`` and Django with
it: OpenTelemetry contrib issue 1774); instead ``psycopg2.connect`` passes a
``connection_factory`` subclass whose ``cursor()`` always gets a traced cursor
class (a subclass of whatever cursor factory the caller asked for), and a traced
``cursor_factory`` (a subclass of the one asked for, or of psycopg2's cursor), so
a plain ``cursor()`` is psycopg2's own call. Connections that exist when the
agent starts get a traced ``cursor_factory`` (found by a one-time scan of live
objects); a cursor asked from them with an explicit ``cursor_factory=`` is not
traced.

Connecting is a CLIENT span too, ``connect <database>`` (``db.operation.name``
= connect, no statement), around ``psycopg2.connect`` and psycopg 3's
``Connection.connect``/``AsyncConnection.connect`` (``psycopg.connect`` is the
same function): Django's default ``CONN_MAX_AGE = 0`` connects in every
request, and that time would otherwise look like the app's own code. A pool
that connects in a background thread makes no span (there is no request).

A statement outside any span (startup checks, migrations run at boot) makes no
span: the agent traces requests, and orphan DB spans would only be noise.
Attributes: ``db.system``/``db.system.name`` = postgresql, ``db.namespace``,
``db.query.text`` (scrubbed, see ``sqlscrub``), ``db.operation.name``,
``server.address``/``server.port``. With ``TAKEALOOK_SQLCOMMENTER=true`` the
statement sent carries ``/*traceparent='...'*/`` (see settings for why it is off
by default).
"""

from __future__ import annotations

import functools
import gc
import logging
import time
import weakref

from takealook.agent.hooks import when_imported
from takealook.agent.instrument.common import current_span
from takealook.agent.sqlscrub import scrub
from takealook.agent.otlp import Record
from takealook.agent.tracer import LeanSpan, SharedAttributes

log = logging.getLogger("takealook.agent")

_agent = None
_CLIENT = 3
_time_ns = time.time_ns
_new_tuple = tuple.__new__  # a Record from its fields in one call (its generated __new__ is Python)


def install_psycopg2(agent) -> None:
    global _agent
    _agent = agent
    when_imported("psycopg2", _patch_psycopg2)


def install_psycopg(agent) -> None:
    global _agent
    _agent = agent
    when_imported("psycopg", _patch_psycopg)


# --------------------------------------------------------------------------- spans


def _start(query, conninfo_of, cursor):
    """A DB span under the current span, or None (no parent, not sampled, or failure)."""
    parent = current_span()
    if not isinstance(parent, LeanSpan) and not parent.get_span_context().is_valid:
        return None
    try:
        info = conninfo_of(cursor)
        # A statement's name and attributes, made once per text and connection: the app runs the same
        # few statements over and over (the texts are its own literals, the same objects each time).
        known = _statements.get((query, info)) if type(query) is str else None
        if known is None:
            known = _describe(query, info, cursor)
        agent = _agent
        shared = known[1]
        span = agent.provider.make_span(known[0], parent, _CLIENT, shared.attributes.copy(), agent.scope)
        if isinstance(span, LeanSpan):
            span.shared = shared  # unchanged at its end, it is written with the set's encoded block (pipeline.py)
            return span
        return None
    except Exception:
        log.debug("takealook: could not start a DB span", exc_info=True)
        return None


_statements: dict = {}
_STATEMENTS_MAX = 1024  # entries; beyond, the cache starts over (the scrub cache behind it is kept)


def _describe(query, info, cursor) -> tuple:
    """(span name, shared attributes) of a statement on a connection; cached when the text is a string."""
    key = (query, info) if type(query) is str else None  # bytes and psycopg's sql.Composed: not kept
    if isinstance(query, bytes):
        query = query.decode("utf-8", "replace")
    elif not isinstance(query, str):
        query = query.as_string(cursor)
    text, operation = scrub(query)
    dbname, host, port = info
    attributes = {"db.system": "postgresql", "db.system.name": "postgresql", "db.query.text": text,
                  "db.namespace": dbname or "", "db.operation.name": operation}
    if host:
        attributes["server.address"] = host
    if port:
        attributes["server.port"] = port
    if _agent.settings.old_db_names:
        attributes.update({"db.statement": text, "db.name": dbname or ""})
    name = f"{operation} {dbname}" if operation and dbname else (operation or "postgresql")
    known = (name, SharedAttributes(attributes))
    if key is not None and len(query) <= _CACHED_TEXT_MAX:
        if len(_statements) >= _STATEMENTS_MAX:
            _statements.clear()
        _statements[key] = known
    return known


_CACHED_TEXT_MAX = 8192  # characters: a huge text (a bulk INSERT of literals) is not kept


def _start_connect():
    """A ``connect`` span under the current span, or None (no request around it, or a failure)."""
    agent = _agent
    parent = current_span()
    if not isinstance(parent, LeanSpan) and not parent.get_span_context().is_valid:
        return None
    try:
        attributes = {"db.system": "postgresql", "db.system.name": "postgresql", "db.operation.name": "connect"}
        span = agent.provider.make_span("connect", parent, _CLIENT, attributes, agent.scope)
        return span if isinstance(span, LeanSpan) else None
    except Exception:
        log.debug("takealook: could not start a connect span", exc_info=True)
        return None


def _end_connect(span, connection, error) -> None:
    """Name the span by the database connected to (asked of the new connection), and end it."""
    try:
        if connection is not None:
            dbname, host, port = _connection_info(connection)
            if dbname:
                span.name = f"connect {dbname}"
                span.attributes["db.namespace"] = dbname
                if _agent.settings.old_db_names:
                    span.attributes["db.name"] = dbname
            if host:
                span.attributes["server.address"] = host
            if port:
                span.attributes["server.port"] = port
        _end(span, error)
    except Exception:
        log.debug("takealook: could not end a connect span", exc_info=True)


def _traced_connect(connect):
    """``connect`` (any signature) inside a connect span."""
    @functools.wraps(connect)
    def traced(*args, **kwargs):
        span = _start_connect()
        if span is None:
            return connect(*args, **kwargs)
        try:
            connection = connect(*args, **kwargs)
        except BaseException as error:
            _end_connect(span, None, error)
            raise
        _end_connect(span, connection, None)
        return connection

    traced._takealook = True
    return traced


def _traced_connect_async(connect):
    @functools.wraps(connect)
    async def traced(*args, **kwargs):
        span = _start_connect()
        if span is None:
            return await connect(*args, **kwargs)
        try:
            connection = await connect(*args, **kwargs)
        except BaseException as error:
            _end_connect(span, None, error)
            raise
        _end_connect(span, connection, None)
        return connection

    traced._takealook = True
    return traced


def _end(span, error) -> None:
    if error is not None:
        span.fail(error)
    span.end()


def _comment(query, span):
    """sqlcommenter: the statement sent carries the span's traceparent."""
    if span is not None and isinstance(query, str) and _agent.settings.sqlcommenter:
        return f"{query} /*traceparent='00-{span.trace_id:032x}-{span.span_id:016x}-01'*/"
    return query


def _traced(method, conninfo_of, batch=False):
    @functools.wraps(method)
    def traced(self, query, *args, **kwargs):
        parent = current_span()
        agent = _agent
        if type(parent) is LeanSpan and agent is not None and agent.provider.inline_children \
                and not (batch and args) and not agent.settings.sqlcommenter:
            # The common statement: its span is never seen by the app, so it is no span object but a
            # record, made when the statement is done, of its statement's name and shared attributes.
            try:
                info = conninfo_of(self)
                known = _statements.get((query, info)) if type(query) is str else None
                if known is None:
                    known = _describe(query, info, self)
            except Exception:
                log.debug("takealook: could not describe a statement", exc_info=True)
                return method(self, query, *args, **kwargs)
            start = _time_ns()
            try:
                result = method(self, query, *args, **kwargs)
            except BaseException as error:
                _failed(known, parent, start, error)
                raise
            try:
                state = parent.trace_state
                agent.provider.on_end(_new_tuple(Record, (
                    parent.trace_id, agent.provider.span_bits(64) or 1, parent.span_id, False, known[0], _CLIENT,
                    start, _time_ns(), 0, "", known[1].attributes, None, None, state.to_header() if state else "",
                    agent.scope[0], agent.scope[1], known[1], None)))
            except Exception:
                log.debug("takealook: could not record a DB span", exc_info=True)
            return result
        span = _start(query, conninfo_of, self)
        if span is None:
            return method(self, query, *args, **kwargs)
        if batch and args:
            try:
                span.attributes["db.operation.batch.size"] = len(args[0])
            except TypeError:
                pass
        try:
            result = method(self, _comment(query, span) if _agent.settings.sqlcommenter else query, *args, **kwargs)
        except BaseException as error:
            _end(span, error)
            raise
        span.end()
        return result

    traced._takealook = True
    return traced


def _failed(known: tuple, parent: LeanSpan, start: int, error: BaseException) -> None:
    """The span of a statement that failed, as a LeanSpan (its exception event, status and error type)."""
    try:
        agent = _agent
        span = agent.provider.make_span(known[0], parent, _CLIENT, known[1].attributes.copy(), agent.scope,
                                        start_time=start)
        if isinstance(span, LeanSpan):
            span.shared = known[1]
            _end(span, error)
    except Exception:
        log.debug("takealook: could not record a failed DB span", exc_info=True)


def _traced_async(method, conninfo_of):
    @functools.wraps(method)
    async def traced(self, query, *args, **kwargs):
        span = _start(query, conninfo_of, self)
        if span is None:
            return await method(self, query, *args, **kwargs)
        try:
            result = await method(self, _comment(query, span), *args, **kwargs)
        except BaseException as error:
            _end(span, error)
            raise
        _end(span, None)
        return result

    traced._takealook = True
    return traced


# --------------------------------------------------------------------------- psycopg 3


_INFO: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _psycopg_info(cursor):
    """(dbname, host, port) of the cursor's connection, asked of libpq once per connection.

    Kept on the connection object when it takes attributes (psycopg 3's, and psycopg2's made
    through our connection factory): a weak-key dictionary costs a weakref at every lookup."""
    connection = cursor.connection
    found = getattr(connection, "_takealook_info", None)
    return found if found is not None else _connection_info(connection)


def _connection_info(connection):
    """(dbname, host, port) of a connection (a new one: its connect span is named by it)."""
    found = getattr(connection, "_takealook_info", None)
    if found is None:
        found = _INFO.get(connection)
        if found is None:
            info = connection.info
            found = (info.dbname, info.host, int(info.port) if info.port else None)
            try:
                connection._takealook_info = found
            except AttributeError:  # a C connection type without __dict__
                _INFO[connection] = found
    return found


def _patch_psycopg(module) -> None:
    _patch_psycopg_connect(module)
    classes = [getattr(module, name, None) for name in ("Cursor", "ServerCursor", "AsyncCursor", "AsyncServerCursor")]
    for cls in filter(None, classes):
        for name in ("execute", "executemany"):
            method = cls.__dict__.get(name)
            if method is None or getattr(method, "_takealook", False):
                continue
            is_async = cls.__name__.startswith("Async")
            wrapped = _traced_async(method, _psycopg_info) if is_async else \
                _traced(method, _psycopg_info, batch=(name == "executemany"))
            setattr(cls, name, wrapped)


def _patch_psycopg_connect(module) -> None:
    """``Connection.connect`` and ``AsyncConnection.connect`` (classmethods), and ``psycopg.connect``."""
    for name, wrap in (("Connection", _traced_connect), ("AsyncConnection", _traced_connect_async)):
        cls = getattr(module, name, None)
        method = cls.__dict__.get("connect") if cls is not None else None
        if not isinstance(method, classmethod) or getattr(method.__func__, "_takealook", False):
            continue
        cls.connect = classmethod(wrap(method.__func__))
    connection = getattr(module, "Connection", None)
    if connection is not None and getattr(module, "connect", None) is not None \
            and not getattr(module.connect, "_takealook", False):
        module.connect = connection.connect  # the module's name for it was bound at import


# --------------------------------------------------------------------------- psycopg2


_psycopg2_info = _psycopg_info  # the same questions of psycopg2's connection.info


@functools.lru_cache(maxsize=64)
def _traced_cursor_class(base):
    if getattr(base, "_takealook", False):
        return base
    namespace = {
        "execute": _traced(base.execute, _psycopg2_info),
        "executemany": _traced(base.executemany, _psycopg2_info, batch=True),
        "_takealook": True,
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
    }
    return type(base.__name__, (base,), namespace)


@functools.lru_cache(maxsize=64)
def _traced_connection_class(base):
    if getattr(base, "_takealook", False):
        return base
    import psycopg2.extensions

    def cursor(self, *args, **kwargs):
        if not kwargs and getattr(self.cursor_factory, "_takealook", False):  # the connection's own, traced
            return base.cursor(self, *args)
        factory = kwargs.get("cursor_factory") or self.cursor_factory or psycopg2.extensions.cursor
        kwargs["cursor_factory"] = _traced_cursor_class(factory)
        return base.cursor(self, *args, **kwargs)

    namespace = {"cursor": cursor, "_takealook": True, "__module__": base.__module__,
                 "__qualname__": base.__qualname__}
    return type(base.__name__, (base,), namespace)


def _patch_psycopg2(module) -> None:
    if getattr(module.connect, "_takealook", False):
        return
    import psycopg2.extensions

    original = module.connect

    @functools.wraps(original)
    def connect(dsn=None, connection_factory=None, cursor_factory=None, **kwargs):
        factory = _traced_connection_class(connection_factory or psycopg2.extensions.connection)
        # The connection's default cursors are traced ones from the start: cursor() asks nothing more.
        cursors = _traced_cursor_class(cursor_factory or psycopg2.extensions.cursor)
        return original(dsn, connection_factory=factory, cursor_factory=cursors, **kwargs)

    traced = _traced_connect(connect)
    module.connect = traced
    _adopt_open_connections(psycopg2.extensions.connection, psycopg2.extensions.cursor)


def _adopt_open_connections(connection_type, cursor_type) -> None:
    """Connections opened before start(): give them a traced default cursor factory."""
    adopted = 0
    for obj in gc.get_objects():
        if isinstance(obj, connection_type) and not getattr(type(obj), "_takealook", False):
            try:
                obj.cursor_factory = _traced_cursor_class(obj.cursor_factory or cursor_type)
                adopted += 1
            except Exception:
                pass
    if adopted:
        log.debug("takealook: instrumented %d psycopg2 connection(s) opened before start()", adopted)
