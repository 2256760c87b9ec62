"""The pieces of logged-in suites without Locust: settings, forms, answers, login redirects, the trace mark on
every redirect hop (a real HTTP server on loopback), the suite text and ``load generate``'s bad input."""

from __future__ import annotations

import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from takealook.errors import InputError
from takealook.loadtests import login, marking
from takealook.loadtests.generate import Endpoint, select
from takealook.loadtests.suitefile import FormLogin, JsonLogin, SuiteOptions, render
from tests.conftest import script

DJANGO_FORM = """<html><head><title>Log in</title></head><body>
<form method="get" action="/search"><input name="q"></form>
<form method="post" action="">
  <input type="hidden" name="csrfmiddlewaretoken" value="abc123">
  <input type="text" name="username" autofocus>
  <input type="password" name="password">
  <input type="hidden" name="next" value="/orders/">
  <button type="submit" name="go">Log in</button>
</form></body></html>"""


def test_the_login_form_is_found_with_its_hidden_inputs():
    form = login.parse_form(DJANGO_FORM, "/accounts/login/")
    assert form.action == "/accounts/login/" and form.method == "POST"  # empty action: the page itself
    assert form.names() == ["csrfmiddlewaretoken", "username", "password", "next"]
    assert form.hidden() == {"csrfmiddlewaretoken": "abc123", "next": "/orders/"}
    assert form.has_csrf_input and form.has_password
    flask = login.parse_form('<form method=post action="/login?next=/x"><input type=hidden name=csrf_token '
                             'value=t><input name=email><input type=password name=password></form>', "/signin")
    assert flask.action == "/login?next=/x" and flask.has_csrf_input
    bare = login.parse_form('<form action="session"><input name=user><input type=password name=pw></form>',
                            "/account/login")
    assert bare.action == "/account/session" and not bare.has_csrf_input
    assert login.parse_form("<p>no form here</p>", "/") is None


@pytest.mark.parametrize("location, paths, expected", [
    ("/accounts/login/?next=/orders/", (), True),
    ("http://shop.example/users/sign_in?return_to=%2Fcart", (), True),
    ("/login", ("/login",), True),
    ("/login/", ("/login",), True),
    ("/login", (), False),  # a login path without a next-style parameter: maybe a link, not a bounce
    ("/orders/2/", (), False),
    ("/blog/logins-explained?next=2", (), False),
    ("", ("/login",), False),
])
def test_login_redirects(location, paths, expected):
    assert login.login_redirect(location, paths) is expected


def test_variables_are_read_when_the_suite_runs_and_named_when_missing():
    assert login.variables("${A} and ${B_2} and ${A} but not $C or ${1X}") == ["A", "B_2"]
    assert login.expand("Token ${T}", {"T": "xyz"}) == "Token xyz"
    with pytest.raises(login.MissingVariable, match=r"environment variable T is not set \(the header X reads"):
        login.expand("Token ${T}", {}, "the header X")
    body = {"user": "${U}", "nested": [{"${K}": 1}], "n": 2, "ok": True}
    assert login.expand_json(body, {"U": 'a"b', "K": "key"}) == {"user": 'a"b', "nested": [{"key": 1}], "n": 2,
                                                                 "ok": True}
    assert login.missing_variables("${A} ${B}", {"A": ""}) == ["B"]


def test_token_paths_and_settings():
    answer = {"access": "a", "refresh": "r", "user": {"token": "t", "roles": [{"id": 7}]}}
    assert login.dig(answer, "access") == "a" and login.dig(answer, "user.token") == "t"
    assert login.dig(answer, "user.roles.0.id") == 7
    with pytest.raises(KeyError):
        login.dig(answer, "user.key")
    assert login.keys_of(answer) == "access, refresh, user" and login.keys_of([1]) == "a list, not an object"
    assert login.parse_header("X-Tenant:  acme ") == ("X-Tenant", "acme")
    assert login.parse_request_line("post /api/token/") == ("POST", "/api/token/")
    for bad in (lambda: login.parse_header("no colon"), lambda: login.parse_header("Bad Name: x"),
                lambda: login.parse_request_line("/api/token/"), lambda: login.parse_field("novalue"),
                lambda: login.check_token_header("Authorization: Bearer")):
        with pytest.raises(InputError):
            bad()


