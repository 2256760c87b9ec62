"""`traces compare` over stores of synthetic traces: exact figures for where a change is, sides by time,
load-test traffic, and the errors that stop it."""

from __future__ import annotations

import json
import random
import subprocess

import pytest

from takealook.analyzers.traces.compare import Side, compare_store
from takealook.collector.model import TraceSpans
from takealook.errors import InputError
from takealook.verdicts import Settings
from tests.analyzers.traces.builder import BASE_NS, TraceBuilder, write_store
from tests.conftest import script
from tests.contracts import check

N = 150
HEROKU = json.dumps({"cloud.provider": "heroku", "service.version": "7"})
AWS = json.dumps({"cloud.provider": "aws", "service.version": "7"})


def _dashboard(offset_ms: float, resource: str, rng: random.Random, public: bool, load: str | None = None):
    """A gateway page that reads a user and calls inventory; on AWS the call goes over a public address."""
    b = TraceBuilder(offset_ms=offset_ms)
    code = 4 + rng.random()
    call = 8 + rng.random() + (40 if public else 0)
    root = b.server("gateway", "GET", "/dashboard/<int:id>", 0, code + 3 + call, resource_json=resource,
                    **({"parent_span_id": "00000000000000aa"} if load else {}))
    b.sql("gateway", "SELECT * FROM users WHERE id = %s", 1, 3, root, resource_json=resource)
    host = "inventory.example.com" if public else "10.0.0.7"
    client = b.http("gateway", "GET", f"http://{host}/stock/1", 4, call, root, resource_json=resource)
    server = b.server("inventory", "GET", "/stock/<int:id>", 4.5 + (20 if public else 0), 6, client)
    b.sql("inventory", "SELECT qty FROM stock WHERE id = %s", 5 + (20 if public else 0), 4, server)
    return TraceSpans(b.spans, load=load)


def _health(offset_ms: float, resource: str, rng: random.Random):
    b = TraceBuilder(offset_ms=offset_ms)
    root = b.server("gateway", "GET", "/health", 0, 2 + rng.random(), resource_json=resource)
    b.sql("gateway", "SELECT 1", 0.5, 1, root, resource_json=resource)
    return b.spans


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = random.Random(7)
    traces = []
    for i in range(N):
        t = i * 1000.0
        traces += [_dashboard(t, HEROKU, rng, False), _dashboard(t + 100, AWS, rng, True),
                   _health(t + 200, HEROKU, rng), _health(t + 300, AWS, rng)]
    # Load tests against the heroku side, slow: left out unless asked.
    traces += [_dashboard(N * 1000.0 + i, HEROKU, rng, True, load="soak") for i in range(N)]
    path = tmp_path_factory.mktemp("compare") / "spans.db"
    write_store(path, traces)
    return path


def test_the_slower_side_says_its_calls_went_over_a_public_address(store):
    result = compare_store(store, Side((("cloud.provider", "heroku"),)), Side((("cloud.provider", "aws"),)),
                           Settings())
    by_name = {e.comparison.name: e for e in result.endpoints}
    assert set(by_name) == {"GET /dashboard/{id}", "GET /health"}
    assert by_name["GET /health"].comparison.verdict == "no detectable change"
    dashboard = by_name["GET /dashboard/{id}"]
    assert dashboard.comparison.verdict == "slower" and dashboard.comparison.before.requests == N
    where = dashboard.where
    top = where.path[0]
    # The callee's own time is the same on both sides; the 40 ms are the call's own (network, TLS, a router).
    assert (top.service, top.category) == ("gateway", "http") and top.change_ms == pytest.approx(40, abs=0.5)
    assert top.share_of_change == pytest.approx(1.0, abs=0.02)
    calls = {c.text: c for c in where.calls}
    assert calls["GET inventory.example.com"].calls_after == 1.0 and calls["GET 10.0.0.7"].calls_after == 0
    assert where.cause.startswith("mean +40.") and "http in gateway" in where.cause
    assert "call GET inventory.example.com +4" in where.cause
    assert where.statements == ()  # no statement's time moved
    assert result.notes and "left out 150 traces of load tests (runs: soak (150))" in result.notes[0]


