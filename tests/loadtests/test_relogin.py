"""A user logs in again after a 401 (an expired token), once per 401, under a real ``load run``.

The server on 127.0.0.1 hands out numbered tokens and lets each serve 5 requests; the 6th answers 401, as
an API whose tokens expire does. Every 401 must be one failure "not logged in" followed by one login.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from takealook.loadtests.runs import load_run
from tests.conftest import script

SUITE = '''
from locust import constant, task

from takealook.loadtests.users import JsonLogin, TakealookUser


class Api(TakealookUser):
    wait_time = constant(0.01)
    login = JsonLogin("POST", "/token", {"user": "${API_USER}"}, token_from="token")

    @task
    def data(self):
        self.client.get("/data", name="/data")
'''


class _ExpiringTokens(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    lock = threading.Lock()
    issued = 0
    uses: dict = {}
    log: list = []

    def log_message(self, *args):
        pass

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.lock:
            type(self).issued += 1
            token = f"t{self.issued}"
            self.uses[token] = 0
            self.log.append(("login", token, self.headers.get("tracestate")))
        self._answer(200, {"token": token})

    def do_GET(self):
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        with self.lock:
            valid = token in self.uses and self.uses[token] < 5
            if valid:
                self.uses[token] += 1
            self.log.append(("data" if valid else "401", token, self.headers.get("tracestate")))
        self._answer(200 if valid else 401, {"ok": valid})


def test_a_user_logs_in_again_after_each_401(tmp_path):
    suite = tmp_path / "suite.py"
    suite.write_text(SUITE)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ExpiringTokens)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host = f"http://127.0.0.1:{server.server_port}"
        out = subprocess.run([script("takealook"), "load", "run", suite, "--host", host, "--label", "relogin", "--runs-dir", tmp_path / "runs", "--users", "1",
                              "--duration", "2s", "--drain", "1s"],
                             capture_output=True, text=True, timeout=60, env={**os.environ, "API_USER": "bob"})
    finally:
        server.shutdown()
    assert out.returncode == 0, out.stderr
    log = list(_ExpiringTokens.log)
    kinds = [kind for kind, _, _ in log]
    assert kinds.count("401") >= 3
    # After each 401 the next request is a login, and each token serves its 5 requests.
    assert all(kinds[i + 1] == "login" for i, kind in enumerate(kinds[:-1]) if kind == "401")
    assert kinds.count("login") in (kinds.count("401"), kinds.count("401") + 1)
    assert {state for _, _, state in log} == {"takealook=load:relogin"}
    samples = load_run("relogin", tmp_path / "runs").samples
    failures = {s.error for s in samples if s.failed and s.error != "unfinished when the run ended"}
    assert failures == {"CatchResponseError: not logged in: 401 Unauthorized"}