class _Redirects(BaseHTTPRequestHandler):
    seen: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.seen.append((self.path, self.headers.get("traceparent"), self.headers.get("tracestate")))
        hops = {"/a": "/b", "/b": "/c"}
        self.send_response(302 if self.path in hops else 200)
        if self.path in hops:
            self.send_header("Location", hops[self.path])
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_every_redirect_hop_gets_its_own_traceparent_and_keeps_the_mark():
    class Session(requests.Session):
        pass

    marking.install(Session)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirects)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Redirects.seen = []
    try:
        headers = {"tracestate": "vendor=1"}
        first = marking.mark(headers, "run-9")
        with Session() as session:
            assert session.get(f"http://127.0.0.1:{server.server_port}/a", headers=headers, timeout=10).ok
    finally:
        server.shutdown()
    assert [path for path, _, _ in _Redirects.seen] == ["/a", "/b", "/c"]
    ids = [marking.trace_id_of(tp) for _, tp, _ in _Redirects.seen]
    assert ids[0] == first and len(set(ids)) == 3  # a trace per hop
    assert {state for _, _, state in _Redirects.seen} == {"takealook=load:run-9,vendor=1"}
    given = {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"}
    assert marking.mark(given, "x") == "ab" * 16 and given["tracestate"] == "takealook=load:x"


FAST_HOPS = r"""
import json, sys, threading
from http.server import ThreadingHTTPServer
sys.path.insert(0, sys.argv[1])
from locust.contrib.fasthttp import FastHttpSession, FastRequest
from locust.env import Environment
from takealook.loadtests import marking
from tests.loadtests.test_login_units import _Redirects

marking.install_fast(FastRequest)
server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirects)
threading.Thread(target=server.serve_forever, daemon=True).start()
headers = {"tracestate": "vendor=1"}
first = marking.mark(headers, "run-9")
session = FastHttpSession(f"http://127.0.0.1:{server.server_port}", Environment().events.request, user=None)
assert session.get("/a", headers=headers).status_code == 200
server.shutdown()
print(json.dumps({"first": first, "seen": _Redirects.seen}))
"""


def test_every_redirect_hop_of_a_fast_http_session_gets_its_own_traceparent():
    """Locust's FastHttpSession (geventhttpclient) follows redirects by changing the request in place: each hop
    gets a trace of its own all the same. In a process of its own: importing Locust patches it with gevent."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", FAST_HOPS, root], capture_output=True, text=True, timeout=60,
                         cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert [path for path, _, _ in found["seen"]] == ["/a", "/b", "/c"]
    ids = [marking.trace_id_of(tp) for _, tp, _ in found["seen"]]
    assert ids[0] == found["first"] and len(set(ids)) == 3  # a trace per hop
    assert {state for _, _, state in found["seen"]} == {"takealook=load:run-9,vendor=1"}


def _endpoint(method, template, requests=10, values=(("/p", 1.0),)):
    return Endpoint("web", method, template, template, requests, 1.0, 2.0, tuple(values), ())


def test_writes_logout_and_the_login_are_left_out():
    endpoints = [_endpoint("GET", "/orders/"), _endpoint("POST", "/orders/"), _endpoint("DELETE", "/orders/{id}"),
                 _endpoint("GET", "/accounts/logout/"), _endpoint("POST", "/accounts/login/"),
                 _endpoint("GET", "/accounts/login/")]
    kept, left = select(endpoints, SuiteOptions())
    assert [e.label for e in kept] == ["GET /orders/", "GET /accounts/login/"]
    assert dict(left) == {"POST /orders/": "a write: --include-writes replays writes",
                          "DELETE /orders/{id}": "a write: --include-writes replays writes",
                          "GET /accounts/logout/": "logs the user out",
                          "POST /accounts/login/": "a write: --include-writes replays writes"}
    options = SuiteOptions(login=FormLogin("/accounts/login/", (("u", "${U}"),)), include_writes=True)
    kept, left = select(endpoints, options)
    assert [e.label for e in kept] == ["GET /orders/", "POST /orders/", "DELETE /orders/{id}"]
    assert dict(left)["GET /accounts/login/"] == "the login: each user logs in by itself"


def test_the_suite_keeps_variables_and_reads_well(monkeypatch):
    monkeypatch.setenv("API_PASSWORD", "hunter2")
    options = SuiteOptions(headers=(("X-Tenant", "${TENANT}"),),
                           login=JsonLogin("POST", "/api/token/", '{"username": "bob", "password": "${API_PASSWORD}"}',
                                           "user.token", "Authorization: Token {token}"))
    text = render([_endpoint("GET", "/orders/{id}", values=(("/orders/1", 9.0), ("/orders/2", 1.0)))],
                  "http://127.0.0.1:8000", "3 traces", 1.0, options, [("POST /orders/", "a write")])
    compile(text, "suite.py", "exec")
    assert "hunter2" not in text and "${API_PASSWORD}" in text and "${TENANT}" in text
    assert ("LOGIN = JsonLogin('POST', '/api/token/', {'username': 'bob', 'password': '${API_PASSWORD}'}, "
            "token_from='user.token', token_header='Authorization: Token {token}')") in text
    assert "HEADERS = {'X-Tenant': '${TENANT}'}" in text and "    login = LOGIN" in text
    assert "    ('/orders/1', 9),\n    ('/orders/2', 1),\n" in text
    assert "self.client.get(pick(WEB_GET_ORDERS_ID), name='/orders/{id}')" in text
    assert "Read from the environment when the suite runs: $TENANT, $API_PASSWORD." in text
    assert "Left out: POST /orders/ (a write)." in text


@pytest.mark.parametrize("args, message", [
    (["--form", "u=x"], "--form gives fields of the login form: add --login-form PATH"),
    (["--login-form", "/l", "--form", "u=x", "--login-json", "POST /t"], "give one way to log in"),
    (["--login-form", "/l"], "--login-form needs the fields to fill"),
    (["--login-form", "login", "--form", "u=x"], "give the path of the login page"),
    (["--login-form", "/l", "--form", "nope"], "give a form field as NAME=VALUE"),
    (["--login-json", "POST"], "give the method and the path"),
    (["--login-json", "POST /t", "--body", "{user: ${U}}"], "--body is not JSON"),
    (["--login-json", "POST /t", "--token-from", "token", "--token-header", "Authorization: Token"],
     "has no {token}"),
    (["--token-from", "token"], "go with --login-json"),
    (["--login-json", "POST /t", "--token-header", "X: {token}"], "--token-header needs --token-from"),
    (["--header", "X-Tenant=acme"], 'give a header as "Name: value"'),
    (["--include-load", "--load-run", "x"], "not allowed with"),
])
def test_generate_bad_options_are_one_line(tmp_path, args, message):
    out = subprocess.run([script("takealook"), "load", "generate", "--store", tmp_path / "none.db",
                          "-o", tmp_path / "s.py", *args], capture_output=True, text=True)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 or "usage:" in out.stderr
