"""What logging in needs besides HTTP: ``${VAR}`` settings, login forms, token answers, login pages.

Standard library only (no locust): ``users.py`` uses it inside Locust, ``load
generate`` and ``load run`` use it to check settings before anything runs.

- ``${VAR}`` in a suite's login settings and headers is read from the
  environment when the suite runs (``expand``), so no password is ever written
  into a suite file. ``missing_variables(text)`` lists the ones not set.
- ``parse_form(html, page_path)``: the login ``<form>`` of a page (the one with
  a password input, else the first), its ``action`` resolved against the page,
  its inputs; ``Form.hidden()`` are the values to copy (the CSRF token among
  them).
- ``dig(answer, "user.token")``: a value in a JSON answer by dotted path
  (``items.0.id`` indexes lists).
- ``login_redirect(location, login_paths)``: whether a redirect sends the
  client to a login page: one of the suite's login paths, or a path with a
  ``login``/``signin`` segment and a ``next``-style parameter (Django's
  ``?next=``, Rails' and Flask-Login's ``?next=``/``return_to``, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, Mapping, Optional, Sequence
from urllib.parse import parse_qsl, urljoin, urlsplit

from takealook.errors import InputError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CSRF = re.compile(r"csrf|xsrf|authenticity_token|requestverificationtoken|^_token$|nonce", re.I)
_LOGIN_SEGMENT = re.compile(r"(^|/)(log[-_]?in|sign[-_]?in|sign[-_]?on)(/|$)", re.I)
_NEXT_PARAMS = frozenset(("next", "return_to", "returnto", "returnurl", "return_url", "redirect", "redirect_to",
                          "redirect_uri", "redirect_url", "continue", "came_from", "destination", "from", "back"))


class MissingVariable(InputError):
    """A ``${VAR}`` of the suite is not set in the environment."""


# --------------------------------------------------------------------------- ${VAR}


def variables(text: str) -> list[str]:
    """Names of the ``${VAR}`` references in ``text``, in order, once each."""
    return list(dict.fromkeys(_VAR.findall(text)))


def missing_variables(text: str, environ: Mapping[str, str]) -> list[str]:
    return [name for name in variables(text) if name not in environ]


def expand(text: str, environ: Mapping[str, str], what: str = "the suite") -> str:
    """``text`` with each ``${VAR}`` replaced by its value; MissingVariable names the first one not set."""
    def value(match: re.Match) -> str:
        name = match.group(1)
        if name not in environ:
            raise MissingVariable(f"environment variable {name} is not set ({what} reads ${{{name}}}): "
                                  f"export {name}=... and run again")
        return environ[name]

    return _VAR.sub(value, text)


def expand_json(value: Any, environ: Mapping[str, str], what: str = "the suite") -> Any:
    """A decoded JSON value with ``${VAR}`` expanded inside its strings (keys too), never in its syntax."""
    if isinstance(value, str):
        return expand(value, environ, what)
    if isinstance(value, list):
        return [expand_json(v, environ, what) for v in value]
    if isinstance(value, dict):
        return {expand(k, environ, what): expand_json(v, environ, what) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- settings


def parse_header(text: str, option: str = "--header") -> tuple[str, str]:
    """``"Name: value"`` -> (name, value); InputError when it is not a header."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
        raise InputError(f"{option} {text!r}: give a header as \"Name: value\", "
                         "e.g. \"Authorization: Token ${API_TOKEN}\"")
    return name, value.strip()


