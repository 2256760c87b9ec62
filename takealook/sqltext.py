"""SQL text helpers shared by the collector (fingerprints at ingest) and the analyzers.

A statement is recognised across traces and pg_stat_statements by its pglast
fingerprint: the same for ``WHERE id = 7``, ``WHERE id = %s`` and ``WHERE id = $1``
(and for IN lists of any length). Drivers' placeholders (psycopg's ``%s`` and
``%(name)s``) are not SQL, so they are turned into ``$n`` first.

pglast is imported lazily: it is part of ``takealook[audit]``, and without it
``fingerprint()`` returns None.
"""

from __future__ import annotations

import functools
import re

# Tokens that may contain a '%' that is not a placeholder: quoted strings,
# quoted identifiers, dollar-quoted bodies, comments.
_SKIP = re.compile(
    r"""'(?:[^']|'')*'?          # string literal (tolerates truncation)
      | "(?:[^"]|"")*"?          # quoted identifier
      | \$(?P<tag>[A-Za-z_]*)\$.*?(?:\$(?P=tag)\$|$)   # dollar quoting
      | --[^\n]*                 # line comment
      | /\*.*?(?:\*/|$)          # block comment
      | %%                       # escaped percent
      | %\((?P<name>[^)]+)\)s    # %(name)s
      | %s                       # %s
    """,
    re.VERBOSE | re.DOTALL,
)


def to_dollar_params(sql: str) -> str:
    """Turn psycopg placeholders into PostgreSQL's ``$n`` (named ones keep one number per name)."""
    if "%" not in sql:
        return sql
    numbers: dict[str, int] = {}
    counter = 0

    def replace(match: re.Match) -> str:
        nonlocal counter
        token = match.group(0)
        if token == "%%":
            return "%"
        if token == "%s":
            counter += 1
            return f"${counter}"
        name = match.group("name")
        if name is not None:
            if name not in numbers:
                counter += 1
                numbers[name] = counter
            return f"${numbers[name]}"
        return token

    return _SKIP.sub(replace, sql)


@functools.lru_cache(maxsize=8192)
def fingerprint(sql: str | None) -> str | None:
    """pglast fingerprint (16 hex digits) of a statement, or None if it does not parse."""
    if not sql:
        return None
    try:
        from pglast.parser import fingerprint as _fingerprint
    except ImportError:
        return None
    try:
        return _fingerprint(to_dollar_params(sql))
    except Exception:  # pglast raises ParseError, and others on odd input; a fingerprint is optional
        return None
