"""Load tests that log in and tell the truth, on real apps (``world.py``): a Django shop (django.contrib.auth
login with CSRF, a logged-in page with ORM queries, a token API), a Flask blog (form login with a CSRF token),
real gunicorn, real Locust (``load run``), the real collector and PostgreSQL.

One set of apps for the module. The load runs are short (15 arrivals/s for 3 s) and made once, in the
``runs`` fixture, so every assertion about them reads the same runs.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter

import pytest

from takealook.collector import open_store
from takealook.loadtests.runs import load_run
from tests.conftest import script, wait_for
from tests.contracts import check
from tests.loadtests.world import CREDENTIALS, PASSWORD, start_world
from tests.processes import Processes

RUN = ["--rate", "15/s", "--duration", "3s", "--drain", "2s"]
FORM_LOGIN = ["--login-form", "/accounts/login/", "--form", "username=${SHOP_USER}",
              "--form", "password=${SHOP_PASSWORD}"]
TOKEN_LOGIN = ["--login-json", "POST /api/token/", "--body",
               '{"username": "${SHOP_USER}", "password": "${SHOP_PASSWORD}"}',
               "--token-from", "token", "--token-header", "Authorization: Token {token}"]
BLOG_LOGIN = ["--login-form", "/login", "--form", "email=${BLOG_EMAIL}", "--form", "password=${BLOG_PASSWORD}"]


def takealook(*args, env=None, timeout=120):
    return subprocess.run([script("takealook"), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def traces_report(store, *args):
    out = takealook("traces", "report", "--store", store, "--format", "json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), out.stderr


@pytest.fixture(scope="module")
def world(pg, tmp_path_factory):
    folder = tmp_path_factory.mktemp("world")
    processes = Processes(folder)
    try:
        yield start_world(pg, folder, processes), folder
    finally:
        processes.stop()


@pytest.fixture(scope="module")
def real_report(world):
    """The traces report of the real traffic, before any load run."""
    w, _ = world
    report, _ = traces_report(w.store)
    return report


def _generate(w, folder, name, service, *options):
    suite = folder / f"{name}.py"
    out = takealook("load", "generate", "--store", w.store, "--service", service, "--host", "http://127.0.0.1:9",
                    "-o", suite, "--force", *options)
    assert out.returncode == 0, out.stderr
    return suite, out.stderr


def _run(w, folder, suite, label, host, env=None):
    out = takealook("load", "run", suite, "--host", host, "--label", label, "--runs-dir", folder / "runs", *RUN,
                    "--format", "json", env=env)
    return out


@pytest.fixture(scope="module")
def runs(world, real_report):
    w, folder = world
    made = {}
    plans = [("plain-shop", "shop", w.shop, ()), ("plain-api", "shop-api", w.api, ()),
             ("form-shop", "shop", w.shop, FORM_LOGIN), ("token-api", "shop-api", w.api, TOKEN_LOGIN),
             ("form-blog", "blog", w.blog, BLOG_LOGIN)]
    for label, service, host, options in plans:
        suite, generated = _generate(w, folder, label, service, *options)
        out = _run(w, folder, suite, label, host, env=CREDENTIALS)
        assert out.returncode == 0, out.stderr
        made[label] = {"suite": suite.read_text(), "generated": generated, "stderr": out.stderr,
                       "summary": json.loads(out.stdout), "run": load_run(label, folder / "runs")}
    for label, entry in made.items():  # every request of every run is a trace in the store
        wait_for(lambda: _stored(w.store, label) >= len(entry["run"].samples) - entry["run"].meta["unfinished"], 45,
                 message=f"the traces of load run {label}")
    return made


def _stored(store, label):
    with open_store(store) as reader:
        return reader.count_traces(load=label)


def _failures(run):
    """Per endpoint: (requests, failed, errors seen)."""
    out = {}
    for s in run.measured():
        requests, failed, errors = out.get(s.endpoint, (0, 0, Counter()))
        if s.failed:
            errors[s.error] += 1
        out[s.endpoint] = (requests + 1, failed + s.failed, errors)
    return out


def test_without_login_every_302_to_login_and_401_is_a_failure(runs):
    shop = _failures(runs["plain-shop"]["run"])
    requests, failed, errors = shop["GET /orders/"]
    assert requests > 10 and failed == requests
    assert set(errors) == {"CatchResponseError: not logged in: 302 redirect to /accounts/login/"}
    assert shop["GET /"][1] == 0  # the public page is fine
    api = _failures(runs["plain-api"]["run"])
    requests, failed, errors = api["GET /api/orders/"]
    assert requests > 10 and failed == requests
    assert set(errors) == {"CatchResponseError: not logged in: 401 Unauthorized"}
    # load run says so, loudly, on stderr and in its summary.
    assert "WARNING: GET /orders/ failed 100.0% of its requests (CatchResponseError: not logged in: 302" in \
        runs["plain-shop"]["stderr"]
    check("load-run", runs["plain-api"]["summary"])
    summary = {e["name"]: e for e in runs["plain-api"]["summary"]["endpoints"]}
    assert summary["GET /api/orders/"]["error_rate"] == 1.0 and summary["GET /api/orders/"]["top_error"]
    # Writes and the login are not replayed: the generator said what it left out.
    assert "left out POST /orders/new/: a write: --include-writes replays writes" in runs["plain-shop"]["generated"]
    assert "left out POST /accounts/login/: a write" in runs["plain-shop"]["generated"]
    assert "/orders/new/" not in runs["plain-shop"]["suite"].split('"""', 2)[2]


