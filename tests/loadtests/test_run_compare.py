"""Real Locust runs (through the CLI) against real HTTP servers on 127.0.0.1, then ``load compare``.

Runs are short (1 s warm-up, 4 s measured, 1 s drain, 100 arrivals/s). The
module fixture runs them in concurrent pairs against two servers, A (/slow in
20 ms) and B (/slow in 30 ms, 30% errors on /flaky): a1 with b1, then a2 with
a3 and a4 with a5 against two A servers.

Why pairs run at the same time: on this shared 2-core machine, with other
test suites running, the p95 of the 20 ms endpoint moved by 5-35% between
identical runs a few seconds apart, far beyond what one run's own samples
show; runs in sequence once gave a1 a3 vs a2 "faster" at -8% [-11, -1], and
three sequential repetitions per side of 20 vs 30 ms once gave only +38%
[-3, +91] (honestly: the runs disagreed that much). Two runs at the same time
share the machine's noise, as comparing an old and a new host side by side
does; docs/load.md recommends it, or interleaved repetitions. The A/A check
uses two such pairs (a2 a4 vs a3 a5): repetitions let ``load compare``
measure run-to-run noise instead of relying on the noise floor alone.

The 20 -> 30 ms verdict is asserted on p50 (``--metric p50``), not the default
p95: with other suites loading the machine, a1's p95 once was 44 ms for a 20 ms
sleep, and one burst of slow blocks made the honest p95 interval +36% [-38, +81]
with 270 requests, while p50 read +42% [+35, +48]. p95 verdicts are checked
against simulations with a known truth in test_stats.py.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from takealook.loadtests.runs import load_run
from tests.conftest import script
from tests.contracts import check
from tests.loadtests import suites
from tests.loadtests.server import DelayServer

RUN = ["--warmup", "1s", "--duration", "4s", "--drain", "1s"]


def takealook(*args, cwd=None, timeout=90):
    return subprocess.run([script("takealook"), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


def load_run_cli(suite, server, label, runs, *extra):
    out = takealook("load", "run", suite, "--host", server.url, "--label", label, "--runs-dir", runs, *RUN, *extra)
    assert out.returncode == 0, out.stderr + out.stdout
    return load_run(label, runs)


def run_pair(suite, runs, pair) -> list[str]:
    """Two runs at the same time: pair is ((label, server), (label, server)); their JSON summaries."""
    procs = [subprocess.Popen([script("takealook"), "load", "run", str(suite), "--host", server.url,
                               "--label", label, "--runs-dir", str(runs), *RUN, "--rate", "100/s",
                               "--format", "json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for label, server in pair]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err + out
        outputs.append(out)
    return outputs


@pytest.fixture(scope="module")
def ab_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ab")
    suite = folder / "suite.py"
    suite.write_text(suites.TWO_ENDPOINTS)
    runs = folder / "runs"
    with DelayServer(delays={"/slow": 20, "/flaky": 5}, echo_trace=True) as a, \
            DelayServer(delays={"/slow": 30, "/flaky": 5}, errors={"/flaky": 0.3}) as b, \
            DelayServer(delays={"/slow": 20, "/flaky": 5}) as a_twin:
        summaries = run_pair(suite, runs, (("a1", a), ("b1", b)))
        sent = [tp for _, _, tp in a.log]
        run_pair(suite, runs, (("a2", a), ("a3", a_twin)))
        run_pair(suite, runs, (("a4", a), ("a5", a_twin)))
    return {"runs": runs, "a": load_run("a1", runs), "sent": sent, "folder": folder, "summaries": summaries}


def compare_json(ab_runs, *args):
    out = takealook("load", "compare", *args, "--runs-dir", ab_runs["runs"], "--format", "json")
    return out, (json.loads(out.stdout) if out.stdout.strip().startswith("{") else None)


def by_name(document):
    return {e["name"]: e for e in document["endpoints"]}


def test_run_folder_has_raw_samples_metadata_and_locust_reports(ab_runs):
    run = ab_runs["a"]
    meta = run.meta
    assert meta["schema_version"] == 1 and meta["label"] == "a1"
    assert meta["load"] == {"model": "open", "rate": 100.0, "arrivals": "uniform", "max_in_flight": 1000}
    assert len(meta["suite_sha256"]) == 64 and meta["locust_version"] and meta["host"].startswith("http://127.0.0.1:")
    assert meta["samples"] == len(run.samples) and meta["samples_lost"] == 0
    # Locust counted the same requests we recorded, except those still in flight when it stopped.
    assert meta["locust_requests"] == meta["samples"] - meta["unfinished"]
    for name in ("locust_stats.csv", "locust.html", "samples.csv.gz", "locust.log"):
        assert (run.path / name).is_file(), name
    measured = run.measured()
    # 100 arrivals/s for 4 s, evenly spaced: 400 due in the window (one more or less at its edges).
    assert 395 <= len(measured) <= 405
    assert all(s.scheduled is not None and s.status == 200 for s in measured)
    names = {s.endpoint for s in measured}
    assert names == {"GET /slow", "GET /flaky/{id}"}
    slow = sorted(s.latency_ms for s in measured if s.name == "/slow")
    assert 20 <= slow[len(slow) // 2] < 60


def test_run_summary_run_json_and_compare_follow_their_documented_contracts(ab_runs):
    first, _ = ab_runs["summaries"]
    summary = json.loads(first)
    check("load-run", summary)
    assert summary["run"] == "a1" and {e["name"] for e in summary["endpoints"]} >= {"GET /slow", "GET /flaky/{id}"}
    check("load-run-metadata", json.loads((ab_runs["a"].path / "run.json").read_text()))
    out, doc = compare_json(ab_runs, "a1", "b1", "--fail-on-regression", "10%")
    check("load-compare", doc)


def test_every_request_carries_a_traceparent_and_the_server_trace_id_is_kept(ab_runs):
    sent = ab_runs["sent"]
    assert sent and all(tp.startswith("00-") and len(tp.split("-")[1]) == 32 for tp in sent)
    assert len({tp.split("-")[1] for tp in sent}) == len(sent)  # a fresh trace per request
    ours = {tp.split("-")[1] for tp in sent}
    recorded = {s.trace_id for s in ab_runs["a"].samples}
    # The server answered with a traceresponse (its id: ours reversed): that one is recorded.
    assert recorded and all(t[::-1] in ours for t in recorded)


def test_20ms_to_30ms_is_slower(ab_runs):
    # Judged on p50: see the module docstring for why p95 is not asserted on a loaded machine.
    out, doc = compare_json(ab_runs, "a1", "b1", "--metric", "p50")
    assert out.returncode == 0, out.stderr
    slow = by_name(doc)["GET /slow"]
    assert slow["verdict"] == "slower" and slow["p50_verdict"] == "slower"
    # +10 ms on a 20 ms endpoint that carries a few ms of machine overhead.
    assert 15 <= slow["p50_change_pct"] <= 70
    low, high = slow["p50_change_ci_pct"]
    assert 0 < low <= slow["p50_change_pct"] <= high
    assert slow["min_detectable_change_pct"] >= 5.0 and slow["mean_verdict"] == "slower"
    assert doc["settings"]["noise_floor_pct"] == 5.0 and doc["settings"]["metric"] == "p50"
    assert slow["p95_change_ci_pct"] is not None  # p95 is computed too (its verdict depends on the machine)


def test_single_runs_positional_form_p50_slower(ab_runs):
    out, doc = compare_json(ab_runs, "a1", "b1")
    assert out.returncode == 0, out.stderr
    assert doc["before"] == ["a1"] and doc["after"] == ["b1"]
    slow = by_name(doc)["GET /slow"]
    assert slow["p50_verdict"] == "slower" and slow["p50_change_ci_pct"][0] > 10
    for key in ("p95_before_ms", "p95_after_ms", "p95_change_pct", "p95_change_ci_pct", "min_detectable_change_pct",
                "error_rate_before", "error_rate_after", "verdict"):
        assert key in slow


# Real A/A runs on a shared two-core machine: each of the three comparisons (two endpoints and the
# overall line) has the nominal 5% false-alarm rate, so asserting all three at the default floor would
# fail about one CI run in seven by design. The false-alarm rate itself is measured on simulated
# latencies (test_stats.py); here the floor absorbs the machine's drift between runs.
A_A_FLOOR = ("--noise-floor", "25%")


def test_a_a_is_no_detectable_change(ab_runs):
    out, doc = compare_json(ab_runs, "--before", "a2", "a4", "--after", "a3", "a5", *A_A_FLOOR)
    assert out.returncode == 0, out.stderr
    for endpoint in (*doc["endpoints"], doc["overall"]):
        assert endpoint["verdict"] == "no detectable change", endpoint
        assert endpoint["errors_verdict"] == "no detectable change"


def test_a_a_paired_is_no_detectable_change(ab_runs):
    out, doc = compare_json(ab_runs, "--before", "a2", "a4", "--after", "a3", "a5", "--paired", *A_A_FLOOR)
    assert out.returncode == 0, out.stderr
    assert doc["settings"]["paired"] is True
    for endpoint in (*doc["endpoints"], doc["overall"]):
        assert endpoint["verdict"] == "no detectable change", endpoint
    out = takealook("load", "compare", "--before", "a2", "--after", "a3", "--paired", "--runs-dir", ab_runs["runs"])
    assert out.returncode == 2 and "--paired needs" in out.stderr


def test_error_change_is_reported(ab_runs):
    _, doc = compare_json(ab_runs, "a1", "b1")
    flaky = by_name(doc)["GET /flaky/{id}"]
    assert flaky["error_rate_before"] == 0.0
    assert 0.15 <= flaky["error_rate_after"] <= 0.45
    assert flaky["errors_verdict"] == "more errors"
    assert flaky["error_rate_change_ci_pts"][0] > 0
    # The change is in errors: never "no detectable change" or "faster". Its latency is the same in principle,
    # but one run a side on a loaded machine sometimes calls its p95 slower (the one-run warning says why):
    # then the verdict says so, and --fail-on-regression still gates on the errors (next test).
    assert flaky["verdict"] == ("slower" if flaky["p95_verdict"] == "slower" else "more errors"), flaky


def test_fail_on_regression_exits_1_and_not_when_below_threshold(ab_runs):
    reps = ("a1", "b1", "--metric", "p50")
    out, doc = compare_json(ab_runs, *reps, "--fail-on-regression", "5%")
    assert out.returncode == 1
    assert any(r["name"] == "GET /slow" and r["metric"] == "p50" for r in doc["regressions"])
    out, doc = compare_json(ab_runs, *reps, "--fail-on-regression", "90%")
    # No latency regression that large; /flaky's errors (0% -> ~30%), and with them all requests' (~10%), gate
    # whatever the threshold, and whether or not /flaky's p50 also rose (it did in some runs: then its verdict is
    # "slower", and its errors still count).
    assert out.returncode == 1
    assert [(r["name"], r["metric"]) for r in doc["regressions"]] == [("GET /flaky/{id}", "errors"),
                                                                      ("(all requests)", "errors")]
    out, doc = compare_json(ab_runs, "a1", "b1", "--fail-on-regression", "5", "--metric", "errors")
    # /flaky went from 0% to ~30% errors, and with it all requests (~10%); /slow did not.
    assert out.returncode == 1 and [r["name"] for r in doc["regressions"]] == ["GET /flaky/{id}", "(all requests)"]


def test_several_runs_per_side_and_text_and_html(ab_runs, tmp_path):
    out, doc = compare_json(ab_runs, "--before", "a1", "a2", "--after", "b1")
    assert out.returncode == 0, out.stderr
    assert doc["before"] == ["a1", "a2"] and doc["after"] == ["b1"]
    assert by_name(doc)["GET /slow"]["requests_before"] > by_name(doc)["GET /slow"]["requests_after"]
    text = takealook("load", "compare", "a1", "b1", "--runs-dir", ab_runs["runs"]).stdout
    assert "GET /slow" in text and "slower" in text and "Noise floor: 5%" in text
    html = tmp_path / "compare.html"
    out = takealook("load", "compare", "a1", "b1", "--runs-dir", ab_runs["runs"], "-o", html)
    assert out.returncode == 0, out.stderr
    page = html.read_text()
    assert page.count("<svg") >= 3 and "Latency distribution of GET /slow" in page


def test_open_model_shows_a_stall_the_closed_model_hides(tmp_path):
    suite = tmp_path / "suite.py"
    suite.write_text(suites.ONE_ENDPOINT)
    runs = tmp_path / "runs"
    with DelayServer(delays={"/page": 5}) as server:
        server.stall_after_first(2.5, 1.0)
        closed = load_run_cli(suite, server, "closed", runs, "--users", "2")
        server.stall_after_first(2.5, 1.0)
        opened = load_run_cli(suite, server, "open", runs, "--rate", "50/s")

    def share_over(run, ms):
        measured = run.measured()
        return sum(s.user_latency_ms > ms for s in measured) / len(measured)

    # Closed: 2 users wait out the stall, 2 slow requests among hundreds.
    assert share_over(closed, 300) < 0.03
    # Open: the ~50 arrivals during the 1 s stall all wait; each counts from its scheduled time.
    assert share_over(opened, 300) > 0.10
    assert max(s.user_latency_ms for s in opened.measured()) > 700


def test_processes_record_every_worker_and_lose_nothing(tmp_path):
    suite = tmp_path / "suite.py"
    suite.write_text(suites.ONE_ENDPOINT)
    runs = tmp_path / "runs"
    with DelayServer(delays={"/page": 2}) as server:
        run = load_run_cli(suite, server, "procs", runs, "--rate", "100/s", "--processes", "2")
    assert run.meta["samples_lost"] == 0 and run.meta["workers_reporting"] == 2
    assert {s.worker for s in run.samples} == {0, 1}
    assert 380 <= len(run.measured()) <= 420
    assert len({s.trace_id for s in run.samples}) == len(run.samples)  # forked workers do not repeat trace ids


def test_master_and_a_separate_worker_process(tmp_path):
    """Locust's distributed mode passed through: a takealook master and a worker started on its own."""
    import socket

    suite = tmp_path / "suite.py"
    suite.write_text(suites.ONE_ENDPOINT)
    runs = tmp_path / "runs"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with DelayServer(delays={"/page": 2}) as server:
        worker = subprocess.Popen([script("takealook"), "load", "run", suite, "--worker", "--master-host", "127.0.0.1",
                                   "--locust", "--master-port", str(port)], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        try:
            run = load_run_cli(suite, server, "dist", runs, "--rate", "50/s", "--master", "--expect-workers", "1",
                               "--locust", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port))
            worker.wait(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert run.meta["workers_reporting"] == 1 and run.meta["samples_lost"] == 0
    assert 190 <= len(run.measured()) <= 210  # 50/s for 4 s, sent by the worker
    assert all(s.scheduled is not None for s in run.measured())
