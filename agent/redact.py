r"""URLs as the agent records them: ids and the app's own words kept, personal values ``REDACTED``.

A request's URL carries what its user typed or is: a search term, an email in
a query string, a username in a path (``/users/alice/profile``). What analyses
need of it is its shape (which endpoint, which page of a list) and the ids a
load test can replay, so that is what is kept (docs/agent.md, "What is
recorded", says the same to users):

Query strings (server ``url.query``, client ``url.full``). Parameter names are
kept. A value is kept when it is a number, or when the parameter pages or sorts
(``page``, ``per_page``, ``limit``, ``offset``, ``sort``, ``order``, ... see
``PAGING``) and the value is a plain word such as ``-created_at``. Any other
value is ``REDACTED``; so is every value of a parameter whose name looks secret
(``token``, ``key``, ``password``, ``session``, ...) and a number whose name
looks personal (``phone``, ``zip``, ``card``, ...). A parameter whose name is
not a plain name (``alice@example.org`` as a bare key) is ``REDACTED`` whole.
``TAKEALOOK_RECORD_QUERY_VALUES`` changes this: ``all`` keeps every value but the
secret-looking ones, ``none`` keeps no value, a list of names keeps those
parameters' values too.

Paths (server ``url.path``, client ``url.full``). A segment is kept when it is
an id (digits, a UUID, 8 to 24 hexadecimal digits with a digit among them) or
a literal word of the request's route (``users`` and ``profile`` in
``/users/<username>/profile``); any other segment is ``REDACTED``, and so is a
route parameter whose name looks secret (``/reset/<token>``), id or not.
Without a route (a 404, an outgoing call) the literal words of every route this
process has served count, and a few words that structure API paths everywhere
(``api``, ``v1``, ``internal``, ... see ``API_WORDS``).

Under a catch-all route (a parameter that holds slashes: Wagtail's
``^((?:[\w\-]+/)*)$``, Flask's ``<path:...>``, Starlette's ``{p:path}``) the
path is the name of a page in a tree the site publishes (``/blog/2024-review/``),
and analyses name such endpoints by it, so its segments are kept when they are
page slugs: lowercase words, digits, ``-`` and ``_``, each word all letters,
all digits or at most four characters. Anything else (an email, a mixed-case
token, ``x7k2m9q``) is ``REDACTED``.

``TAKEALOOK_RECORD_PATH_VALUES``: ``all`` keeps paths whole, ``ids`` keeps only
ids and route words (no slugs under catch-all routes either), a list of route
parameter names keeps those parameters' values (``sku,slug``).

The peer's address (server ``client.address``). Behind a proxy or a PaaS
router it is the proxy, an address of the platform's own network, and tells
which hop the request came through: addresses that are not public (loopback,
private, link-local, shared) are kept whole. A public address is a user's, so
only its network is kept: the first three bytes of an IPv4 address
(``203.0.113.0``), the first 48 bits of an IPv6 one (``2001:db8:85a3::``);
anything that is not an address is ``REDACTED``.
``TAKEALOOK_RECORD_CLIENT_ADDRESS``: ``full`` keeps it whole, ``off`` records none.

Everything here runs once per request, so it is plain string work: a split, set
lookups, one compiled regular expression for ids; routes are parsed once.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional
from urllib.parse import unquote_plus, urlsplit, urlunsplit

REDACTED = "REDACTED"

SECRET_NAME = re.compile(
    r"(?i)(token|secret|passw|pwd|auth|key|signature|sig|session|cookie|credential|code|jwt|bearer|otp|nonce)")
# Numbers under these names are personal (a phone number, a postcode, a card): whole words or long stems.
_PERSONAL_STEMS = re.compile(r"(?i)(phone|mobile|birth|postcode|postal|passport|iban|ssn|social)")
_PERSONAL_WORDS = frozenset(("tel", "zip", "zipcode", "dob", "pin", "card", "cvv", "cvc", "tax", "age"))
PAGING = frozenset((
    "page", "per_page", "perpage", "page_size", "pagesize", "limit", "offset", "start", "size",
    "sort", "sort_by", "sortby", "sort_order", "order", "order_by", "orderby", "ordering", "direction", "dir",
    "format", "fields", "expand", "include",
))
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,64}", re.ASCII)
_WORD_VALUE = re.compile(r"[A-Za-z0-9_.,:+\-]{1,64}", re.ASCII)
_NUMBER = re.compile(r"-?\d{1,20}(?:\.\d{1,20})?", re.ASCII)
_ID = re.compile(r"\d{1,20}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
                 r"|(?=[a-fA-F]*\d)[0-9a-fA-F]{8,24}", re.ASCII)
_PARAM = re.compile(r"<(?:[^<>:]*:)?([A-Za-z_]\w*)>|\(\?P<([A-Za-z_]\w*)>|\{([A-Za-z_]\w*)(?::[^}]*)?\}")
_NOT_LITERAL = re.compile(r"[<>(){}\[\]\\^$*+?|]")
# A page slug under a catch-all route: lowercase words joined by - or _; a word mixing letters and digits
# only when short (v2, h2o), so tokens (x7k2m9q) are not taken for page names.
_SLUG = re.compile(r"(?:[a-z]+|\d+|[a-z0-9]{1,4})(?:[-_](?:[a-z]+|\d+|[a-z0-9]{1,4}))*", re.ASCII)
_MAX_SLUG = 80
_CLASS = re.compile(r"\[((?:\\.|[^\]\\])*)\]")
# Words that structure API paths everywhere, kept in paths without a route of this process (an outgoing
# call to /api/v2/orders/7 is /api/v2/REDACTED/7, not /REDACTED/REDACTED/REDACTED/7).
API_WORDS = frozenset(("api", "rest", "graphql", "rpc", "v1", "v2", "v3", "v4", "v5", "internal", "public",
                       "private", "admin", "health", "healthz", "status", "metrics", "static", "media"))
_MAX_ROUTES = 2048
_MAX_WORDS = 4096
_MAX_NAMES = 1024
_MAX_REMEMBERED = 4096  # results kept; beyond, start over
_MAX_REMEMBERED_LENGTH = 512  # longer inputs are worked out each time, not kept
_URL = object()  # the key's second part for a client URL (a server path has its route there)
_KEEP, _HIDE, _ID_ONLY = "keep", "hide", "id only"  # what a route parameter's value becomes (by identity)
# What a query parameter's name says (compared by identity).
_NOT_PLAIN, _LISTED, _SECRET, _PAGING, _PERSONAL, _OTHER = "not plain", "listed", "secret", "paging", "personal", \
    "other"


def is_id(segment: str) -> bool:
    if segment.isdigit() and segment.isascii():
        return len(segment) <= 20
    return len(segment) >= 8 and _ID.fullmatch(segment) is not None


def _is_number(value: str) -> bool:
    if value.isdigit() and value.isascii():
        return len(value) <= 20
    return _NUMBER.fullmatch(value) is not None


def _personal_number_name(name: str) -> bool:
    return bool(_PERSONAL_STEMS.search(name)) or any(part in _PERSONAL_WORDS for part in re.split(r"[^a-z]+", name))


def is_slug(segment: str) -> bool:
    return len(segment) <= _MAX_SLUG and _SLUG.fullmatch(segment) is not None


def _holds_slashes(route: str) -> bool:
    """Whether a parameter of the route can match ``/``: a catch-all (its pages are named by their paths)."""
    if "<path:" in route or ":path}" in route:
        return True
    if not _NOT_LITERAL.search(route):
        return False
    classes = []  # a character class: only one that takes "/" in matches slashes

    def one_class(match) -> str:
        body = match.group(1)
        classes.append(("/" in body) != body.startswith("^"))
        return "C"

    text = _CLASS.sub(one_class, route)
    # A regex group split by a slash (Wagtail's ((?:[\w\-]+/)*)) or an unbounded dot.
    return any(classes) or ".*" in text or ".+" in text or any(
        piece.count("(") != piece.count(")") for piece in text.split("/"))


class _Route:
    """A route parsed once: per segment its literal text or its parameter's name."""

    __slots__ = ("segments", "words", "catch_all", "plan")

    def __init__(self, route: str, kept_names: frozenset = frozenset()):
        text = route.strip()
        if text.startswith("/^") or text.startswith("^"):  # a Django regex route: its anchors are not words
            text = text.replace("^", "", 1)
        text = text[:-1] if text.endswith("$") else text
        self.catch_all = _holds_slashes(text)
        if not text.startswith("/"):  # Django's regex routes come without it; paths always have it
            text = "/" + text
        segments = []
        # A character class is never a word, and one holding "/" ([^/.]+) must not split a segment.
        for piece in _CLASS.sub("C", text).split("/"):
            unescaped = piece.replace("\\.", ".").replace("\\-", "-")
            if not _NOT_LITERAL.search(unescaped):
                segments.append((unescaped, None))
                continue
            match = _PARAM.search(piece)
            name = next((g for g in match.groups() if g), "") if match else ""
            segments.append((None, name.lower()))
        self.segments = tuple(segments)
        self.words = frozenset(s for s, _ in segments if s)
        # Per segment what a request's value becomes, decided once: the literal word (kept when it is the
        # word or an id), or a parameter kept whole (named in TAKEALOOK_RECORD_PATH_VALUES), REDACTED
        # (its name looks secret) or kept when an id.
        self.plan = tuple((literal, None) if literal is not None else
                          (None, _KEEP if name in kept_names else _HIDE if name and SECRET_NAME.search(name) else _ID_ONLY)
                          for literal, name in segments)


