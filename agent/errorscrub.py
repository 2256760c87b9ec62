"""Exception messages without the values in them: what a failed span records.

A database error's message carries what the statement was given: a failed cast
echoes the literal (``invalid input syntax for type integer: "abc"``), a unique
violation's DETAIL the key (``Key (email)=(alice@example.org) already exists``),
psycopg2's ``LINE 1:`` the statement with its values interpolated. So, like
statement texts (``sqlscrub``), messages are recorded by their shape:

- Database errors (psycopg, psycopg2, and an exception raised ``from`` one, as
  Django's and SQLAlchemy's wrappers are): the primary message only (no
  DETAIL, HINT, CONTEXT, LINE), then ``(SQLSTATE 23505)``. A quoted name in it
  is kept when the error's diagnostics name it (schema, table, column, type,
  constraint) or the statement recorded on the span (which holds no values)
  has it as a word; any other quoted text becomes ``"?"``. The message of a
  PL/pgSQL ``RAISE`` (SQLSTATE class P0) is the function author's free text and
  is not recorded at all.
- Errors of HTTP clients and the network (requests, urllib3, httpx, urllib,
  sockets) and Python's errors about code (``AttributeError``, ``NameError``,
  ``ImportError``, ``TypeError``): their quotes hold host names, types and
  identifiers, and stay.
- Any other exception (``ValueError``, ``KeyError``, the app's own): quoted text
  (``'...'``, ``"..."``) becomes ``'?'``.

In every message, email addresses become ``?`` and URLs are recorded as spans
record them (``redact``: ids kept, other path segments and query values
``REDACTED``). Text the app wrote into a message without quotes is kept: the
agent cannot tell a name from a word there.

``exception.stacktrace`` is rebuilt from the frames (file, line, function and
the source line, with its string literals as ``'?'``: code can hold a key or an
address too) and these scrubbed messages, for every exception of the chain, the
last 64 frames of each; exception notes are left out.
"""

from __future__ import annotations

import re
import traceback

from takealook.agent.redact import DEFAULT

_QUOTED = re.compile(
    r"""(?<![\w'"])([bBrRuUfF]{0,2})(?:'((?:[^'\\\n]|\\.|'(?=\w))*)'(?![\w'])|"((?:[^"\\\n]|\\.|"(?=\w))*)"(?![\w"]))""")
_EMAIL = re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+")
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>()]+")
_URL_PATH = re.compile(r"(\burl:? )(/[^\s'\"<>()]*)")
_DETAIL_LINE = re.compile(r"^\s*(?:DETAIL|HINT|CONTEXT|LINE \d+|QUERY|STATEMENT|WHERE):|^\s*\^\s*$")
_WORD = re.compile(r'"((?:[^"]|"")*)"|([A-Za-z_][A-Za-z0-9_$]*)')
_KEEP_QUOTES_TYPES = (AttributeError, NameError, ImportError, TypeError)
_NETWORK_MODULES = ("requests", "urllib3", "httpx", "httpcore", "urllib.error", "http.client", "socket", "ssl")
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"
MAX_CHAIN = 8
MAX_FRAMES = 64


def describe(error: BaseException, statement: str = "") -> str:
    """The message of ``error`` as a span records it; ``statement``: the span's scrubbed SQL, if any."""
    try:
        database = _database_error(error)
        if database is not None:
            return _database_message(database, statement)
        return _message(error)
    except Exception:  # never fail the app, and never fall back to the raw text
        return "?"


def status_text(error: BaseException, statement: str = "") -> str:
    return f"{type(error).__name__}: {describe(error, statement)}"


def scrub_text(text: str) -> str:
    """A message of unknown origin (a status description set through the API): the generic rules."""
    try:
        return _generic(text, keep_quotes=False)
    except Exception:
        return "?"


_FRAME_LINE = re.compile(r'^\s*File "[^"\n]*", line \d+(?:, in [\w.<>]+)?$')


def scrub_stacktrace_text(text: str) -> str:
    """A stack trace already written out (an SDK span's exception event): its frame lines kept (files,
    lines, functions: code, not values), every other line (source, messages) by the generic rules."""
    try:
        return "\n".join(line if _FRAME_LINE.match(line) else _generic(line, keep_quotes=False)
                         for line in text.splitlines())
    except Exception:
        return "?"


