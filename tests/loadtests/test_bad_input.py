"""Bad input to ``load run`` and ``load compare``: one clear line on stderr, exit 2."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from takealook.loadtests.runs import write_meta
from takealook.loadtests.samples import Sample, SampleWriter, format_row
from tests.conftest import script
from tests.loadtests import suites
from tests.loadtests.server import DelayServer


def takealook(*args, cwd=None):
    return subprocess.run([script("takealook"), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=60)


def one_line_error(out, *words):
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("takealook: "), out.stderr
    for word in words:
        assert word in lines[0], lines[0]


def fake_run(runs, label, names, t0=1000.0, schema=None):
    """A run folder written directly (no Locust): 200 requests per endpoint name, 10 ms each."""
    folder = runs / label
    folder.mkdir(parents=True)
    writer = SampleWriter(folder / "samples.csv.gz")
    rows = [format_row(Sample(t0 + i * 0.01, None, 10.0 + (i % 7), "GET", name, 200, "", 2, "", 0))
            for i in range(200) for name in names]
    writer.write_rows(rows)
    writer.close()
    write_meta(folder, {"label": label, "t0": t0, "warmup_s": 0, "duration_s": 10, "load": {"model": "closed"}})
    if schema is not None:
        meta = json.loads((folder / "run.json").read_text())
        meta["schema_version"] = schema
        (folder / "run.json").write_text(json.dumps(meta))
    return folder


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def suite(tmp_path):
    path = tmp_path / "suite.py"
    path.write_text(suites.ONE_ENDPOINT)
    return path


def test_unreachable_host(suite, tmp_path):
    out = takealook("load", "run", suite, "--host", f"http://127.0.0.1:{closed_port()}", "--label", "x",
                    "--runs-dir", tmp_path / "runs", "--duration", "1s")
    one_line_error(out, "cannot reach")
    assert not (tmp_path / "runs" / "x").exists()


def test_suite_that_does_not_import(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text(suites.BROKEN_IMPORT)
    with DelayServer() as server:
        out = takealook("load", "run", broken, "--host", server.url, "--label", "x", "--runs-dir", tmp_path / "runs",
                        "--duration", "1s", "--drain", "0s")
    one_line_error(out, "does not import", "no_such_module_takealook_test")


def test_suite_with_syntax_error_and_missing_suite(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def broken(:\n")
    with DelayServer() as server:
        one_line_error(takealook("load", "run", bad, "--host", server.url, "--label", "x",
                                 "--runs-dir", tmp_path / "runs"), "SyntaxError", "line 1")
        one_line_error(takealook("load", "run", tmp_path / "nope.py", "--host", server.url, "--label", "x"),
                       "does not exist")


def test_usage_errors_of_run(suite, tmp_path):
    one_line_error(takealook("load", "run", suite, "--label", "x"), "--host")
    one_line_error(takealook("load", "run", suite, "--host", "127.0.0.1:80", "--label", "x"), "URL")
    one_line_error(takealook("load", "run", suite, "--host", "http://127.0.0.1:1", "--label", "x",
                             "--duration", "soon"), "bad duration")
    one_line_error(takealook("load", "run", suite, "--host", "http://127.0.0.1:1", "--label", "a/b"), "label")
    one_line_error(takealook("load", "run", suite, "--host", "http://127.0.0.1:1", "--label", "x", "--rate", "fast"),
                   "bad rate")


def test_existing_run_is_not_overwritten(suite, tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs, "kept", ["/a"])
    with DelayServer() as server:
        out = takealook("load", "run", suite, "--host", server.url, "--label", "kept", "--runs-dir", runs)
    one_line_error(out, "already exists", "--replace")
    assert (runs / "kept" / "samples.csv.gz").exists()


def test_missing_run(tmp_path):
    one_line_error(takealook("load", "compare", "nope", "nada", "--runs-dir", tmp_path), "no run 'nope'")


def test_run_folder_without_metadata_or_samples(tmp_path):
    fake_run(tmp_path, "ok", ["/a"])
    (tmp_path / "half").mkdir()
    one_line_error(takealook("load", "compare", "ok", "half", "--runs-dir", tmp_path), "no run.json")
    fake_run(tmp_path, "nosamples", ["/a"])
    (tmp_path / "nosamples" / "samples.csv.gz").unlink()
    one_line_error(takealook("load", "compare", "ok", "nosamples", "--runs-dir", tmp_path), "samples")


def test_run_folder_from_another_schema_version(tmp_path):
    fake_run(tmp_path, "ok", ["/a"])
    fake_run(tmp_path, "future", ["/a"], schema=2)
    one_line_error(takealook("load", "compare", "ok", "future", "--runs-dir", tmp_path), "schema version 2")


def test_no_common_endpoints(tmp_path):
    fake_run(tmp_path, "left", ["/a", "/b"])
    fake_run(tmp_path, "right", ["/c"])
    one_line_error(takealook("load", "compare", "left", "right", "--runs-dir", tmp_path), "no endpoint in common",
                   "GET /a", "GET /c")


def test_compare_usage_errors_and_paths(tmp_path):
    left = fake_run(tmp_path, "left", ["/a"])
    fake_run(tmp_path, "right", ["/a"])
    one_line_error(takealook("load", "compare", "left", "--runs-dir", tmp_path), "two runs")
    one_line_error(takealook("load", "compare", "left", "right", "--before", "left", "--after", "right",
                             "--runs-dir", tmp_path), "not both")
    one_line_error(takealook("load", "compare", "left", "right", "--noise-floor", "lots", "--runs-dir", tmp_path),
                   "percentage")
    # A run folder given as a path works from anywhere.
    out = takealook("load", "compare", str(left), str(tmp_path / "right"), "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["endpoints"][0]["verdict"] == "no detectable change"