class Redactor:
    """The URL rules of one agent: its settings, and the words of the routes its process has served."""

    def __init__(self, query_mode: str = "default", query_names: Iterable[str] = (), path_mode: str = "default",
                 path_names: Iterable[str] = (), client_mode: str = "network"):
        self.query_mode = query_mode
        self.client_mode = client_mode
        self.query_names = frozenset(n.lower() for n in query_names)
        self.path_mode = path_mode
        self.path_names = frozenset(n.lower() for n in path_names)
        self._routes: dict = {}
        self._words: set = set()
        self._names: dict = {}
        # Results by their input: a server path with its route, a client URL. The same few come back
        # request after request, so most requests cost a lookup here; new route words clear them.
        self._done: dict = {}
        self._seen: set = set()  # hashes of inputs worked out once
        self._heads: dict = {}  # outgoing URLs up to their last slash, worked out
        self._clients: dict = {}

    # -- the peer's address
    def client_address(self, address: str) -> Optional[str]:
        """``client.address`` as recorded: whole, its network only, or None (not recorded)."""
        mode = self.client_mode
        if mode == "full":
            return address
        if mode == "off":
            return None
        kept = self._clients.get(address)
        if kept is None:
            kept = _network_of(address)
            if len(self._clients) >= _MAX_REMEMBERED:
                self._clients.clear()
            self._clients[address] = kept
        return kept

    # -- query strings
    def query(self, query: str) -> str:
        """A query string with the values the rules do not keep replaced by REDACTED."""
        if not query:
            return query
        return "&".join([self._parameter(item) for item in query.split("&")])

    def _parameter(self, item: str) -> str:
        raw_name, _, value = item.partition("=")
        kind = self._names.get(raw_name)
        if kind is None:
            kind = self._name_kind(raw_name)
        if kind is _NOT_PLAIN:
            return REDACTED if item else item
        if not value or kind is _LISTED:
            return item
        if kind is _SECRET:
            return raw_name + "=" + REDACTED
        mode = self.query_mode
        if mode == "all":
            return item
        if mode != "none":
            if kind is not _PERSONAL and _is_number(value):
                return item
            if kind is _PAGING:
                plain = unquote_plus(value) if ("%" in value or "+" in value) else value
                if _WORD_VALUE.fullmatch(plain):
                    return item
        return raw_name + "=" + REDACTED

    def _name_kind(self, raw_name: str) -> str:
        """What a parameter's name says about its values; remembered (names repeat request after request)."""
        name = unquote_plus(raw_name).lower() if ("%" in raw_name or "+" in raw_name) else raw_name.lower()
        if not _PLAIN_NAME.fullmatch(name):
            kind = _NOT_PLAIN
        elif name in self.query_names:
            kind = _LISTED
        elif SECRET_NAME.search(name):
            kind = _SECRET
        elif name in PAGING:
            kind = _PAGING
        elif _personal_number_name(name):
            kind = _PERSONAL
        else:
            kind = _OTHER
        if len(self._names) >= _MAX_NAMES:
            self._names.clear()  # many distinct names (made up by a client): start over rather than grow
        self._names[raw_name] = kind
        return kind

    # -- paths
    def server_path(self, path: str, route: Optional[str]) -> str:
        """The path of a request served, by the route the framework matched (None: no route)."""
        if self.path_mode == "all" or not path:
            return path
        done = self._done.get((path, route))
        if done is None:
            done = self._remember((path, route), self._server_path(path, route))
        return done

    def _remember(self, key, result: str) -> str:
        """Keeps a result when its input comes back: a path or URL with an id new at every request (most
        apps) would otherwise fill the results and empty them every few thousand requests (1 µs a
        request of keeping and growing, more than working most of them out)."""
        if len(key[0]) <= _MAX_REMEMBERED_LENGTH:
            seen = hash(key)
            if seen in self._seen:
                if len(self._done) >= _MAX_REMEMBERED:
                    self._done.clear()
                self._done[key] = result
            else:
                if len(self._seen) >= 2 * _MAX_REMEMBERED:
                    self._seen.clear()
                self._seen.add(seen)
        return result

    def _server_path(self, path: str, route: Optional[str]) -> str:
        if not route:
            return self._by_words(path, self._words)
        parsed = self.learn(route)
        if parsed.catch_all and self.path_mode != "ids":  # a page tree: its slugs name the pages
            return "/".join([s if (not s or s in parsed.words or is_id(s) or is_slug(s)) else REDACTED
                             for s in path.split("/")])
        segments = path.split("/")
        plan = parsed.plan
        if len(segments) != len(plan):  # a parameter spanning slashes (<path:p>): words alone
            return self._by_words(path, parsed.words)
        out = []
        for actual, (literal, rule) in zip(segments, plan):
            if actual == literal or not actual or rule is _KEEP:
                out.append(actual)
            elif rule is _HIDE:
                out.append(REDACTED)
            else:  # a literal word that differs, or a parameter kept when it is an id
                out.append(actual if is_id(actual) else REDACTED)
        return "/".join(out)

    def client_path(self, path: str) -> str:
        """The path of an outgoing call: ids and the words of this process's routes."""
        if self.path_mode == "all" or not path:
            return path
        return self._by_words(path, self._words)

    def _by_words(self, path: str, words) -> str:
        return "/".join([s if (not s or s in words or s in API_WORDS or is_id(s)) else REDACTED
                         for s in path.split("/")])

    def learn(self, route: str) -> _Route:
        """The route parsed (once); its literal words count for paths without a route from now on."""
        parsed = self._routes.get(route)
        if parsed is not None:
            return parsed
        parsed = _Route(route, self.path_names)
        if len(self._routes) < _MAX_ROUTES:
            self._routes[route] = parsed
            if len(self._words) < _MAX_WORDS:
                self._words.update(parsed.words)
            self._done.clear()  # results made without these words are out of date
            self._heads.clear()
        return parsed

    # -- whole URLs
    def url(self, url: str) -> str:
        """An outgoing call's URL: no user:password@, no fragment, path and query by the rules."""
        done = self._done.get((url, _URL))
        if done is None:
            done = self._remember((url, _URL), self._url(url))
        return done

    def _url(self, url: str) -> str:
        # Most outgoing URLs are a fixed part and an id (http://stock/api/items/7): the part up to the last
        # slash is worked out once and kept, so a new id costs its own segment only.
        last = url.rfind("/")
        start = url.find("://")
        if 0 < start < last - 2 and "?" not in url and "#" not in url and "@" not in url:
            head, tail = url[:last + 1], url[last + 1:]
            kept = self._heads.get(head)
            if kept is None:
                kept = self._whole_url(head)
                if len(head) <= _MAX_REMEMBERED_LENGTH:
                    if len(self._heads) >= _MAX_NAMES:
                        self._heads.clear()
                    self._heads[head] = kept
            words = self._words
            return kept + (tail if (not tail or tail in words or tail in API_WORDS or is_id(tail)) else REDACTED)
        return self._whole_url(url)

    def _whole_url(self, url: str) -> str:
        scheme, sep, rest = url.partition("://")
        if not sep or not scheme.isalpha():
            try:
                parts = urlsplit(url)
            except ValueError:
                return ""
            netloc = parts.netloc.rpartition("@")[2]
            return urlunsplit((parts.scheme, netloc, self.client_path(parts.path), self.query(parts.query), ""))
        rest = rest.partition("#")[0]
        path_at = len(rest)
        for mark in "/?":
            found = rest.find(mark)
            if 0 <= found < path_at:
                path_at = found
        path, _, query = rest[path_at:].partition("?")
        netloc = rest[:path_at].rpartition("@")[2]
        return f"{scheme.lower()}://{netloc}{self.client_path(path)}{'?' + self.query(query) if query else ''}"


_NETWORKS: dict = {}


def _infrastructure(ipaddress) -> dict:
    """Networks of platforms, not of users: RFC 1918, carrier-grade NAT (RFC 6598), unique local IPv6."""
    if not _NETWORKS:
        _NETWORKS[4] = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                                "100.64.0.0/10"))
        _NETWORKS[6] = (ipaddress.ip_network("fc00::/7"),)
    return _NETWORKS


def _network_of(address: str) -> str:
    """A public address cut to its network (/24, /48); an address of a private network whole."""
    import ipaddress  # only here: most processes never see a public peer

    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return REDACTED
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_link_local or ip.is_unspecified or any(
            ip in network for network in _infrastructure(ipaddress)[ip.version]):
        return str(ip)
    return str(ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 48}", strict=False).network_address)


# The rules with no setting and no route known: what URLs inside exception messages get.
DEFAULT = Redactor()
