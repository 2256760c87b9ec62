"""Findings that hold on apps shaped like real ones, under `takealook-run` and gunicorn.

- ``cms`` (Django, ``apps/cms``): every page served by Wagtail's catch-all route
  ``^((?:[\\w\\-]+/)*)$``, a DRF-style API (``^api/articles/(?P<slug>[^/.]+)$``)
  that answers 401 without its token, a login with CSRF and a session, Django's
  default ``CONN_MAX_AGE = 0``, and an N+1 of 12 statements on the blog index;
- ``cms-clean``: the same site with the problems fixed (``select_related``,
  ``CONN_MAX_AGE = 60``): several endpoints and not a single finding;
- ``blog`` (Flask + Flask-SQLAlchemy, psycopg2 pool, ``apps/blog.py``): 15
  lazy loads on its front page and a loop of three COUNTs per user for 50 users.

One collector and one store for the module; each app is reported on by ``--service``.
"""

from __future__ import annotations

import json
import re
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

BLOG_PAGES, LOCATIONS, API_OK, API_DENIED, FRONT_PAGES, USER_LISTS = 20, 8, 6, 9, 20, 6


@pytest.fixture(scope="module")
def databases(pg):
    dsns = {"cms": pg.create_database("cms"), "blog": pg.create_database("blog")}
    with psycopg.connect(dsns["cms"], autocommit=True) as conn:
        conn.execute((APPS / "cms" / "schema.sql").read_text())
    from blog import SCHEMA

    with psycopg.connect(dsns["blog"], autocommit=True) as conn:
        conn.execute(SCHEMA)
    yield dsns
    for dsn in dsns.values():
        pg.drop_database(dsn)


def _cms_traffic(base: str) -> int:
    """The cms site's requests, as browsers and API clients make them; returns how many."""
    sent = 0
    with requests.Session() as browser:
        for path, times in (("/blog/", BLOG_PAGES), ("/locations/", LOCATIONS), ("/", 6), ("/about/team/", 3),
                            ("/no-such-page/", 2)):
            for _ in range(times):
                answer = browser.get(base + path, timeout=30)
                assert answer.status_code == (404 if "no-such" in path else 200), answer.text[:300]
                sent += 1
        assert browser.get(base + "/account/", allow_redirects=False, timeout=30).status_code == 302
        form = browser.get(base + "/login/", timeout=30).text
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
        login = browser.post(base + "/login/", data={"csrfmiddlewaretoken": csrf, "username": "ada",
                                                     "password": "correct horse"}, allow_redirects=False, timeout=30)
        assert login.status_code == 302, login.text[:300]
        for _ in range(3):
            assert browser.get(base + "/account/", timeout=30).json() == {"username": "ada"}
        sent += 6
    with requests.Session() as api:
        token = {"Authorization": "Token tok-0123456789"}
        for i in range(API_OK):
            assert api.get(f"{base}/api/articles?page={1 + i % 2}", headers=token, timeout=30).status_code == 200
            assert api.get(f"{base}/api/articles/article-{chr(97 + i)}", headers=token, timeout=30).status_code == 200
        for _ in range(API_DENIED):
            assert api.get(f"{base}/api/articles", timeout=30).status_code == 401
        sent += 2 * API_OK + API_DENIED
    return sent


def _blog_traffic(base: str) -> int:
    with requests.Session() as client:
        for _ in range(FRONT_PAGES):
            assert len(client.get(base + "/", timeout=30).json()) == 15
        for _ in range(USER_LISTS):
            users = client.get(base + "/api/users", headers={"Authorization": "Bearer blog-token-42"}, timeout=30)
            assert len(users.json()) == 50
        for _ in range(4):
            assert client.get(base + "/api/users", timeout=30).status_code == 401
        for post in range(1, 11):
            assert client.get(f"{base}/posts/{post}", timeout=30).status_code == 200
        for page, times in (("intro", 3), ("guide/install", 2)):
            for _ in range(times):
                assert client.get(f"{base}/docs/{page}", timeout=30).status_code == 200
        for _ in range(5):
            assert client.get(base + "/health", timeout=30).json() == {"ok": True}
    return FRONT_PAGES + USER_LISTS + 4 + 10 + 5 + 5