def test_a_suite_that_logs_in_reproduces_the_logged_in_pages(world, runs):
    w, _ = world
    for label, endpoint in (("form-shop", "GET /orders/"), ("token-api", "GET /api/orders/"),
                            ("form-blog", "GET /dashboard")):
        failures = _failures(runs[label]["run"])
        requests, failed, errors = failures[endpoint]
        assert requests > 10 and failed == 0, (label, errors)
        assert not runs[label]["summary"]["warnings"], runs[label]["summary"]["warnings"]
        assert PASSWORD not in runs[label]["suite"]  # read from the environment when the suite runs
        assert "${SHOP_PASSWORD}" in runs[label]["suite"] or "${BLOG_PASSWORD}" in runs[label]["suite"]
    # The server's traces of the run show the logged-in page's own statements.
    report, _ = traces_report(w.store, "--load-run", "form-shop")
    orders = next(e for e in report["endpoints"] if e["route"] == "/orders/")
    assert orders["error_rate"] == 0.0 and orders["sql_per_request"] >= 3  # session, user, count, page
    (summary,) = [s for s in report["statements"] if s["statement"].startswith('SELECT COUNT("shop_order"."id")')]
    assert [e["endpoint"] for e in summary["endpoints"]] == ["GET /orders/"]
    assert summary["calls"] == orders["requests"]  # once per page shown: each was a logged-in page
    assert not any(f["kind"] == "orphan_span" for f in report["findings"])
    api, _ = traces_report(w.store, "--load-run", "token-api")
    assert any('FROM "shop_apitoken"' in s["statement"] for s in api["statements"])


def test_traces_report_counts_only_real_traffic_after_the_runs(world, runs, real_report):
    w, _ = world
    after, notes = traces_report(w.store)
    assert after["totals"] == real_report["totals"]
    assert after["endpoints"] == real_report["endpoints"]  # request counts, rates and percentiles untouched
    assert "orphan_span" not in {f["kind"] for f in after["findings"]}
    assert "left out" in notes and "form-shop" in notes
    both, _ = traces_report(w.store, "--include-load")
    load_traces = sum(_stored(w.store, label) for label in runs)
    assert both["totals"]["traces"] == real_report["totals"]["traces"] + load_traces
    assert "orphan_span" not in {f["kind"] for f in both["findings"]}
    # A generated suite is built from the real traffic too: the load runs do not change it.
    again, _ = _generate(w, world[1], "again", "shop")
    assert again.read_text().split('"""', 2)[2] == runs["plain-shop"]["suite"].split('"""', 2)[2]


