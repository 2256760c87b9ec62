"""Pre-fork servers: every gunicorn worker exports, with and without --preload."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.agent.conftest import bin_path, free_port
from tests.conftest import wait_for

SERVER = 2


@pytest.mark.parametrize("preload, way_in", [(False, "takealook-run"), (True, "takealook-run"), (True, "start()")])
def test_every_worker_exports(apps, app_dbs, sink, preload, way_in):
    port = free_port()
    argv = [bin_path("gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}"] + (["--preload"] if preload else []) \
        + ["gateway:app"]
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "GATEWAY_DSN": app_dbs["gateway"],
           "OTEL_SERVICE_NAME": "gateway"}
    if way_in == "takealook-run":
        argv = [bin_path("takealook-run")] + argv
    else:
        env["GATEWAY_START_AGENT"] = "1"
    apps.start(argv, env=env, port=port)
    served_by: set[int] = set()
    with ThreadPoolExecutor(8) as pool:
        for _ in range(6):  # bounded: sync workers take turns, so a few rounds reach both
            answers = list(pool.map(lambda _: requests.get(f"http://127.0.0.1:{port}/slow", timeout=10), range(8)))
            served_by |= {answer.json()["pid"] for answer in answers}
            if len(served_by) == 2:
                break
    assert len(served_by) == 2, "both workers served requests"

    def pids():
        return {s["resource"]["process.pid"] for s in sink.spans
                if s["kind"] == SERVER and s["attributes"].get("http.route") == "/slow"}

    wait_for(lambda: pids() == served_by, 15, message=f"spans from workers {served_by}; have {pids()}")
    instances = {s["resource"]["service.instance.id"] for s in sink.spans if s["kind"] == SERVER}
    assert len(instances) == 2, "each worker is its own service instance"
    trace_ids = [s["trace_id"] for s in sink.spans if s["kind"] == SERVER]
    assert len(trace_ids) == len(set(trace_ids)), "workers draw different trace ids after fork"


def test_uwsgi_workers_export_and_missing_fork_hooks_are_reported(apps, app_dbs, sink):
    """uWSGI forks in C without Python's at-fork hooks unless py-call-osafterfork is set."""
    port = free_port()
    apps.start([bin_path("takealook-run"), "--service", "gateway", bin_path("uwsgi"), "--http-socket",
                f"127.0.0.1:{port}", "--master", "--processes", "2", "--module", "gateway:app", "--die-on-term",
                "--disable-logging"], env={"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
                                           "GATEWAY_DSN": app_dbs["gateway"]}, port=port)
    served_by: set[int] = set()
    with ThreadPoolExecutor(8) as pool:
        for _ in range(6):
            answers = list(pool.map(lambda _: requests.get(f"http://127.0.0.1:{port}/slow", timeout=10), range(8)))
            served_by |= {answer.json()["pid"] for answer in answers}
            if len(served_by) == 2:
                break
    assert len(served_by) == 2

    def pids():
        return {s["resource"]["process.pid"] for s in sink.spans if s["kind"] == SERVER}

    wait_for(lambda: pids() == served_by, 15, message=f"spans from uWSGI workers {served_by}; have {pids()}")
    assert apps.logs().count("forked without Python's at-fork hooks") == 2  # once per worker
