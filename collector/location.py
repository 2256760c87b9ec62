"""Where a span store is: an SQLite file, or a ClickHouse table given by URL.

    parse_store("spans.db")                     -> Path("spans.db")
    parse_store("chdb:/data/ch")                -> StoreURL("chdb", path="/data/ch", ...)
    parse_store("clickhouse://u:p@h:8123/otel?table=otel_traces&secure=1") -> StoreURL("clickhouse", ...)

``chdb:DIR`` is ClickHouse's embedded engine (the ``chdb`` package) keeping
its data in DIR; ``clickhouse://[user[:password]@]host[:port]/database`` is a
ClickHouse server or cluster, reached over HTTP(S) by ``clickhouse-connect``.
Both read and write the table the OpenTelemetry Collector's ``clickhouse``
exporter fills (``otel_traces`` unless ``?table=`` says otherwise; database
``default`` unless the URL names one, ``chdb:DIR?database=NAME`` for chdb).

A text that starts with a URL scheme (``word:`` or ``word://``) is a URL, never
a file name: an unknown scheme is an error, so ``--store chdb:/x`` with a typo
cannot quietly become an SQLite file named ``chdb:/x``. Windows drive letters
(``C:\\data``) are one letter and stay paths.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union
from urllib.parse import parse_qsl, unquote, urlsplit

from takealook.errors import InputError

DEFAULT_TABLE = "otel_traces"
DEFAULT_DATABASE = "default"
SCHEMES = ("chdb", "clickhouse")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")  # two letters at least: C:\ is a drive
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # database and table names we accept unquoted
_OPTIONS = {"chdb": ("table", "database"), "clickhouse": ("table", "secure")}


@dataclass(frozen=True)
class StoreURL:
    """A ClickHouse table holding spans in the Collector exporter's layout."""

    scheme: str  # "chdb" or "clickhouse"
    database: str
    table: str
    path: str = ""  # chdb: the data folder
    host: str = ""
    port: int = 0
    user: str = ""
    password: str = ""
    secure: bool = False

    @property
    def qualified(self) -> str:
        """``database.table`` as SQL (both names are plain identifiers, checked when parsed)."""
        return f"{self.database}.{self.table}"

    def __str__(self) -> str:
        """The URL as a user may read it: never with the password."""
        options = [f"table={self.table}"] if self.table != DEFAULT_TABLE else []
        if self.scheme == "chdb":
            options += [f"database={self.database}"] if self.database != DEFAULT_DATABASE else []
            return f"chdb:{self.path}" + ("?" + "&".join(options) if options else "")
        options += ["secure=1"] if self.secure else []
        who = f"{self.user}@" if self.user else ""
        return (f"clickhouse://{who}{self.host}:{self.port}/{self.database}"
                + ("?" + "&".join(options) if options else ""))


Store = Union[Path, StoreURL]


def is_url(text: Union[str, os.PathLike]) -> bool:
    return isinstance(text, StoreURL) or (isinstance(text, str) and _SCHEME.match(text) is not None)


def parse_store(text: Union[str, os.PathLike, StoreURL]) -> Store:
    """A Path for a file, a StoreURL for a URL; InputError (one line) for a URL that cannot be used."""
    if isinstance(text, (StoreURL, Path)):
        return text
    text = os.fspath(text)
    match = _SCHEME.match(text)
    if match is None:
        return Path(text)
    scheme = match.group(1).lower()
    if scheme not in SCHEMES:
        raise InputError(f"--store {_safe(text)}: unknown kind of store {scheme!r}; give a file path, "
                         f"chdb:DIR or clickhouse://[user[:password]@]host[:port]/database (a file whose name "
                         f"has a colon: ./{_safe(text)})")
    return _chdb(text) if scheme == "chdb" else _clickhouse(text)


def _chdb(text: str) -> StoreURL:
    rest = text[len("chdb:"):]
    path, _, query = rest.partition("?")
    if path.startswith("//"):  # chdb:///data/ch, as a URL would write it
        path = path[2:]
    if not path:
        raise InputError(f"--store {text}: chdb needs a folder for its data, e.g. chdb:.takealook/ch")
    options = _options(text, query, "chdb")
    return StoreURL("chdb", _name(text, options.get("database", DEFAULT_DATABASE), "database"),
                    _name(text, options.get("table", DEFAULT_TABLE), "table"), path=unquote(path))


def _clickhouse(text: str) -> StoreURL:
    try:
        parts = urlsplit(text)
        port: Optional[int] = parts.port
    except ValueError as error:
        raise InputError(f"--store {_safe(text)}: not a valid URL ({error})") from None
    if not parts.hostname:
        raise InputError(f"--store {_safe(text)}: no host; write clickhouse://[user[:password]@]host[:port]/database")
    if parts.fragment:
        raise InputError(f"--store {_safe(text)}: a ClickHouse URL has no #fragment")
    options = _options(_safe(text), parts.query, "clickhouse")
    secure = options.get("secure", "0").lower()
    if secure not in ("0", "1", "true", "false"):
        raise InputError(f"--store {_safe(text)}: secure must be 1 or 0")
    secure_on = secure in ("1", "true")
    database = parts.path.strip("/") or DEFAULT_DATABASE
    return StoreURL("clickhouse", _name(_safe(text), unquote(database), "database"),
                    _name(_safe(text), options.get("table", DEFAULT_TABLE), "table"),
                    host=parts.hostname, port=port or (8443 if secure_on else 8123),
                    user=unquote(parts.username or ""), password=unquote(parts.password or ""), secure=secure_on)


def _options(shown: str, query: str, scheme: str) -> dict[str, str]:
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(_OPTIONS[scheme]))
    if unknown:
        raise InputError(f"--store {shown}: unknown option {unknown[0]!r}; a {scheme} store takes "
                         + ", ".join(f"{name}=" for name in _OPTIONS[scheme]))
    return options


def _name(shown: str, name: str, what: str) -> str:
    if not _NAME.match(name):
        raise InputError(f"--store {shown}: {what} {name!r} is not a plain name (letters, digits, _)")
    return name


def _safe(text: str) -> str:
    """``text`` with any password in it replaced, for messages."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", text)