def test_each_redirect_hop_is_a_trace_of_its_own(world, runs):
    w, _ = world
    entries = Counter()
    with open_store(w.store) as reader:
        for spans in reader.iter_traces(load="plain-shop"):
            servers = [s for s in spans if s.kind == "server"]
            assert len(servers) == 1, [s.http_route for s in servers]
            entries[servers[0].http_route] += 1
    # Every /orders/ request was redirected to the login page, and that hop is its own trace.
    assert entries["/accounts/login/"] >= entries["/orders/"] > 10


def test_the_login_pages_and_the_posted_form_are_real(world, runs):
    """The login requests are recorded as such, and a login that works answers a redirect, not the form."""
    endpoints = _failures(runs["form-shop"]["run"])
    assert endpoints["GET /accounts/login/ (login form)"][1] == 0
    assert endpoints["POST /accounts/login/ (login)"][1] == 0


@pytest.mark.parametrize("case", ["unknown login path", "no CSRF input", "token path not in the answer",
                                  "wrong password", "missing variable"])
def test_bad_login_input_is_one_line_and_exit_2(world, case):
    w, folder = world
    service, host, options, env, expected = {
        "unknown login path": ("shop", w.shop, ["--login-form", "/accounts/signin/", *FORM_LOGIN[2:]], CREDENTIALS,
                               "no user could log in: GET /accounts/signin/ answered 404: is --login-form the path "
                               "of the login page?"),
        "no CSRF input": ("blog", w.blog, ["--login-form", "/login-plain", *BLOG_LOGIN[2:]], CREDENTIALS,
                          "no user could log in: the form at /login-plain has no CSRF input, and the server "
                          "refused the login with 400"),
        "token path not in the answer": ("shop-api", w.api, [*TOKEN_LOGIN[:5], "user.key", *TOKEN_LOGIN[6:]],
                                         CREDENTIALS, "no user could log in: the answer of POST /api/token/ has no "
                                                      "'user.key' (it has: token, user): fix --token-from"),
        "wrong password": ("shop", w.shop, FORM_LOGIN, {**CREDENTIALS, "SHOP_PASSWORD": "nope"},
                           "no user could log in: POST /accounts/login/ answered with the login form again: check "
                           "the --form values"),
        "missing variable": ("shop", w.shop, FORM_LOGIN, {"SHOP_USER": "alice"},
                             "reads ${SHOP_PASSWORD} from the environment, and it is not set: export "
                             "SHOP_PASSWORD=... and run again"),
    }[case]
    label = case.replace(" ", "-")
    suite, _ = _generate(w, folder, label, service, *options)
    clean = {k: v for k, v in os.environ.items() if k not in CREDENTIALS}
    out = subprocess.run([script("takealook"), "load", "run", suite, "--host", host, "--label", label,
                          "--runs-dir", folder / "runs", "--rate", "15/s", "--duration", "30s"],
                         capture_output=True, text=True, timeout=120, env={**clean, **env})
    assert out.returncode == 2, out.stderr
    assert expected in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    if case != "missing variable":  # the run stopped at the first failed login, long before its 30 s
        run = load_run(label, folder / "runs")
        assert run.meta["ended"] - run.meta["t0"] < 10
        assert run.meta["stopped_because"] in out.stderr
        check("load-run-metadata", json.loads((run.path / "run.json").read_text()))


def test_a_failed_login_on_a_worker_stops_the_master_and_every_worker(world):
    """--processes 2: a Locust master and two workers on 127.0.0.1; the worker's failed login reaches the
    master, which stops the whole run at once with the worker's reason."""
    w, folder = world
    label = "wrong-password-workers"
    suite, _ = _generate(w, folder, label, "shop", *FORM_LOGIN)
    clean = {k: v for k, v in os.environ.items() if k not in CREDENTIALS}
    out = subprocess.run([script("takealook"), "load", "run", suite, "--host", w.shop, "--label", label,
                          "--runs-dir", folder / "runs", "--rate", "15/s", "--duration", "30s", "--processes", "2"],
                         capture_output=True, text=True, timeout=120,
                         env={**clean, **CREDENTIALS, "SHOP_PASSWORD": "nope"})
    assert out.returncode == 2, out.stderr
    assert "no user could log in: POST /accounts/login/ answered with the login form again" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    run = load_run(label, folder / "runs")
    assert run.meta["ended"] - run.meta["t0"] < 10
