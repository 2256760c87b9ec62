"""``takealook collect`` and ``takealook traces import`` as real subprocesses."""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import signal
import socket
import subprocess
import threading

import pytest
import requests
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from takealook.collector import open_store
from tests.collector.conftest import PROTOBUF, raw_request, sdk_spans
from tests.conftest import script
from tests.contracts import check

_ANNOUNCE = re.compile(r"OTLP/HTTP on (http://127\.0\.0\.1:\d+).*?(?:OTLP/gRPC on (127\.0\.0\.1:\d+))?; store")


def _start(tmp_path, *extra: str):
    """Run `takealook collect` on free ports; returns (process, http url, grpc address)."""
    proc = subprocess.Popen([script("takealook"), "collect", "--listen", "127.0.0.1:0", "--grpc", "127.0.0.1:0",
                             "--store", str(tmp_path / "spans.db"), *extra],
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    first = {}
    reader = threading.Thread(target=lambda: first.update(line=proc.stderr.readline()), daemon=True)
    reader.start()
    reader.join(20)
    match = _ANNOUNCE.search(first.get("line", ""))
    if not match:
        proc.kill()
        raise AssertionError(f"collector did not announce itself: {first.get('line')!r}")
    return proc, match.group(1), match.group(2)


def _stop(proc) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    return err


def test_collect_serves_both_protocols_and_stops_gracefully(tmp_path):
    proc, url, grpc_address = _start(tmp_path)
    try:
        assert grpc_address
        exporter = OTLPSpanExporter(endpoint=url + "/v1/traces")
        spans = sdk_spans(traces=3)
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        exporter.shutdown()
        status = requests.get(url + "/", timeout=10)
        assert status.status_code == 200
        check("collect-status", status.json())  # docs/json.md
    finally:
        err = _stop(proc)
    assert proc.returncode == 0
    assert "stopped; 9 spans and 0 metric points stored" in err
    with open_store(tmp_path / "spans.db") as store:
        assert store.summary().spans == 9


def test_acknowledged_spans_survive_kill_9(tmp_path):
    proc, url, _ = _start(tmp_path, "--quiet")
    acknowledged = 0
    try:
        with requests.Session() as session:
            for seed in range(12):
                answer = session.post(url + "/v1/traces", data=raw_request(200, seed=100 + seed).SerializeToString(),
                                      headers=PROTOBUF, timeout=30)
                assert answer.status_code == 200
                acknowledged += 200
        proc.send_signal(signal.SIGKILL)  # right after the last 200: no shutdown, no checkpoint
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    with open_store(tmp_path / "spans.db") as store:
        assert store.summary().spans == acknowledged
    # Restarted on the same store: it opens cleanly and keeps adding.
    proc, url, _ = _start(tmp_path, "--quiet")
    try:
        answer = requests.post(url + "/v1/traces", data=raw_request(20, seed=99).SerializeToString(),
                               headers=PROTOBUF, timeout=30)
        assert answer.status_code == 200
    finally:
        _stop(proc)
    with open_store(tmp_path / "spans.db") as store:
        assert store.summary().spans == acknowledged + 20


def _run(*args, cwd=None):
    return subprocess.run([script("takealook"), *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def test_startup_errors_are_one_clear_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = _run("collect", "--listen", f"127.0.0.1:{port}", "--grpc", "off", "--store", str(tmp_path / "a.db"))
        assert out.returncode == 2
        assert out.stderr.strip() == (f"takealook: cannot listen on 127.0.0.1:{port}: the port is in use "
                                      "(another collector running?); pick another --listen")
        out = _run("collect", "--listen", "127.0.0.1:0", "--grpc", f"127.0.0.1:{port}",
                   "--store", str(tmp_path / "a.db"))
        assert out.returncode == 2 and "pick another --grpc" in out.stderr and len(out.stderr.splitlines()) == 1
    for bad in ("localhost", "1.2.3.4:", "127.0.0.1:70000", "::1:4318"):
        out = _run("collect", "--listen", bad, "--store", str(tmp_path / "a.db"))
        assert out.returncode == 2 and "--listen" in out.stderr and len(out.stderr.splitlines()) == 1, bad
    (tmp_path / "file").write_text("not a folder")
    out = _run("collect", "--listen", "127.0.0.1:0", "--grpc", "off", "--store", str(tmp_path / "file" / "s.db"))
    assert out.returncode == 2 and "cannot write the span store" in out.stderr and "--store" in out.stderr
    for flag, value in (("--max-body", "lots"), ("--retain", "7 days"), ("--max-size", "-1GB"),
                        ("--cors-origin", "app.example.com")):
        out = _run("collect", flag, value, "--store", str(tmp_path / "a.db"))
        assert out.returncode == 2 and flag in out.stderr, (flag, out.stderr)


def _file_exporter_line(spans) -> str:
    """One line as the Collector's file exporter writes it: OTLP JSON with hex ids."""
    document = json_format.MessageToDict(encode_spans(spans))
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
                for link in span.get("links", []):
                    link["traceId"] = base64.b64decode(link["traceId"]).hex()
                    link["spanId"] = base64.b64decode(link["spanId"]).hex()
    return json.dumps(document)


def test_traces_import_is_idempotent_and_reports_bad_lines(tmp_path):
    spans = sdk_spans(traces=4, seed=5)
    plain = tmp_path / "traces.json"
    plain.write_text(_file_exporter_line(spans[:6]) + "\n\n" + '{"resourceLogs": []}\n')
    zipped = tmp_path / "traces-2.json.gz"
    zipped.write_bytes(gzip.compress((_file_exporter_line(spans[6:]) + "\n{oops\n"
                                      + '{"resourceSpans": 7}\n').encode()))
    store = tmp_path / "store" / "spans.db"
    out = _run("traces", "import", str(plain), str(zipped), "--store", str(store))
    assert out.returncode == 0, out.stderr
    assert "imported 12 new spans (0 already stored) and 0 metric points from 2 file(s)" in out.stdout
    assert f"skipped {zipped}:2: not JSON" in out.stderr
    assert f"skipped {zipped}:3: resourceSpans: expected a list" in out.stderr
    again = _run("traces", "import", str(plain), str(zipped), "--store", str(store))
    assert "imported 0 new spans (12 already stored)" in again.stdout
    with open_store(store) as reader:
        assert reader.summary().spans == 12 and reader.summary().traces == 4


def test_traces_import_refuses_unreadable_files(tmp_path):
    store = str(tmp_path / "spans.db")
    out = _run("traces", "import", str(tmp_path / "missing.json"), "--store", store)
    assert out.returncode == 2 and "missing.json: no such file" in out.stderr
    assert not os.path.exists(store)
    binary = tmp_path / "traces.pb"
    binary.write_bytes(b"\x00\x00\x01\x02" + raw_request(20).SerializeToString())
    out = _run("traces", "import", str(binary), "--store", store)
    assert out.returncode == 2 and "format to json" in out.stderr
    junk = tmp_path / "junk.json"
    junk.write_text("{not json\n")
    out = _run("traces", "import", str(junk), "--store", store)
    assert out.returncode == 2 and "no line of the given files" in out.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signals_stop_it_without_losing_queued_spans(tmp_path, signum):
    proc, url, _ = _start(tmp_path, "--quiet")
    try:
        with requests.Session() as session:
            answer = session.post(url + "/v1/traces", data=raw_request(100, seed=7).SerializeToString(),
                                  headers=PROTOBUF, timeout=30)
            assert answer.status_code == 200
        proc.send_signal(signum)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    with open_store(tmp_path / "spans.db") as store:
        assert store.summary().spans == 100
    assert not os.path.exists(tmp_path / "spans.db-wal") or os.path.getsize(tmp_path / "spans.db-wal") == 0