def stacktrace(error: BaseException, statement: str = "") -> str:
    """Like ``traceback.format_exception``, with every message of the chain scrubbed."""
    chain, seen = [], set()
    current = error
    while current is not None and id(current) not in seen and len(chain) < MAX_CHAIN:
        seen.add(id(current))
        chain.append(current)
        if current.__cause__ is not None:
            current = current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            current = current.__context__
        else:
            current = None
    parts = []
    for position in range(len(chain) - 1, -1, -1):
        exc = chain[position]
        if position < len(chain) - 1:
            parts.append(_CAUSE if chain[position].__cause__ is chain[position + 1] else _CONTEXT)
        if exc.__traceback__ is not None:
            parts.append("Traceback (most recent call last):\n")
            parts.extend(_frames(exc.__traceback__))
        message = describe(exc, statement)
        parts.append(f"{qualified_name(type(exc))}: {message}\n" if message else f"{qualified_name(type(exc))}\n")
    return "".join(parts)


def _frames(tb) -> list:
    """Frames as Python prints them; string literals in source lines become '?' (code can hold secrets)."""
    frames = traceback.extract_tb(tb)
    out = []
    if len(frames) > MAX_FRAMES:
        out.append(f"  ... {len(frames) - MAX_FRAMES} frames before these\n")
        frames = frames[-MAX_FRAMES:]
    for frame in frames:
        out.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}\n')
        line = (frame.line or "").strip()
        if line:
            out.append(f"    {_values(_QUOTED.sub(_blank, line))}\n")
    return out


def qualified_name(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"


# --------------------------------------------------------------------------- database errors


def _is_database_error(error: BaseException) -> bool:
    return hasattr(error, "diag") and type(error).__module__.startswith(("psycopg", "psycopg2"))


def _database_error(error: BaseException):
    """``error`` if it is a driver's error, else the driver's error it was raised from (wrappers)."""
    current = error
    for _ in range(MAX_CHAIN):
        if current is None:
            return None
        if _is_database_error(current):
            return current
        current = current.__cause__
    return None


def _database_message(error: BaseException, statement: str) -> str:
    code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None) or ""
    suffix = f" (SQLSTATE {code})" if code else ""
    if code.startswith("P0"):
        return "message not recorded: raised by a database function" + suffix
    diag = getattr(error, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if not primary:
        lines = [line for line in str(error).splitlines() if line.strip()]
        primary = lines[0] if lines else ""
        for prefix in ("ERROR:", "FATAL:", "connection failed:"):
            if primary.startswith(prefix):
                primary = primary[len(prefix):].strip()
    names = _names(diag, statement)

    def quoted(match: re.Match) -> str:
        content = match.group(2) if match.group(2) is not None else match.group(3)
        if content and all(part in names for part in content.split(".")):
            return match.group(0)
        return _blank(match)

    return _values(_QUOTED.sub(quoted, primary)) + suffix


def _names(diag, statement: str) -> set:
    names = set()
    for field in ("schema_name", "table_name", "column_name", "datatype_name", "constraint_name"):
        value = getattr(diag, field, None) if diag is not None else None
        if value:
            names.add(value)
    for quoted, word in _WORD.findall(statement or ""):
        names.add(quoted.replace('""', '"') if quoted else word.lower())
    return names


# --------------------------------------------------------------------------- other exceptions


def _message(error: BaseException) -> str:
    try:
        text = str(error)
    except Exception:
        return "?"
    return _generic(text, keep_quotes=_keeps_quotes(error))


def _keeps_quotes(error: BaseException) -> bool:
    if isinstance(error, _KEEP_QUOTES_TYPES):
        return True
    module = type(error).__module__
    if module.startswith(_NETWORK_MODULES):
        return True
    return isinstance(error, (ConnectionError, TimeoutError)) or type(error).__name__ in ("gaierror", "timeout")


def _generic(text: str, keep_quotes: bool) -> str:
    if "\n" in text:
        text = "\n".join(line for line in text.splitlines() if not _DETAIL_LINE.match(line)).strip()
    text = _URL.sub(lambda m: DEFAULT.url(m.group(0)), text)
    text = _URL_PATH.sub(lambda m: m.group(1) + _path_and_query(m.group(2)), text)
    if not keep_quotes:
        text = _QUOTED.sub(_blank, text)
    return _values(text)


def _blank(match: re.Match) -> str:
    quote = "'" if match.group(2) is not None else '"'
    return f"{match.group(1)}{quote}?{quote}"


def _path_and_query(target: str) -> str:
    path, sep, query = target.partition("?")
    return DEFAULT.client_path(path) + (sep + DEFAULT.query(query) if sep else "")


def _values(text: str) -> str:
    return _EMAIL.sub("?", text) if "@" in text else text
