"""The agent on the oldest and newest Python of the machine: old backends run old Pythons.

Each interpreter gets a fresh virtual environment with ``pip install <this checkout>``
(the bare install: the agent and OpenTelemetry versions pip picks for that Python,
e.g. SDK 1.41 on 3.9), Flask, requests and psycopg2; then a Flask app under
``takealook-run`` serves a request that queries PostgreSQL and calls a second
app, and the spans arrive with their parent links. Skipped where the machine has
only one Python.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.agent.conftest import APPS, ROOT, free_port

SERVER, CLIENT = 2, 3


def _interpreters() -> dict:
    """{(major, minor): path} of Pythons >= 3.9 found in pyenv and on PATH."""
    found = {}
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = glob.glob(os.path.join(pyenv_root, "versions", "*", "bin", "python3"))
    candidates += [shutil.which(f"python3.{minor}") or "" for minor in range(9, 16)]
    for path in filter(None, candidates):
        try:
            out = subprocess.run([path, "-c", "import sys, venv; print(sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            continue
        match = re.match(r"\((\d+), (\d+)\)", out.stdout.strip())
        if out.returncode == 0 and match and (int(match[1]), int(match[2])) >= (3, 9):
            found.setdefault((int(match[1]), int(match[2])), path)
    return found


_FOUND = _interpreters()
_CHOSEN = sorted({min(_FOUND), max(_FOUND)}) if _FOUND else []
_CHOSEN = [v for v in _CHOSEN if v != sys.version_info[:2]]


@pytest.mark.parametrize("version", _CHOSEN or [None], ids=lambda v: f"py{v[0]}{v[1]}" if v else "none")
def test_agent_on_other_pythons(version, tmp_path, apps, app_dbs, sink):
    if version is None:
        pytest.skip("no Python other than the running one is installed")
    venv = tmp_path / "venv"
    subprocess.run([_FOUND[version], "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(ROOT), "flask",
                              "requests", "psycopg2-binary"], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    inner, outer = free_port(), free_port()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "GATEWAY_DSN": app_dbs["gateway"], "PYTHONPATH": ""}
    run = str(venv / "bin" / "takealook-run")
    apps.start([run, "--service", "inner", str(venv / "bin" / "flask"), "--app", "gateway:app", "run",
                "--port", str(inner)], env={**env, "ORDERS_URL": "http://127.0.0.1:9"}, cwd=APPS, port=inner)
    apps.start([run, "--service", "outer", str(venv / "bin" / "flask"), "--app", "gateway:app", "run",
                "--port", str(outer)], env={**env, "ORDERS_URL": f"http://127.0.0.1:{inner}"}, cwd=APPS, port=outer)
    # outer /orders/1 calls inner /api/orders/1/ (a 404 there: the call, not the answer, matters here)
    response = requests.get(f"http://127.0.0.1:{outer}/local/2", timeout=30)
    assert response.status_code == 200, apps.logs()
    spans = sink.wait_for_spans(lambda spans: len([s for s in spans if "db.query.text" in s["attributes"]]) >= 2)
    (server,) = [s for s in spans if s["kind"] == SERVER]
    assert server["service"] == "outer" and server["name"] == "GET /local/<int:n>"
    assert server["resource"]["process.runtime.version"].startswith(f"{version[0]}.{version[1]}.")
    sql = [s for s in spans if "db.query.text" in s["attributes"]]
    assert [s["attributes"]["db.query.text"] for s in sql] == ["SELECT name FROM customers WHERE id = %s"] * 2
    assert all(s["parent_span_id"] == server["span_id"] for s in sql)
    requests.get(f"http://127.0.0.1:{outer}/orders/1", timeout=30)
    def joined(spans):
        parents = {s["parent_span_id"] for s in spans if s["service"] == "inner"}
        return any(s["span_id"] in parents for s in spans if s["service"] == "outer")

    spans = sink.wait_for_spans(joined)
    inner_spans = [s for s in spans if s["service"] == "inner" and s["kind"] == SERVER]
    assert len(inner_spans) == 1, [(s["service"], s["name"], s["kind"]) for s in spans]
    (inner_server,) = inner_spans
    (call,) = [s for s in spans if s["span_id"] == inner_server["parent_span_id"]]
    assert call["service"] == "outer" and call["kind"] == CLIENT and call["trace_id"] == inner_server["trace_id"]
