"""One trace, checked and indexed: what every per-trace analysis starts from.

``TraceView(spans)`` keeps the usable spans of one trace, indexes them by id
and by parent, and sets aside the ones that cannot be used (no span id, a
duplicate id, a start before 2000 or after 2100, a negative duration or one
longer than a week). Skipped spans are counted by reason so the report can say
how many it ignored and why; one bad span never spoils its trace.

It also answers the questions every analysis asks of a span: is it SQL, a new
database connection, another database, an outbound HTTP call; which entry
endpoint the trace belongs to (the root server span, or a browser document-load
or fetch root), named by ``takealook.routes`` like every other part names it;
which host a call went to.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence
from urllib.parse import urlsplit

from takealook.collector import Span
from takealook.routes import ANY_PATH, RouteName, endpoint_route, route_template, template_path

# Timestamps outside these bounds are clock bugs or garbage, not data.
MIN_START_NS = 946_684_800 * 10**9  # 2000-01-01
MAX_START_NS = 4_102_444_800 * 10**9  # 2100-01-01
MAX_DURATION_NS = 7 * 24 * 3600 * 10**9

SQL_SYSTEMS = frozenset({
    "postgresql", "mysql", "mariadb", "sqlite", "mssql", "oracle", "db2", "cockroachdb", "other_sql",
})
# The OpenTelemetry JS web instrumentations name their root spans so.
BROWSER_ROOT_NAMES = frozenset({"documentLoad", "documentFetch"})

CODE, SQL, HTTP, CONNECT = "code", "sql", "http", "connect"


def category(span: Span) -> str:
    """What a span's own time is: "sql", "connect", "http", another database's name, or "code"."""
    if span.db_statement is not None or span.db_system is not None:
        if span.db_system is None or span.db_system in SQL_SYSTEMS:
            return CONNECT if span.db_statement is None and is_connect(span) else SQL
        return span.db_system
    if span.kind == "client" and (span.http_method is not None or span.url_full is not None):
        return HTTP
    return CODE


def is_http_client(span: Span) -> bool:
    return (
        span.kind == "client"
        and span.db_system is None
        and span.db_statement is None
        and (span.http_method is not None or span.url_full is not None)
    )


def is_connect(span: Span) -> bool:
    """A database span that opened a connection (the agent's ``connect <db>``), not a statement."""
    name = span.name
    if name == "connect" or name.startswith("connect ") or name.endswith(".connect"):
        return True
    return '"db.operation.name": "connect"' in span.attributes_json or \
        '"db.operation.name":"connect"' in span.attributes_json


def route_name(span: Span) -> RouteName:
    """The endpoint a server span belongs to, named by ``takealook.routes`` (catch-alls by their path)."""
    path = span.url_path or (_path(span.url_full) if span.url_full else None)
    return endpoint_route(span.http_route, path)


def route_of(span: Span) -> str:
    route = span.http_route
    if route:
        template = route_template(route)
        if not template.catch_all:  # most spans: no path needed
            return template.text
    if route or span.url_path or span.url_full:
        return route_name(span).route
    return span.name or "?"


def host_of(span: Span) -> Optional[str]:
    """The host an outbound call went to (lowercase, no port), or None."""
    if span.server_address:
        return span.server_address.lower().strip("[]")
    if span.url_full:
        try:
            host = urlsplit(span.url_full).hostname
        except ValueError:
            return None
        return host.lower() if host else None
    return None


def scheme_of(span: Span) -> Optional[str]:
    url = span.url_full
    if url and "://" in url:
        return url.split("://", 1)[0].lower()
    return None


def is_error(span: Span) -> bool:
    if span.status == "error":
        return True
    return span.kind == "server" and span.http_status is not None and span.http_status >= 500


class Entry(NamedTuple):
    """The endpoint a trace entered by, as its user felt it (a tuple: one is made per trace)."""

    service: str
    method: str
    route: str  # the endpoint's name: a route template, or a catch-all route's page (its path, templated)
    source: str  # "server" | "browser"
    template: str = ""  # the route's template ("/{path}" for a catch-all); the route itself otherwise
    by_path: bool = False  # named by its path under a catch-all route (capped per route: see analysis)

    @property
    def label(self) -> str:
        return f"{self.method} {self.route}" if self.method else self.route

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.service, self.method, self.route)


