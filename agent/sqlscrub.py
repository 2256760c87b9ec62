"""Statement texts without values: what DB spans record.

Drivers' placeholders (``%s``, ``%(name)s``, ``$1``) are kept. Values the app
wrote into the text itself (``WHERE email = 'a@b.c'``, ``LIMIT 10``) are
replaced by ``%s``: string literals (also ``E''``, ``U&''``, ``B''``/``X''``
and dollar-quoted), and numbers. Comments go too (they can carry anything,
sqlcommenter's tags among them). Quoted identifiers, keywords, ``NULL``,
``TRUE``/``FALSE`` stay. pglast fingerprints ignore constants, so a scrubbed
text fingerprints like the parametrized one and like pg_stat_statements' text.

Results are cached by the raw text, so a parametrized statement costs a dict
lookup after its first execution.
"""

from __future__ import annotations

import re

_TOKENS = re.compile(
    r"""
      (?P<skip>"(?:[^"]|"")*"                               # quoted identifier: keep
        | %\(\w+\)s | %s | %% | \$\d+ )                      # placeholders: keep
    | (?P<comment>--[^\n]* | /\*.*?(?:\*/|$))                # comments: drop
    | (?P<literal>(?<![\w$])(?:[eEbBxXnN]|[uU]&)?'(?:[^'\\]|''|\\.)*'?   # string literal
        | \$(?P<tag>[A-Za-z_]\w*)?\$.*?(?:\$(?P=tag)\$|$)    # dollar-quoted string
        | (?<![\w$.])(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w$]))   # number
    """,
    re.VERBOSE | re.DOTALL,
)
_SPACES = re.compile(r"\s+")
_OPERATION = re.compile(r"\s*(?:\(\s*)*([A-Za-z]+)")
MAX_LENGTH = 4096
_CACHE_SIZE = 2048
_CACHED_TEXT_MAX = 8192
_cache: dict = {}


def _replace(match: re.Match) -> str:
    if match.group("skip") is not None:
        return match.group(0)
    if match.group("comment") is not None:
        return " "
    return "%s"


def scrub(sql: str) -> tuple:
    """(text without values, operation keyword such as SELECT), cached."""
    hit = _cache.get(sql)
    if hit is not None:
        return hit
    text = _SPACES.sub(" ", _TOKENS.sub(_replace, sql)).strip()
    if len(text) > MAX_LENGTH:
        text = text[:MAX_LENGTH]
    match = _OPERATION.match(text)
    result = (text, match.group(1).upper() if match else "")
    if len(sql) <= _CACHED_TEXT_MAX:  # a huge text (a bulk INSERT of literals) would hold memory for nothing
        if len(_cache) >= _CACHE_SIZE:
            _cache.clear()  # many distinct texts: values written into SQL; start over rather than grow
        _cache[sql] = result
    return result
