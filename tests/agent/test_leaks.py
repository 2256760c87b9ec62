"""No planted value reaches the store: real apps under the agent, a real collector, the whole file searched.

A Flask app (psycopg2, login with a session and a bearer token) and a Django
app (the ORM on psycopg 3, CSRF, pagination) run under ``takealook-run`` and
gunicorn and export to ``takealook collect``. A client that sends a planted
User-Agent logs in with a planted password, searches for a planted term and
email, opens a planted username's profile (which calls the Django app with the
username in the path and the email in the query), types an order reference the
database fails to cast, signs up with an email already taken (a unique
violation whose DETAIL echoes it), notifies a webhook that is down (the error
carries the URL), creates a Django account with a taken email, and hits
Django's own ValueError and a cast failure through psycopg 3.

Then the collector is stopped and every byte of the store (the database file,
its WAL, and every text of every table) is searched for every planted value:
the goal, and the assertion, is zero. Positive controls (an order id, a page
size, the SQLSTATEs, the routes) must be found, so the search can fail.
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
from pathlib import Path
from urllib.parse import quote, quote_plus

import psycopg
import pytest
import requests

from takealook.collector import open_store
from takealook.pgcluster import free_port
from tests.conftest import script, wait_for
from tests.processes import Processes

APPS = Path(__file__).resolve().parent / "apps" / "leaks"
PLANTED = {
    "username": "zqalicenames",
    "email": "zq.leak.person@example.org",
    "password": "zqPassw0rd-secret",
    "search": "zqsearchterm",
    "search_email": "zq.searched@example.org",
    "cast": "zqcastliteral",
    "signup_email": "zq.taken@example.org",
    "signup_user": "zqsignupname",
    "hook_email": "zq.hooked@example.org",
    "user_agent": "ZqPlantedAgent/7.7",
    "django_email": "zq.django.taken@example.org",
    "django_user": "zqdjangouser",
    "django_cast": "zqdjangocast",
    "django_number": "zqdjangonumber",
    "django_search": "zqdjangosearch",
}
ORDER_ID, PAGE_SIZE = 424242, 37  # recorded on purpose: ids and paging


@pytest.fixture(scope="module")
def leak_dbs(pg):
    dsns = {"flask": pg.create_database("leakflask"), "django": pg.create_database("leakdjango")}
    import hashlib

    with psycopg.connect(dsns["flask"], autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id serial PRIMARY KEY, username text UNIQUE, email text UNIQUE NOT NULL, "
                     "password_sha256 text NOT NULL)")
        conn.execute("CREATE TABLE tokens (token text PRIMARY KEY, user_id int NOT NULL)")
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, total int)")
        conn.execute("INSERT INTO orders VALUES (%s, 10)", (ORDER_ID,))
        conn.execute("INSERT INTO users (username, email, password_sha256) VALUES (%s, %s, %s), (%s, %s, '')",
                     (PLANTED["username"], PLANTED["email"], hashlib.sha256(PLANTED["password"].encode()).hexdigest(),
                      "someone", PLANTED["signup_email"]))
    with psycopg.connect(dsns["django"], autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (id serial PRIMARY KEY, username text UNIQUE NOT NULL, "
                     "email text UNIQUE NOT NULL, name text NOT NULL)")
        conn.execute("INSERT INTO accounts (username, email, name) VALUES (%s, %s, 'Planted Person')",
                     (PLANTED["username"], PLANTED["django_email"]))
    yield dsns
    for dsn in dsns.values():
        pg.drop_database(dsn)


def _server_spans(store: Path) -> dict:
    if not store.exists():
        return {}
    try:
        with open_store(store, allow_empty=True) as reader:
            spans = [s for trace in reader.iter_traces() for s in trace]
    except Exception:  # noqa: BLE001 - the collector may be creating the file right now
        return {}
    counts: dict = {}
    for span in spans:
        if span.kind == "server":
            counts[span.service] = counts.get(span.service, 0) + 1
    return counts


def _browse(flask: str, django: str) -> tuple[int, int]:
    """Everything a user does; returns the number of requests each app served."""
    served = {"flask": 0, "django": 0}
    with requests.Session() as client:
        client.headers["User-Agent"] = PLANTED["user_agent"]

        def call(app, method, url, **kwargs):
            served[app] += 1
            return client.request(method, url, timeout=30, **kwargs)

        login = call("flask", "POST", f"{flask}/login", data={"email": PLANTED["email"], "password": PLANTED["password"]})
        assert login.status_code == 200 and "session" in client.cookies
        auth = {"Authorization": f"Bearer {login.json()['token']}"}
        found = call("flask", "GET", f"{flask}/search", headers=auth, params={
            "q": PLANTED["search"], "email": PLANTED["search_email"], "page": 1, "per_page": PAGE_SIZE})
        assert found.status_code == 200
        profile = call("flask", "GET", f"{flask}/users/{PLANTED['username']}/profile", headers=auth)
        assert profile.json()["account"] == 404  # the email differs between the two apps: not found there
        served["django"] += 1
        assert call("flask", "GET", f"{flask}/orders/{PLANTED['cast']}", headers=auth).status_code == 500
        assert call("flask", "GET", f"{flask}/orders/by-id/{ORDER_ID}", headers=auth).status_code == 200
        assert call("flask", "POST", f"{flask}/signup", data={
            "email": PLANTED["signup_email"], "username": PLANTED["signup_user"]}).status_code == 500
        assert call("flask", "GET", f"{flask}/notify/{PLANTED['username']}", headers=auth,
                    params={"email": PLANTED["hook_email"]}).status_code == 500

        call("django", "GET", f"{django}/api/csrf/")
        token = client.cookies["csrftoken"]
        created = call("django", "POST", f"{django}/api/accounts/", headers={"X-CSRFToken": token, "Referer": django},
                       data=json.dumps({"username": PLANTED["django_user"], "email": PLANTED["django_email"],
                                        "name": "x"}))
        assert created.status_code == 500
        listing = call("django", "GET", f"{django}/api/accounts/", params={
            "search": PLANTED["django_search"], "page": 1, "per_page": PAGE_SIZE})
        assert listing.status_code == 200
        assert call("django", "GET", f"{django}/api/accounts/by-ref/{PLANTED['django_cast']}/").status_code == 500
        assert call("django", "GET", f"{django}/api/accounts/by-number/{PLANTED['django_number']}/").status_code == 500
    return served["flask"], served["django"]


@pytest.fixture(scope="module")
def store(leak_dbs, tmp_path_factory):
    """The store after the browsing above, the collector stopped (so everything is flushed and checkpointed)."""
    tmp = tmp_path_factory.mktemp("leaks")
    path = tmp / "spans.db"
    processes = Processes(tmp, cwd=APPS)
    otlp, flask, django, hooks = free_port(), free_port(), free_port(), free_port()
    try:
        processes.start([script("takealook"), "collect", "--listen", f"127.0.0.1:{otlp}", "--grpc", "off",
                         "--store", str(path), "--quiet"], port=otlp, env={})
        common = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp}"}
        processes.start([script("takealook-run"), "--service", "accounts", script("gunicorn"), "-w", "1",
                         "-b", f"127.0.0.1:{django}", "leaks_site.wsgi"], port=django,
                        env={**common, "LEAKS_DJANGO_DSN": leak_dbs["django"]})
        processes.start([script("takealook-run"), "--service", "web", script("gunicorn"), "-w", "1",
                         "-b", f"127.0.0.1:{flask}", "flaskapp:app"], port=flask,
                        env={**common, "LEAKS_FLASK_DSN": leak_dbs["flask"],
                             "LEAKS_ACCOUNTS_URL": f"http://127.0.0.1:{django}",
                             "LEAKS_HOOKS_URL": f"http://127.0.0.1:{hooks}"})
        try:
            served_flask, served_django = _browse(f"http://127.0.0.1:{flask}", f"http://127.0.0.1:{django}")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{processes.logs()}") from None
        expected = {"web": served_flask, "accounts": served_django}
        wait_for(lambda: _server_spans(path) == expected, 45,
                 message=f"{expected} server spans in the store\n{processes.logs()}")
    finally:
        processes.stop()
    return path


def _store_texts(path: Path) -> list[tuple[str, str]]:
    """(where, text): the raw bytes of the database and its side files, and every value of every table."""
    texts = []
    for side in sorted(path.parent.glob(path.name + "*")):
        texts.append((side.name, side.read_bytes().decode("latin-1")))
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in connection.execute(f'SELECT * FROM "{table}"'):
                texts.append((table, " ".join(v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in row)))
    finally:
        connection.close()
    return texts


def _forms(value: str) -> set:
    """The value as it could be written: as is, percent-encoded (in a URL), JSON-escaped."""
    return {form.lower() for form in (value, quote_plus(value), quote(value, safe=""), json.dumps(value)[1:-1])}


def test_no_planted_value_is_in_the_store(store):
    texts = [(where, text.lower()) for where, text in _store_texts(store)]
    found = {name: sorted({where for where, text in texts for form in _forms(value) if form in text})
             for name, value in PLANTED.items()}
    found = {name: where for name, where in found.items() if where}
    # Every planted value shares the "zq" prefix: nothing of it anywhere, in any case.
    prefix = sorted({where for where, text in texts if re.search("zq", text, re.IGNORECASE)})
    print(f"planted values found in the store: {len(found)} of {len(PLANTED)}: {sorted(found)}")
    assert found == {} and prefix == [], (found, prefix)


def test_what_analyses_need_is_there(store):
    """Positive controls: the same search finds what is recorded on purpose, so it could fail above."""
    texts = " ".join(text for _, text in _store_texts(store))
    assert str(ORDER_ID) in texts and f"per_page={PAGE_SIZE}" in texts
    with open_store(store) as reader:
        spans = [s for trace in reader.iter_traces() for s in trace]
    servers = {(s.service, s.http_route, s.url_path, s.http_status) for s in spans if s.kind == "server"}
    assert ("web", "/users/<username>/profile", "/users/REDACTED/profile", 200) in servers
    assert ("web", "/orders/by-id/<int:order_id>", f"/orders/by-id/{ORDER_ID}", 200) in servers
    assert ("accounts", "/api/accounts/<str:username>/", "/api/accounts/REDACTED/", 404) in servers
    messages = {s.status_message for s in spans if s.status == "error" and s.status_message}
    assert 'InvalidTextRepresentation: invalid input syntax for type integer: "?" (SQLSTATE 22P02)' in messages
    assert 'UniqueViolation: duplicate key value violates unique constraint "users_email_key" ' \
           '(SQLSTATE 23505)' in messages
    assert 'IntegrityError: duplicate key value violates unique constraint "accounts_email_key" ' \
           '(SQLSTATE 23505)' in messages
    search = next(s for s in spans if s.kind == "server" and s.http_route == "/search")
    assert search.attributes()["url.query"] == f"q=REDACTED&email=REDACTED&page=1&per_page={PAGE_SIZE}"
    assert "user_agent.original" not in search.attributes()
    assert search.attributes()["client.address"] == "127.0.0.1"  # a loopback peer is not a user: kept whole
