"""Endpoint names as users read them, from routes and paths: one normalizer for every part.

Traces (the endpoints of ``traces report``), load tests (the task names ``load
generate`` writes) and the report (which joins load results to endpoints by
name) all name an endpoint through ``endpoint_route``, so the three agree:

    >>> endpoint_route("/api/articles/(?P<slug>[^/.]+)$", "/api/articles/hello").route
    '/api/articles/{slug}'
    >>> endpoint_route("/orders/<int:id>", "/orders/7").route
    '/orders/{id}'
    >>> name = endpoint_route("/((?:[\\w\\-]+/)*)$", "/blog/")   # Wagtail's catch-all
    >>> name.route, name.template, name.by_path
    ('/blog/', '/{path}', True)

Routes of any framework come out in one style: regular expressions (Django's
``re_path``, DRF routers) lose their anchors and their groups become
``{name}``; Flask/Werkzeug and Django ``<int:pk>`` converters and Starlette's
``{id:int}`` become ``{pk}``, ``{id}``.

A catch-all route (one whose parameter can hold a ``/``: Wagtail's
``^((?:[\\w\\-]+/)*)$``, ``<path:rest>``, ``(?P<url>.*)``; or no route at all,
a bare WSGI app) says nothing about the page, so the endpoint is the request's
own path with its values templated: numbers ``{id}``, UUIDs ``{uuid}``, long
hexadecimal ``{hex}``, long opaque tokens ``{token}``. Slugs stay (``/blog/``
and ``/locations/`` are different pages). Callers cap how many paths of one
route they keep (``PATHS_PER_ROUTE``) and fold the rest into one row named by
the route's template (``GET /{path}``).

Standard library only: the collector, analyzers, load tests and report all import it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Optional

PATHS_PER_ROUTE = 20  # paths of one catch-all route shown as endpoints of their own; the rest are one row
ANY_PATH = "/{path}"  # the template of a catch-all with no prefix, and of apps that record no route

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HEX = re.compile(r"^(?=.*\d)(?=.*[a-fA-F])[0-9a-fA-F]{8,}$")
# Opaque tokens (share links, signed ids): long, with several digits, not words joined by hyphens.
_TOKEN = re.compile(r"^(?=(?:.*\d){3})[A-Za-z0-9_-]{16,}$")
_WORD = re.compile(r"(?:^|[-_])[A-Za-z]{3,}(?:[-_]|$)")
# <int:pk>, <path:rest>, <string(length=2):code>, <name> (Flask/Werkzeug, Django path()).
_CONVERTER = re.compile(r"(?<!\?P)<(?:([A-Za-z_][A-Za-z0-9_]*)(?:\([^)>]*\))?:)?([A-Za-z_][A-Za-z0-9_]*)>")
# {id}, {id:int}, {rest:path} (Starlette, OpenAPI style).
_BRACED = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_][A-Za-z0-9_]*))?\}")
_REGEX_SIGNS = re.compile(r"[\^$()\[\]\\*+?|]")
_SLASHED = ("a/b", "a/b/", "1/2", "ab-1/cd_2/")  # a parameter that matches these holds a path


@dataclass(frozen=True)
class Template:
    """A route in the one style (``/orders/{id}``), and whether a parameter of it can hold a path."""

    text: str
    catch_all: bool


@dataclass(frozen=True)
class RouteName:
    """What an endpoint is called.

    ``route``: the name (``/api/articles/{slug}``, or the templated path ``/blog/``);
    ``template``: the route's template (``/{path}`` for Wagtail's pages);
    ``by_path``: the route is a catch-all and ``route`` is the request's own path.
    """

    route: str
    template: str
    by_path: bool


@functools.lru_cache(maxsize=4096)
def route_template(route: str) -> Template:
    """A route of any framework in one style: ``/orders/{id}``, with whether it is a catch-all."""
    text = route.strip()
    if not text:
        return Template(ANY_PATH, True)
    catch_all = False

    def converter(match: re.Match) -> str:
        nonlocal catch_all
        if (match.group(1) or "") == "path":
            catch_all = True
        return "{" + match.group(2) + "}"

    def braced(match: re.Match) -> str:
        nonlocal catch_all
        if (match.group(2) or "") == "path":
            catch_all = True
        return "{" + match.group(1) + "}"

    text = _CONVERTER.sub(converter, text)
    if _REGEX_SIGNS.search(_BRACED.sub("", text)):
        text, regex_catch_all = _regex_template(text)
        catch_all = catch_all or regex_catch_all
    text = _BRACED.sub(braced, text)
    if not text.startswith("/"):
        text = "/" + text
    return Template(re.sub(r"/{2,}", "/", text), catch_all)


@functools.lru_cache(maxsize=8192)
def template_path(path: str) -> str:
    """A concrete path with its values templated: ``/orders/17/items`` -> ``/orders/{id}/items``."""
    if not path:
        return "/"
    parts = path.split("/")
    return "/".join(_segment(part) for part in parts) if any(_valued(p) for p in parts) else path


def _valued(segment: str) -> bool:
    return bool(segment) and (segment.isdigit() or any(c.isdigit() for c in segment))


def _segment(segment: str) -> str:
    if not segment or not any(c.isdigit() for c in segment):
        return segment
    if segment.isdigit():
        return "{id}"
    if _UUID.match(segment):
        return "{uuid}"
    if _HEX.match(segment):
        return "{hex}"
    if _TOKEN.match(segment) and not _WORD.search(segment):
        return "{token}"
    return segment


def endpoint_route(route: Optional[str], path: Optional[str]) -> RouteName:
    """The name of the endpoint a request with this route (as recorded) and path belongs to."""
    if route:
        template = route_template(route)
        if not template.catch_all:
            return _named(template.text)
        return RouteName(template_path(path) if path else template.text, template.text, bool(path))
    if path:
        return RouteName(template_path(path), ANY_PATH, True)
    return RouteName("/", ANY_PATH, True)


@functools.lru_cache(maxsize=4096)
def _named(template: str) -> RouteName:
    return RouteName(template, template, False)


def endpoint_name(method: str, route: str) -> str:
    """``GET /orders/{id}`` from a method and a route as any part recorded it."""
    text = route_template(route).text if route else "/"
    return f"{method} {text}" if method else text


# --------------------------------------------------------------------------- regular expressions


def _regex_template(pattern: str) -> tuple[str, bool]:
    """A regex route (``^api/articles/(?P<slug>[^/.]+)$``) as a template, and whether it is a catch-all."""
    out: list[str] = []
    catch_all = False
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            escaped = pattern[i + 1]
            end = _after_quantifier(pattern, i + 2)
            if escaped in "AZzbB":
                pass  # anchors
            elif escaped.isalnum():  # \d+, \w+ outside a group: an unnamed parameter
                out.append(_param(None, pattern[i:end]))
                catch_all = catch_all or _holds_path(pattern[i:end])
                i = end
                continue
            else:
                out.append(escaped)
            i += 2
        elif c in "^$?*+|":
            i += 1
        elif c == "{" and _QUANTIFIER.match(pattern, i):
            i = _QUANTIFIER.match(pattern, i).end()
        elif c == "[":
            end = _after_quantifier(pattern, _class_end(pattern, i))
            out.append(_param(None, pattern[i:end]))
            catch_all = catch_all or _holds_path(pattern[i:end])
            i = end
        elif c == ".":
            end = _after_quantifier(pattern, i + 1)
            if end > i + 1:  # .* or .+: anything, slashes included
                out.append("{path}")
                catch_all = True
            else:
                out.append(".")  # "robots.txt$": a dot meant literally
            i = end
        elif c == "(":
            text, holds, i = _group(pattern, i)
            out.append(text)
            catch_all = catch_all or holds
        else:
            out.append(c)
            i += 1
    return "".join(out), catch_all


_QUANTIFIER = re.compile(r"\{\d*(?:,\d*)?\}\??")


def _group(pattern: str, start: int) -> tuple[str, bool, int]:
    """A group at ``start``: its text in the template, whether it holds a path, and where it ends."""
    close = _group_end(pattern, start)
    body = pattern[start + 1:close]
    end = _after_quantifier(pattern, close + 1)
    whole = pattern[start:end]
    if body.startswith("?P<") and ">" in body:
        name = body[3:body.index(">")]
        return _param(name, whole), _holds_path(whole), end
    if body.startswith("?:"):
        if _holds_path(whole):
            return "{path}", True, end
        inner, holds = _regex_template(body[2:])
        return inner, holds, end
    if body.startswith("?"):
        return "", False, end  # lookaround, flags, comments: no text of their own
    return _param(None, whole), _holds_path(whole), end


def _param(name: Optional[str], regex: str) -> str:
    if name:
        return "{" + name + "}"
    if _holds_path(regex):
        return "{path}"
    compiled = _compiled(regex)
    if compiled is not None and compiled.fullmatch("12345") and not compiled.fullmatch("abc"):
        return "{id}"
    return "{param}"


def _holds_path(regex: str) -> bool:
    """Whether a piece of a route's regex can match text with a slash in it."""
    compiled = _compiled(regex)
    return compiled is not None and any(compiled.fullmatch(sample) for sample in _SLASHED)


@functools.lru_cache(maxsize=1024)
def _compiled(regex: str) -> Optional[re.Pattern]:
    try:
        return re.compile(regex)
    except (re.error, RecursionError, OverflowError):  # a route is text someone wrote: it may not be a regex
        return None


def _group_end(pattern: str, start: int) -> int:
    depth, i, n = 0, start, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            i = _class_end(pattern, i)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return n - 1


def _class_end(pattern: str, start: int) -> int:
    """The index after the character class that starts at ``start``."""
    i, n = start + 1, len(pattern)
    if i < n and pattern[i] == "^":
        i += 1
    if i < n and pattern[i] == "]":
        i += 1
    while i < n:
        if pattern[i] == "\\":
            i += 2
            continue
        if pattern[i] == "]":
            return i + 1
        i += 1
    return n


def _after_quantifier(pattern: str, i: int) -> int:
    if i < len(pattern):
        if pattern[i] in "*+?":
            i += 1
            if i < len(pattern) and pattern[i] in "?+":
                i += 1
        else:
            match = _QUANTIFIER.match(pattern, i)
            if match:
                i = match.end()
    return i
