"""The agent's no-values policy, applied to spans of OpenTelemetry's contrib instrumentations.

Our own instrumentations never record a value; contrib ones record what their
authors chose, and some of it can carry values: a statement text (SQLAlchemy,
asyncpg, mysql: whatever the app wrote into the SQL; older Redis
instrumentations wrote the command's arguments, ``SET user:7 secret``), full
URLs with query strings and credentials, request and response headers when
``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*`` is set, the User-Agent. When a
contrib span ends, before its record is made, this scrubs its attributes the
way ours are made:

- ``db.statement`` / ``db.query.text``: SQL systems through ``sqlscrub`` (the
  same text our psycopg spans have); other systems (Redis, Memcached, MongoDB,
  ...) keep each line's first word, the command, and every other word becomes
  ``?`` (``SET ? ?``, as current Redis instrumentations write it);
- URLs, paths and query strings follow our URL rules (``redact``: ids, numbers, paging words
  and the app's route words kept, other values ``REDACTED``, no credentials);
- header attributes and the User-Agent are dropped.

It runs only for tracers whose scope is a contrib instrumentation
(``opentelemetry.instrumentation.*``): the app's own spans and ours are left as
they are, at no cost.
"""

from __future__ import annotations

from takealook.agent.redact import DEFAULT
from takealook.agent.sqlscrub import scrub

SCOPE_PREFIX = "opentelemetry.instrumentation."
_STATEMENT_KEYS = ("db.statement", "db.query.text")
_URL_KEYS = ("url.full", "http.url")
_DROPPED = frozenset(("user_agent.original", "http.user_agent"))
_DROPPED_PREFIXES = ("http.request.header.", "http.response.header.", "rpc.request.metadata.",
                     "rpc.response.metadata.")
# db.system values whose statements are SQL. Any other system is treated as commands with arguments
# (first word kept): for an unknown system that is the safe side, it can leak nothing.
_SQL_SYSTEMS = frozenset(("postgresql", "mysql", "mariadb", "sqlite", "mssql", "microsoft.sql_server", "oracle",
                          "oracle.db", "db2", "ibm.db2", "other_sql", "cockroachdb", "redshift", "aws.redshift",
                          "clickhouse", "trino", "spanner", "gcp.spanner", "snowflake", "hive", "sap.hana"))


def contrib_on_end(on_end):
    """For ``LeanTracerProvider``: the scope's ``on_end``, scrubbing for contrib scopes, None for others."""
    scrubbing_on_end = scrubbing(on_end)

    def of_scope(name: str):
        return scrubbing_on_end if name.startswith(SCOPE_PREFIX) else None

    return of_scope


def scrub_attributes(attributes: dict, redactor=DEFAULT) -> None:
    """Scrubs one contrib span's attributes in place (see the module's docstring)."""
    system = attributes.get("db.system.name") or attributes.get("db.system")
    for key in _STATEMENT_KEYS:
        text = attributes.get(key)
        if isinstance(text, str):
            attributes[key] = statement_without_values(text, system)
    for key in _URL_KEYS:
        url = attributes.get(key)
        if isinstance(url, str):
            attributes[key] = redactor.url(url)
    query = attributes.get("url.query")
    if isinstance(query, str):
        attributes["url.query"] = redactor.query(query)
    path = attributes.get("url.path")
    if isinstance(path, str):
        route = attributes.get("http.route")
        attributes["url.path"] = redactor.server_path(path, route if isinstance(route, str) else None)
    target = attributes.get("http.target")
    if isinstance(target, str):
        path, mark, query = target.partition("?")
        attributes["http.target"] = redactor.client_path(path) + (f"?{redactor.query(query)}" if mark else "")
    for key in [k for k in attributes if k in _DROPPED or k.startswith(_DROPPED_PREFIXES)]:
        del attributes[key]


def statement_without_values(text: str, system) -> str:
    if system in _SQL_SYSTEMS:
        return scrub(text)[0]
    return "\n".join(_command_shape(line) for line in text.splitlines() if line.strip())


def _command_shape(line: str) -> str:
    words = line.split()
    return " ".join([words[0]] + ["?"] * (len(words) - 1))


def scrub_span(attributes: dict, events) -> None:
    """A contrib span's attributes and its events' (``(name, time, attributes)``), in place, by the URL rules
    of the running agent (its settings, the routes it has served; none yet: the defaults)."""
    from takealook.agent import current

    redactor = getattr(current(), "redactor", None) or DEFAULT
    scrub_attributes(attributes, redactor)
    for _name, _time, event_attributes in events or ():
        scrub_attributes(event_attributes, redactor)


def scrubbing(on_end):
    """An ``on_end`` for contrib spans: scrub, then hand the span on as ours are."""
    def on_contrib_end(span) -> None:
        try:
            scrub_span(span.attributes, span.events)
        except Exception:  # a span we cannot scrub is not sent
            return
        on_end(span)

    return on_contrib_end
