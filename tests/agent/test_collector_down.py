"""A collector that refuses, fails or hangs costs the app nothing but the spans."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import requests

from tests.agent.conftest import bin_path, free_port
from tests.agent.otlp_sink import OtlpSink


def _helper_rss_kb(parent_pid: int) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if b"takealook.agent.exporter" in cmdline and f"\nPPid:\t{parent_pid}\n" in status:
            return int(status.split("VmRSS:")[1].split()[0])
    raise AssertionError("export helper process not found")


@pytest.mark.parametrize("mode", ["refused", "failing", "hanging"])
def test_requests_succeed_and_queue_stays_bounded(apps, app_dbs, mode):
    sink = OtlpSink(mode={"failing": "refuse", "hanging": "hang"}.get(mode, "ok"), hang_seconds=30)
    with sink:
        endpoint = f"http://127.0.0.1:{free_port()}" if mode == "refused" else sink.endpoint
        port = free_port()
        proc = apps.start([bin_path("takealook-run"), "--service", "gateway", bin_path("gunicorn"), "-w", "1",
                           "-b", f"127.0.0.1:{port}", "gateway:app"], port=port,
                          env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "GATEWAY_DSN": app_dbs["gateway"],
                               "TAKEALOOK_MAX_QUEUE": "400"})
        latencies = []
        with requests.Session() as session:
            for _ in range(400):  # 5 spans each: 2,000 spans against a queue of 400
                start = time.perf_counter()
                response = session.get(f"http://127.0.0.1:{port}/local/4", timeout=10)
                latencies.append(time.perf_counter() - start)
                assert response.status_code == 200
        # A blocking exporter would hold requests for its 10 s timeout; these never wait on it.
        assert max(latencies) < 2.0, f"slowest request took {max(latencies):.2f}s"
        assert _helper_rss_kb(proc.pid) < 200_000
        deadline = time.monotonic() + 15
        while "could not deliver" not in apps.logs() and time.monotonic() < deadline:
            time.sleep(0.1)
        logs = apps.logs()
        assert logs.count("could not deliver") == 1, logs  # rate-limited: once a minute
        assert "Traceback" not in logs