def parse_field(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` of ``--form``."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise InputError(f"--form {text!r}: give a form field as NAME=VALUE, e.g. --form password='${{LOAD_PASSWORD}}'")
    return name.strip(), value


def parse_request_line(text: str, option: str = "--login-json") -> tuple[str, str]:
    """``"POST /api/token"`` -> ("POST", "/api/token")."""
    parts = text.split()
    if len(parts) != 2 or not parts[0].isalpha() or not parts[1].startswith("/"):
        raise InputError(f"{option} {text!r}: give the method and the path, e.g. \"POST /api/auth/token/\"")
    return parts[0].upper(), parts[1]


def check_token_header(template: str) -> tuple[str, str]:
    name, value = parse_header(template, "--token-header")
    if "{token}" not in value:
        raise InputError(f"--token-header {template!r} has no {{token}}: e.g. \"Authorization: Bearer {{token}}\"")
    return name, value


# --------------------------------------------------------------------------- forms


@dataclass(frozen=True)
class Form:
    action: str  # a path (with query), resolved against the page
    method: str
    inputs: tuple[tuple[str, str, str], ...]  # (name, type, value) in page order

    def names(self) -> list[str]:
        return [name for name, _, _ in self.inputs]

    def hidden(self) -> dict[str, str]:
        return {name: value for name, kind, value in self.inputs if kind == "hidden"}

    @property
    def has_csrf_input(self) -> bool:
        return any(_CSRF.search(name) for name, kind, _ in self.inputs if kind == "hidden")

    @property
    def has_password(self) -> bool:
        return any(kind == "password" for _, kind, _ in self.inputs)


class _Forms(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self.current: Optional[dict] = None

    def handle_starttag(self, tag, attrs):
        attributes = {k.lower(): (v or "") for k, v in attrs}
        if tag == "form":
            self.current = {"action": attributes.get("action", ""), "method": attributes.get("method", "post"),
                            "inputs": []}
            self.forms.append(self.current)
        elif self.current is not None and tag in ("input", "textarea", "select", "button") and attributes.get("name"):
            kind = attributes.get("type", "text" if tag == "input" else tag).lower()
            if kind not in ("submit", "button", "image", "reset"):
                self.current["inputs"].append((attributes["name"], kind, attributes.get("value", "")))

    def handle_endtag(self, tag):
        if tag == "form":
            self.current = None


def parse_form(html: str, page_path: str) -> Optional[Form]:
    """The login form of a page: the first with a password input, else the first form; None without forms."""
    parser = _Forms()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # noqa: BLE001 - html.parser gives up on very broken markup: no form then
        return None
    if not parser.forms:
        return None
    chosen = next((f for f in parser.forms if any(kind == "password" for _, kind, _ in f["inputs"])),
                  parser.forms[0])
    target = urlsplit(urljoin(page_path, chosen["action"] or page_path))
    action = target.path + ("?" + target.query if target.query else "")
    return Form(action, (chosen["method"] or "post").upper(), tuple(chosen["inputs"]))


# --------------------------------------------------------------------------- answers


def dig(value: Any, dotted: str) -> Any:
    """``value["user"]["token"]`` for ``user.token``; list items by number. KeyError names the missing part."""
    for part in dotted.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(part)
    return value


def keys_of(value: Any) -> str:
    """What a JSON answer holds at its top, for an error message."""
    if isinstance(value, dict):
        return ", ".join(list(value)[:10]) or "nothing"
    return f"a {type(value).__name__}, not an object"


def login_redirect(location: str, login_paths: Sequence[str]) -> bool:
    """Whether a redirect to ``location`` sends the client to log in."""
    if not location:
        return False
    parts = urlsplit(location)
    path = parts.path or "/"
    if any(_same_path(path, login) for login in login_paths):
        return True
    if not _LOGIN_SEGMENT.search(path):
        return False
    return any(name.lower() in _NEXT_PARAMS for name, _ in parse_qsl(parts.query, keep_blank_values=True))


def on_login_page(path: str, login_paths: Sequence[str]) -> bool:
    return any(_same_path(path, login) for login in login_paths)


def _same_path(a: str, b: str) -> bool:
    b = urlsplit(b).path
    return (a.rstrip("/") or "/") == (b.rstrip("/") or "/")


def gist(text: str, limit: int = 120) -> str:
    """The first words of an answer, for an error line: tags and blank space dropped."""
    if "<" in text:
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
        body = re.sub(r"(?is)<(script|style|head|title)\b.*?</\1>", " ", text)
        body = re.sub(r"<[^>]+>", " ", body)
        text = body if body.strip() or title is None else title.group(1)
    words = " ".join(text.split())
    return words[:limit] + ("..." if len(words) > limit else "")