class TraceView:
    """The usable spans of one trace, indexed by id and by parent, and sorted by what they are.

    ``sql``, ``connects`` (database connections opened), ``other_db``, ``calls`` (outbound
    HTTP) and ``servers`` list the spans of each sort, so an analysis only walks the spans it
    cares about; ``span_counts`` is spans per service.
    """

    __slots__ = ("trace_id", "by_id", "children", "roots", "orphans", "skipped", "root", "entry", "sql",
                 "connects", "other_db", "calls", "servers", "span_counts")

    def __init__(self, spans: Sequence[Span]):
        by_id: dict[str, Span] = {}
        skipped: list[str] = []
        sql: list[Span] = []
        connects: Optional[list[Span]] = None  # rare: most apps keep their connections
        other_db: list[Span] = []
        calls: list[Span] = []
        servers: list[Span] = []
        counts: dict[str, int] = {}
        for span in spans:
            # The checks of _unusable, inlined: this loop runs for every span of a report.
            try:
                span_id = span.span_id
                if not (span_id and span.trace_id and span.service and MIN_START_NS <= span.start_ns <= MAX_START_NS
                        and 0 <= span.duration_ns <= MAX_DURATION_NS) or span_id in by_id:
                    skipped.append(_unusable(span, by_id))
                    continue
            except TypeError:
                skipped.append("missing start time or duration")
                continue
            by_id[span_id] = span
            service = span.service
            counts[service] = counts.get(service, 0) + 1
            if span.db_statement is not None or span.db_system is not None:
                if span.db_system is None or span.db_system in SQL_SYSTEMS:
                    if span.db_statement is None and is_connect(span):
                        if connects is None:
                            connects = []
                        connects.append(span)
                    else:
                        sql.append(span)
                else:
                    other_db.append(span)
            elif span.kind == "server":
                servers.append(span)
            elif span.kind == "client" and (span.http_method is not None or span.url_full is not None):
                calls.append(span)
        children, roots, orphans = _link(by_id)
        if calls:
            # A client library instrumented on top of another (requests over urllib3) nests two
            # client spans for one call: the outer one is the call.
            calls = [c for c in calls if not _inner_call(c, by_id)]
        self.trace_id = spans[0].trace_id if spans else ""
        self.by_id = by_id
        self.children = children
        self.roots = roots
        self.orphans = orphans
        self.skipped = skipped
        self.sql = sql
        self.connects = connects or ()
        self.other_db = other_db
        self.calls = calls
        self.servers = servers
        self.span_counts = counts
        self.root = _pick_root(roots, orphans)
        self.entry = _entry(self, self.root) if self.root is not None else None

    def kids(self, span: Span) -> list[Span]:
        return self.children.get(span.span_id, ())

    def server_child(self, span: Span) -> Optional[Span]:
        """The server span that answered an outbound call, when the callee is instrumented.

        Looks through a nested client span of the same service (requests over urllib3)."""
        for _ in range(3):
            kids = self.children.get(span.span_id, ())
            for kid in kids:
                if kid.kind == "server":
                    return kid
            inner = next((k for k in kids if k.kind == "client" and k.service == span.service), None)
            if inner is None:
                return None
            span = inner
        return None

    def services(self) -> set[str]:
        return set(self.span_counts)


def _link(by_id: dict[str, Span]) -> tuple[dict[str, list[Span]], list[Span], list[Span]]:
    """Children by parent id; roots (no parent); orphans (a parent the trace does not have)."""
    children: dict[str, list[Span]] = {}
    roots: list[Span] = []
    orphans: list[Span] = []
    for span in by_id.values():
        parent = span.parent_span_id
        if not parent:
            roots.append(span)
        elif parent in by_id:
            kids = children.get(parent)
            if kids is None:
                children[parent] = [span]
            else:
                kids.append(span)
        else:
            orphans.append(span)
    return children, roots, orphans


def _inner_call(call: Span, by_id: dict[str, Span]) -> bool:
    parent = by_id.get(call.parent_span_id) if call.parent_span_id else None
    return (parent is not None and parent.kind == "client" and parent.service == call.service
            and (parent.http_method is not None or parent.url_full is not None))


def _unusable(span: Span, seen: dict) -> str:
    try:
        if not span.span_id or not span.trace_id:
            return "missing span or trace id"
        if not span.service:
            return "missing service name"
        if not MIN_START_NS <= span.start_ns <= MAX_START_NS:
            return "start time before 2000 or after 2100"
        if not 0 <= span.duration_ns <= MAX_DURATION_NS:
            return "negative duration or longer than a week"
    except TypeError:
        return "missing start time or duration"
    return "duplicate span id" if span.span_id in seen else ""


def _pick_root(roots: list[Span], orphans: list[Span]) -> Optional[Span]:
    """The span a trace starts at: its root, else the earliest span whose parent never arrived.

    A backend called by a browser or proxy that propagates ``traceparent`` but exports
    nothing has no root of its own; its top server span is the entry users feel.
    """
    candidates = roots or [s for s in orphans if s.kind == "server"] or orphans
    if not candidates:
        return None
    return min(candidates, key=lambda s: (s.start_ns, -s.duration_ns))


def _is_browser(span: Span) -> bool:
    return span.name in BROWSER_ROOT_NAMES or '"webjs"' in span.resource_json


def is_browser(span: Span) -> bool:
    """Whether ``span`` is a browser's root (a page load, a fetch): its entry is named from its children too."""
    return _is_browser(span)


def entry_of(root: Span) -> Optional[Entry]:
    """The entry endpoint of a trace whose root (a server span, not a browser's) is ``root``."""
    return _entry(None, root) if root.kind == "server" and not _is_browser(root) else None


def _entry(view: TraceView, root: Span) -> Optional[Entry]:
    if _is_browser(root):
        server = next((k for k in view.kids(root) if k.kind == "server"), None)
        if root.name == "documentLoad" or root.name == "documentFetch":
            route = template_path(root.url_path or _path(root.url_full))
            return Entry(root.service, "GET", route, "browser", ANY_PATH, True)
        span = server if server is not None else root
        if not (span.http_route or span.url_path or span.url_full):
            return Entry(root.service, root.http_method or "", span.name or "?", "browser", span.name or "?")
        name = route_name(span)
        return Entry(root.service, root.http_method or "", name.route, "browser", name.template, name.by_path)
    if root.kind == "server":
        route = root.http_route
        if route:
            template = route_template(route)
            if not template.catch_all:  # most traces: named by the route alone
                return Entry(root.service, root.http_method or "", template.text, "server", template.text)
        if not (route or root.url_path or root.url_full):
            return Entry(root.service, root.http_method or "", root.name or "?", "server", root.name or "?")
        name = route_name(root)
        return Entry(root.service, root.http_method or "", name.route, "server", name.template, name.by_path)
    return None


def _path(url: Optional[str]) -> str:
    if not url:
        return "/"
    try:
        return urlsplit(url).path or "/"
    except ValueError:
        return "/"
