"""`takealook traces compare` on a real app's traces: two platforms and a release side by side in one store.

The Flask blog (``apps/blog.py``: Flask-SQLAlchemy, psycopg2 pool) runs three times under
`takealook-run` and gunicorn, each exporting to one private `takealook collect`, told apart only by
``OTEL_RESOURCE_ATTRIBUTES`` as a migration would be:

- ``deployment.environment=heroku,service.version=1.4.2``;
- ``deployment.environment=aws,service.version=1.4.2``: the same code (the A/A);
- ``deployment.environment=aws,service.version=1.5.0``: the release that adds a related-posts
  query of ~60 ms to ``GET /posts/<int:post_id>`` (``BLOG_RELATED_POSTS=1``).

Requests go to the three in turn (each first in turn), so the sides share the machine's ups and
downs, as platforms serving at the same time do.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psycopg
import pytest
import requests

from takealook.collector import open_store
from takealook.pgcluster import free_port
from tests.conftest import script, wait_for
from tests.contracts import check
from tests.processes import Processes

APPS = Path(__file__).resolve().parent / "apps"
sys.path.insert(0, str(APPS))  # blog.SCHEMA

ROUNDS = 200  # requests per endpoint and side, 100 per instance: what a p95 needs to say how instances differ
INSTANCES = 2  # gunicorn processes per side, each its own service.instance.id: one series each
PATHS = ("/", "/posts/{n}", "/health")
SIDES = {"heroku": "deployment.environment=heroku,service.version=1.4.2",
         "aws": "deployment.environment=aws,service.version=1.4.2",
         "release": "deployment.environment=aws,service.version=1.5.0"}


def _roots(store: Path) -> Counter:
    if not store.exists():
        return Counter()
    try:
        with open_store(store, allow_empty=True) as reader:
            return Counter(json.loads(s.resource_json).get("service.version", "") + "/" +
                           json.loads(s.resource_json).get("deployment.environment", "")
                           for spans in reader.iter_traces() for s in spans
                           if s.kind == "server" and s.parent_span_id is None)
    except Exception:  # noqa: BLE001 - the collector may be creating the file right now
        return Counter()


@pytest.fixture(scope="module")
def store(pg, tmp_path_factory):
    from blog import SCHEMA

    dsn = pg.create_database("blog")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
    tmp = tmp_path_factory.mktemp("compare")
    path = tmp / "spans.db"
    processes = Processes(tmp, cwd=APPS)
    try:
        otlp = free_port()
        processes.start([script("takealook"), "collect", "--listen", f"127.0.0.1:{otlp}", "--grpc", "off",
                         "--store", str(path), "--quiet"], port=otlp, env={})
        ports = {}
        for side, attributes in SIDES.items():
            ports[side] = [free_port() for _ in range(INSTANCES)]
            env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp}", "OTEL_RESOURCE_ATTRIBUTES": attributes,
                   "BLOG_DSN": dsn, "BLOG_RELATED_POSTS": "1" if side == "release" else "0"}
            for port in ports[side]:
                processes.start([script("takealook-run"), "--service", "blog", script("gunicorn"), "-w", "1",
                                 "-b", f"127.0.0.1:{port}", "blog:app"], port=port, env=env)
        sessions = [(side, requests.Session()) for side in SIDES]
        # For each page and each instance, the order cycles through all six orders of the three sides, so
        # each side follows each other side as often (a request right after the release's 60 ms wait runs
        # on an idle, cooler CPU: had one side always followed the release, the A/A sides would differ by
        # 15%). Counting orders over (round, page) instead gave each page two orders only, one per
        # instance, and in both the heroku side came right after the aws one: /health's A/A differed by
        # ~10% and the verdict rightly said so one time in three.
        orders = list(itertools.permutations(sessions))
        for n in range(ROUNDS):
            for p, page in enumerate(PATHS):
                for side, session in orders[(n // INSTANCES + p) % len(orders)]:
                    port = ports[side][n % INSTANCES]
                    answer = session.get(f"http://127.0.0.1:{port}{page.format(n=1 + n % 50)}", timeout=30)
                    assert answer.status_code == 200, answer.text[:300]
        for _, session in sessions:
            session.close()
        expected = Counter({"1.4.2/heroku": ROUNDS * len(PATHS), "1.4.2/aws": ROUNDS * len(PATHS),
                            "1.5.0/aws": ROUNDS * len(PATHS)})
        wait_for(lambda: _roots(path) == expected, 60,
                 message=f"every request's trace in the store\n{processes.logs()}")
    finally:
        processes.stop()
        pg.drop_database(dsn)
    return path


def _compare(store: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([script("takealook"), "traces", "compare", "--store", str(store), *args],
                          capture_output=True, text=True, timeout=120)


def _json(out: subprocess.CompletedProcess) -> dict:
    data = json.loads(out.stdout)
    check("traces-compare", data)  # docs/json.md
    return data


def test_the_release_makes_one_endpoint_slower_and_says_why(store):
    out = _compare(store, "--before", "deployment.environment=heroku", "--after", "service.version=1.5.0",
                   "--fail-on-regression", "10", "--format", "json")
    assert out.returncode == 1, out.stderr
    data = _json(out)
    endpoints = {e["name"]: e for e in data["endpoints"]}
    assert set(endpoints) == {"GET /", "GET /posts/{post_id}", "GET /health"}
    assert all(e["requests_before"] == e["requests_after"] == ROUNDS for e in endpoints.values())
    posts = endpoints["GET /posts/{post_id}"]
    assert posts["verdict"] == "slower" and posts["p95_change_ci_pct"][0] > 0, posts
    assert posts["p95_after_ms"] - posts["p95_before_ms"] > 40
    for name in ("GET /", "GET /health"):
        assert endpoints[name]["verdict"] == "no detectable change", endpoints[name]
    # Where: the added time is SQL in the blog, and the statement is the related-posts query.
    top = posts["where"]["critical_path"][0]
    assert (top["service"], top["category"]) == ("blog", "sql") and top["share_of_change"] > 0.8, top
    assert posts["critical_path_after"]["sql"] > posts["critical_path_before"]["sql"] + 0.3
    statement = posts["where"]["statements"][0]
    assert "pg_sleep" in statement["text"] and "FROM posts p" in statement["text"], statement
    assert (statement["calls_per_request_before"], statement["calls_per_request_after"]) == (0, 1.0)
    assert statement["change_ms"] > 55
    assert "sql in blog" in posts["where"]["cause"] and "pg_sleep" in posts["where"]["cause"]
    assert {r["name"] for r in data["regressions"]} >= {"GET /posts/{post_id}"}
    assert "GET /" not in {r["name"] for r in data["regressions"]}
    assert data["before"]["attributes"] == {"deployment.environment": "heroku"}
    assert data["before"]["traces"] == data["after"]["traces"] == ROUNDS * len(PATHS)

    # The names are those of `traces report`.
    report = subprocess.run([script("takealook"), "traces", "report", "--store", str(store), "--format", "json"],
                            capture_output=True, text=True, timeout=120)
    assert set(endpoints) <= {e["endpoint"] for e in json.loads(report.stdout)["endpoints"]}


def test_two_identical_sides_show_no_change(store):
    out = _compare(store, "--before", "deployment.environment=heroku", "--after", "deployment.environment=aws",
                   "service.version=1.4.2", "--fail-on-regression", "10", "--format", "json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    data = _json(out)
    assert data["after"]["attributes"] == {"deployment.environment": "aws", "service.version": "1.4.2"}
    assert data["before"]["instances"] == data["after"]["instances"] == INSTANCES and data["warnings"] == []
    verdicts = {e["name"]: e["verdict"] for e in data["endpoints"]}
    assert verdicts == dict.fromkeys(("GET /", "GET /health", "GET /posts/{post_id}"), "no detectable change"), \
        json.dumps(data["endpoints"], indent=1)[:4000]
    assert data["regressions"] == []


def test_the_text_report_names_the_cause(store, tmp_path):
    out = _compare(store, "--before", "deployment.environment=heroku", "--after", "service.version=1.5.0")
    assert out.returncode == 0, out.stderr
    assert "GET /posts/{post_id}" in out.stdout and "slower" in out.stdout
    assert "Where: mean +" in out.stdout and "statement SELECT p.id, p.title FROM posts p" in out.stdout
    assert f"({ROUNDS * len(PATHS)} traces, {INSTANCES} instances)" in out.stdout
    html = tmp_path / "compare.html"
    out = _compare(store, "--before", "deployment.environment=heroku", "--after", "service.version=1.5.0",
                   "-o", str(html))
    assert out.returncode == 0, out.stderr
    assert "<svg" in html.read_text() and "Critical path per request" in html.read_text()


def test_a_filter_that_matches_nothing_names_the_values_seen(store):
    out = _compare(store, "--before", "deployment.environment=azure", "--after", "deployment.environment=aws")
    assert out.returncode == 2 and out.stdout == ""
    (line,) = out.stderr.strip().splitlines()
    assert "deployment.environment=azure" in line and f"aws ({6 * ROUNDS})" in line \
        and f"heroku ({3 * ROUNDS})" in line, line
    out = _compare(store, "--before", "cloud.region=eu-west-1", "--after", "deployment.environment=aws")
    (line,) = out.stderr.strip().splitlines()
    assert out.returncode == 2 and "cloud.region" in line and "deployment.environment" in line, line


def test_the_combined_report_includes_the_comparison(store):
    out = subprocess.run([script("takealook"), "report", "--store", str(store), "--before",
                          "deployment.environment=heroku", "--after", "service.version=1.5.0", "--format", "json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    check("report", data)
    compared = {e["name"]: e for e in data["traces_comparison"]["endpoints"]}
    assert compared["GET /posts/{post_id}"]["verdict"] == "slower"
    assert "comparison" not in data  # no load runs were named