def _roots(store: Path) -> Counter:
    if not store.exists():
        return Counter()
    try:
        with open_store(store, allow_empty=True) as reader:
            return Counter(s.service for spans in reader.iter_traces() for s in spans
                           if s.kind == "server" and s.parent_span_id is None)
    except Exception:  # noqa: BLE001 - the collector may be creating the file right now
        return Counter()


@pytest.fixture(scope="module")
def store(databases, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real-apps")
    path = tmp / "spans.db"
    processes = Processes(tmp, cwd=APPS)
    try:
        otlp = free_port()
        processes.start([script("takealook"), "collect", "--listen", f"127.0.0.1:{otlp}", "--grpc", "off",
                         "--store", str(path), "--quiet"], port=otlp, env={})
        # The agent's default URL rules: a catch-all's pages (/blog/, /locations/) keep their slugs
        # (docs/agent.md "What is recorded"), so the pages are told apart with no setting. The API's
        # article slugs are listed, as a user would, so that load generate may replay them.
        common = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp}", "TAKEALOOK_RECORD_PATH_VALUES": "slug"}
        ports = {"cms": free_port(), "cms-clean": free_port(), "blog": free_port()}
        for service, port in ports.items():
            if service == "blog":
                env, app, workers = {"BLOG_DSN": databases["blog"]}, "blog:app", "2"
            else:
                env = {"CMS_DSN": databases["cms"], "DJANGO_SETTINGS_MODULE": "cms.settings",
                       "CMS_CLEAN": "1" if service == "cms-clean" else "0"}
                app, workers = "cms.wsgi:application", "1"
            processes.start([script("takealook-run"), "--service", service, script("gunicorn"), "-w", workers,
                             "-b", f"127.0.0.1:{port}", app], port=port, env={**common, **env})
        expected = {"cms": _cms_traffic(f"http://127.0.0.1:{ports['cms']}"),
                    "cms-clean": _cms_traffic(f"http://127.0.0.1:{ports['cms-clean']}"),
                    "blog": _blog_traffic(f"http://127.0.0.1:{ports['blog']}")}
        wait_for(lambda: _roots(path) == Counter(expected), 60,
                 message=f"every request's trace in the store\n{processes.logs()}")
    finally:
        processes.stop()
    return path


