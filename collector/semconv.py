"""Old and new OpenTelemetry semantic-convention names, resolved once at ingest.

The HTTP and database conventions were renamed (HTTP stable in semconv 1.23,
database in 1.26+): instrumentations in the wild send either name, sometimes
both (``OTEL_SEMCONV_STABILITY_OPT_IN=http/dup``). The store's typed columns
take the new name when present, else the old one; readers never look at
attribute names. Raw attributes are kept as sent.

URLs lose their query string and fragment (they carry ids, tokens and search
terms that would split one route into thousands and leak secrets) and any
``user:password@``.
"""

from __future__ import annotations

from typing import Any, Optional

from takealook.sqltext import fingerprint

# (new name, old name) pairs per typed column.
HTTP_METHOD = ("http.request.method", "http.method")
HTTP_STATUS = ("http.response.status_code", "http.status_code")
URL_PATH = ("url.path", "http.target")
URL_FULL = ("url.full", "http.url")
# The host called: on a client span the peer (old name net.peer.name); on a server span the
# server's own host (old name net.host.name; net.peer.name there is the caller).
SERVER_ADDRESS = ("server.address", "net.peer.name")
SERVER_ADDRESS_OF_SERVER = ("server.address", "net.host.name")
DB_SYSTEM = ("db.system.name", "db.system")
DB_NAME = ("db.namespace", "db.name")
DB_STATEMENT = ("db.query.text", "db.statement")
HTTP_ROUTE = "http.route"

KIND_SERVER = 2
KIND_CLIENT = 3


def _pick(attrs: dict[str, Any], names: tuple[str, str]) -> Optional[str]:
    """The new name's value, else the old name's; only a non-empty string counts."""
    value = attrs.get(names[0]) or attrs.get(names[1])
    return value if value.__class__ is str else None


def strip_query(target: str) -> str:
    """``/orders?id=7#x`` -> ``/orders``."""
    for mark in ("?", "#"):
        cut = target.find(mark)
        if cut >= 0:
            target = target[:cut]
    return target


def clean_url(url: str) -> str:
    """Full URL without query, fragment or credentials."""
    url = strip_query(url)
    scheme = url.find("://")
    if scheme >= 0:
        host_start = scheme + 3
        host_end = url.find("/", host_start)
        authority = url[host_start:] if host_end < 0 else url[host_start:host_end]
        at = authority.rfind("@")
        if at >= 0:
            url = url[:host_start] + url[host_start + at + 1:]
    return url


def host_of(url: str) -> Optional[str]:
    scheme = url.find("://")
    if scheme < 0:
        return None
    authority = url[scheme + 3:].split("/", 1)[0]
    if authority.startswith("["):  # [::1]:8000
        return authority[1:authority.find("]")] or None
    return authority.rsplit(":", 1)[0] if ":" in authority else authority or None


def _status(attrs: dict[str, Any]) -> Optional[int]:
    """The HTTP status code: an integer 100-999 or such a string of ASCII digits, else None.

    Anything else is not a status code (a 20-digit string would not even fit
    the store's integer column); the raw attribute is still kept."""
    value = attrs.get(HTTP_STATUS[0])
    if value is None:
        value = attrs.get(HTTP_STATUS[1])
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and len(value) == 3 and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, int) and 100 <= value <= 999:
        return value
    return None


def typed_fields(attrs: dict[str, Any], kind: int) -> tuple:
    """The typed columns from span attributes, in ``SPAN_COLUMNS`` order:
    http_method, http_route, http_status, url_path, url_full, server_address,
    db_system, db_name, db_statement, db_fingerprint."""
    if not attrs:
        return _NONE10
    method = _pick(attrs, HTTP_METHOD)
    route = attrs.get(HTTP_ROUTE)
    if not isinstance(route, str) or not route:
        route = None
    path = _pick(attrs, URL_PATH)
    if path is not None:
        path = strip_query(path)
    full = _pick(attrs, URL_FULL)
    if full is not None:
        full = clean_url(full)
    address = _pick(attrs, SERVER_ADDRESS_OF_SERVER if kind == KIND_SERVER else SERVER_ADDRESS)
    if address is None and full is not None and kind == KIND_CLIENT:
        address = host_of(full)
    statement = _pick(attrs, DB_STATEMENT)
    return (method, route, _status(attrs), path, full, address, _pick(attrs, DB_SYSTEM), _pick(attrs, DB_NAME),
            statement, fingerprint(statement) if statement is not None else None)


def metric_fields(attrs: dict[str, Any]) -> tuple[Optional[str], Optional[str], Optional[int]]:
    """http method, route and status code of a metric data point."""
    route = attrs.get(HTTP_ROUTE)
    return _pick(attrs, HTTP_METHOD), route if isinstance(route, str) and route else None, _status(attrs)


_NONE10 = (None,) * 10