def test_a_higher_confidence_widens_every_interval_and_says_its_level(store, tmp_path):
    heroku, aws = Side((("cloud.provider", "heroku"),)), Side((("cloud.provider", "aws"),))
    usual = compare_store(store, heroku, aws, Settings())
    strict = compare_store(store, heroku, aws, Settings(confidence=0.99))
    for u, s in zip(usual.endpoints, strict.endpoints):
        for metric in ("p50", "p95", "mean"):
            (ul, uh), (sl, sh) = u.comparison.changes[metric].ci_pct, s.comparison.changes[metric].ci_pct
            assert sl <= ul and sh >= uh and (sh - sl) > (uh - ul), (u.comparison.name, metric)
    out = subprocess.run([script("takealook"), "traces", "compare", "--store", str(store), "--before",
                          "cloud.provider=heroku", "--after", "cloud.provider=aws", "--confidence", "99%"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "change [99% CI]" in out.stdout and "99% block bootstrap" in out.stdout and "95%" not in out.stdout
    assert not [w for w in usual.warnings if "by chance" in w]  # two endpoints at 95%: 0.1 expected
    loose = compare_store(store, heroku, aws, Settings(confidence=0.5))
    (chance,) = [w for w in loose.warnings if "by chance" in w]
    assert chance.startswith("2 endpoints judged at 50% each: even if nothing changed, about 1.0 of them") \
        and "--confidence 99% makes that unlikely" in chance


def test_the_chance_warning_counts_what_nothing_changed_would_still_give():
    from takealook.verdicts import chance_warning

    assert chance_warning(9, 0.95) is None and chance_warning(49, 0.99) is None
    assert "about 0.5 of them" in chance_warning(10, 0.95) and "--confidence 99%" in chance_warning(10, 0.95)
    assert "--confidence 99.9%" in chance_warning(60, 0.95)  # 99% would still leave 0.6
    assert "--confidence" not in chance_warning(600, 0.95)  # even 99.9% leaves 0.6: no level to advise


def test_load_traffic_counts_when_asked(store):
    heroku, aws = Side((("cloud.provider", "heroku"),)), Side((("cloud.provider", "aws"),))
    everything = compare_store(store, heroku, aws, Settings(), load=True)
    assert everything.traces_before == 3 * N and everything.notes == ()
    dashboard = next(e for e in everything.endpoints if e.comparison.name == "GET /dashboard/{id}")
    assert dashboard.comparison.before.requests == 2 * N
    with pytest.raises(InputError, match=r"^--after 'cloud.provider=aws' matches no trace: no root span has "
                                        r"cloud.provider=aws; values of cloud.provider seen: heroku \(150\)$"):
        compare_store(store, heroku, Side((("cloud.provider", "aws"),), text="cloud.provider=aws"), load="soak")


def test_sides_by_time_and_identical_sides(store):
    half = BASE_NS + N * 1000 * 10**6 // 2
    first, second = Side((("cloud.provider", "heroku"),), None, half), Side((("cloud.provider", "heroku"),), half)
    result = compare_store(store, first, second, Settings())
    assert result.traces_before == result.traces_after == N
    assert {e.comparison.verdict for e in result.endpoints} == {"no detectable change"}
    same = compare_store(store, first, first, Settings())
    assert all(e.comparison.changes["p95"].change_pct == 0 for e in same.endpoints)
    assert "both sides select the same traces" in same.warnings


def _instance(resource: str, instance: str) -> str:
    return json.dumps({**json.loads(resource), "service.instance.id": instance})


def test_instances_that_differ_are_noise_not_a_change(tmp_path):
    """Each side: a fast and a slow process of the same code (20% apart). One process a side, the two sides
    look different; two a side, the difference between instances is measured and the A/A says no change."""
    rng = random.Random(3)
    traces = []
    speeds = {_instance(HEROKU, "h1"): 1.0, _instance(HEROKU, "h2"): 1.2, _instance(AWS, "a1"): 1.2,
              _instance(AWS, "a2"): 1.0}
    for i in range(200):
        for j, (resource, speed) in enumerate(speeds.items()):
            b = TraceBuilder(offset_ms=i * 100.0 + j * 10)
            b.server("gateway", "GET", "/health", 0, speed * (2 + rng.random()), resource_json=resource)
            traces.append(b.spans)
    path = tmp_path / "spans.db"
    write_store(path, traces)
    both = compare_store(path, Side((("cloud.provider", "heroku"),)), Side((("cloud.provider", "aws"),)), Settings())
    assert (both.instances_before, both.instances_after) == (2, 2) and both.warnings == ()
    assert [e.comparison.verdict for e in both.endpoints] == ["no detectable change"]
    one = compare_store(path, Side((("service.instance.id", "h1"),)), Side((("service.instance.id", "a1"),)),
                        Settings())
    assert [e.comparison.verdict for e in one.endpoints] == ["slower"]  # what one process a side cannot tell apart
    assert (one.instances_before, one.instances_after) == (1, 1) and "one instance" in one.warnings[0]


def test_sides_with_no_endpoint_in_common(tmp_path):
    path = tmp_path / "spans.db"
    rng = random.Random(1)
    write_store(path, [_health(0, HEROKU, rng), _dashboard(10, AWS, rng, False)])
    with pytest.raises(InputError,
                       match=r"no endpoint in common \(before: GET /health; after: GET /dashboard/\{id\}"):
        compare_store(path, Side((("cloud.provider", "heroku"),)), Side((("cloud.provider", "aws"),)))


def test_the_command_gates_and_writes_the_contract(store, tmp_path):
    base = [script("takealook"), "traces", "compare", "--store", str(store), "--before", "cloud.provider=heroku",
            "--after", "cloud.provider=aws", "--format", "json"]
    out = subprocess.run(base + ["--fail-on-regression", "10%"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    check("traces-compare", data)
    assert [r["name"] for r in data["regressions"]] == ["GET /dashboard/{id}", "(all requests)"]
    assert data["settings"]["fail_on_regression_pct"] == 10.0
    assert "left out 150 traces of load tests" in out.stderr
    # A threshold above the change: no regression, exit 0.
    out = subprocess.run(base + ["--fail-on-regression", "1000"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout)["regressions"] == []
    out = subprocess.run(base[:-2] + ["--before", "since 1h", "-o", str(tmp_path / "c.md")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "matches no trace between" in out.stderr  # the store's traces are from 2023