def _report(store: Path, *args: str) -> dict:
    out = subprocess.run([script("takealook"), "traces", "report", "--store", str(store), "--format", "json", *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def cms(store):
    report = _report(store, "--service", "cms")
    check("traces-report", report)  # docs/json.md: catch-all pages, connection_per_request
    return report


@pytest.fixture(scope="module")
def blog(store):
    report = _report(store, "--service", "blog")
    check("traces-report", report)  # a loop of three statements
    return report


def test_pages_of_the_catch_all_route_and_api_routes_are_named_as_users_read_them(cms):
    endpoints = {e["endpoint"]: e for e in cms["endpoints"]}
    assert set(endpoints) == {"GET /blog/", "GET /locations/", "GET /", "GET /about/team/", "GET /no-such-page/",
                              "GET /api/articles", "GET /api/articles/{slug}", "GET /login/", "POST /login/",
                              "GET /account/"}
    blog = endpoints["GET /blog/"]
    assert (blog["requests"], blog["route_template"], blog["by_path"]) == (BLOG_PAGES, "/{path}", True)
    assert endpoints["GET /api/articles/{slug}"]["by_path"] is False
    # The API answered 401 to 9 of its 15 list requests: not server errors, but shown.
    articles = endpoints["GET /api/articles"]
    assert (articles["error_rate"], articles["client_error_rate"]) == (0.0, 0.6)


def test_the_n_plus_one_is_on_the_blog_page_in_every_request_that_had_it(cms):
    (finding,) = [f for f in cms["findings"] if f["kind"] == "n_plus_one"]
    assert (finding["endpoint"], finding["service"]) == ("GET /blog/", "cms")
    assert (finding["occurrences"], finding["affected_share"]) == (BLOG_PAGES, 1.0)
    assert finding["count"] == 12 and finding["count_p95"] == 12 and "cms_author" in finding["statement"]
    assert finding["total_ms"] > 0


def test_a_connection_per_request_is_found_and_counted_as_connecting(cms):
    (finding,) = [f for f in cms["findings"] if f["kind"] == "connection_per_request"]
    assert finding["service"] == "cms" and finding["share_of_requests"] >= 0.9
    assert finding["requests_connecting"] >= BLOG_PAGES and finding["connect_ms"] > 0
    assert len(finding["databases"]) == 1
    blog = next(e for e in cms["endpoints"] if e["endpoint"] == "GET /blog/")
    assert blog["critical_path"]["connect"] > 0  # not counted as the app's own code
    assert {f["kind"] for f in cms["findings"]} == {"n_plus_one", "connection_per_request"}, cms["findings"]


def test_the_same_site_with_its_problems_fixed_has_no_finding(store):
    clean = _report(store, "--service", "cms-clean")
    assert len(clean["endpoints"]) == 10
    assert clean["findings"] == [], json.dumps(clean["findings"], indent=1)


def test_endpoint_filter_takes_a_page(store):
    report = _report(store, "--service", "cms", "--endpoint", "/blog/")
    assert [e["endpoint"] for e in report["endpoints"]] == ["GET /blog/"]
    assert [f["kind"] for f in report["findings"] if f["kind"] == "n_plus_one"] == ["n_plus_one"]


def test_lazy_loads_and_a_loop_of_three_counts_on_flask(blog):
    endpoints = {e["endpoint"] for e in blog["endpoints"]}
    assert endpoints == {"GET /", "GET /api/users", "GET /posts/{post_id}", "GET /docs/intro",
                         "GET /docs/guide/install", "GET /health"}
    findings = {f["endpoint"]: f for f in blog["findings"]}
    assert set(findings) == {"GET /", "GET /api/users"} and len(blog["findings"]) == 2, blog["findings"]
    lazy = findings["GET /"]
    assert (lazy["kind"], lazy["count"], lazy["occurrences"]) == ("n_plus_one", 15, FRONT_PAGES)
    assert "comments" in lazy["statement"]
    loop = findings["GET /api/users"]
    assert (loop["count"], loop["iterations"], loop["occurrences"]) == (150, 50, USER_LISTS)
    assert [re.search(r"FROM (\w+)", s).group(1) for s in loop["statements"]] == ["posts", "comments", "likes"]


def test_load_tests_name_endpoints_as_the_report_does(store, cms, blog):
    from takealook.loadtests.generate import collect

    with open_store(store) as reader:
        generated, _ = collect(reader.iter_traces(), services=["cms", "blog"])
    names = {f"{e.method} {e.template}" for e in generated}
    reported = {e["endpoint"] for e in cms["endpoints"] + blog["endpoints"]}
    assert names == reported


def test_the_same_spans_in_chdb_give_the_same_report(store, tmp_path):
    """Issue 17: the apps' spans imported into SQLite and into ClickHouse (chdb, the exporter's layout) read alike."""
    from tests.analyzers.traces.builder import file_exporter_line

    with open_store(store) as reader:
        traces = list(reader.iter_traces(load=True))
    exported = tmp_path / "traces.json"
    exported.write_text(file_exporter_line(traces) + "\n")
    sqlite, chdb = tmp_path / "copy.db", f"chdb:{tmp_path / 'ch'}"
    for target in (str(sqlite), chdb):
        out = subprocess.run([script("takealook"), "traces", "import", str(exported), "--store", target],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and f"imported {sum(map(len, traces))} new spans" in out.stdout, out.stderr
    for service in ("cms", "cms-clean", "blog"):
        mine, theirs = _report(sqlite, "--service", service), _report(chdb, "--service", service)
        assert mine["endpoints"] and mine["endpoints"] == theirs["endpoints"], service
        assert mine["findings"] == theirs["findings"] and mine["totals"] == theirs["totals"], service
        assert mine == theirs
