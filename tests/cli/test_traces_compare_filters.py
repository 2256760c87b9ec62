"""FILTERs of `takealook traces compare` (and `takealook report --before/--after`): read, or one line and exit 2."""

from __future__ import annotations

import subprocess

import pytest

from takealook.cli.report import _is_filter
from takealook.cli.traces_compare import parse_filter, side
from takealook.errors import UsageError
from tests.conftest import script

NOW = 1_796_292_000 * 10**9  # 2026-12-03T10:00:00Z
HOUR = 3600 * 10**9
T10 = 1_796_205_600 * 10**9  # 2026-12-02T10:00:00Z


def test_attribute_filters():
    assert parse_filter("cloud.provider=heroku", "--before", NOW) == ("attribute", "cloud.provider", "heroku")
    assert parse_filter(" service.version = 1.4.2 ", "--before", NOW) == ("attribute", "service.version", "1.4.2")
    # A value may hold '=' and '..' (only the first '=' splits).
    assert parse_filter("k8s.pod.name=web-1..2=x", "--after", NOW) == ("attribute", "k8s.pod.name", "web-1..2=x")


def test_time_filters():
    assert parse_filter("2026-12-02T10:00..2026-12-02T12:00", "--before", NOW) == ("time", T10, T10 + 2 * HOUR)
    assert parse_filter("2026-12-02T10:00..", "--before", NOW) == ("time", T10, None)
    assert parse_filter("..2026-12-02T10:00", "--before", NOW) == ("time", None, T10)
    assert parse_filter("3h..1h", "--before", NOW) == ("time", NOW - 3 * HOUR, NOW - HOUR)
    assert parse_filter("since 2h", "--after", NOW) == ("time", NOW - 2 * HOUR, None)
    assert parse_filter("until 2026-12-02T10:00+01:00", "--after", NOW) == ("time", None, T10 - HOUR)


def test_a_side_is_every_filter_together():
    chosen = side([["deployment.environment=aws", "since"], ["2h"], ["service.version=1.5.0"]], "--after", NOW)
    assert chosen.attributes == (("deployment.environment", "aws"), ("service.version", "1.5.0"))
    assert (chosen.since_ns, chosen.until_ns) == (NOW - 2 * HOUR, None)
    assert chosen.text == "deployment.environment=aws since 2h service.version=1.5.0"
    narrowed = side([["3h..1h", "since 2h"]], "--before", NOW)
    assert (narrowed.since_ns, narrowed.until_ns) == (NOW - 2 * HOUR, NOW - HOUR)
    assert side([["a=1"], ["a=1"]], "--before", NOW).attributes == (("a", "1"),)


def test_a_side_matches_root_resources():
    chosen = side([["cloud.provider=heroku", "debug=true", "2026-12-02T10:00..2026-12-02T12:00"]], "--before", NOW)
    assert chosen.matches(T10, {"cloud.provider": "heroku", "debug": True})
    assert not chosen.matches(T10, {"cloud.provider": "aws", "debug": True})
    assert not chosen.matches(T10, {"debug": True})
    assert not chosen.matches(T10 + 2 * HOUR, {"cloud.provider": "heroku", "debug": True})  # the end is exclusive
    assert side([["port=8000"]], "--before", NOW).matches(T10, {"port": 8000})


@pytest.mark.parametrize("words, message", [
    (["heroku"], "is not a filter"),
    (["=heroku"], "is not an attribute name"),
    (["cloud provider=x"], "is not an attribute name"),
    (["cloud.provider="], "give the value after ="),
    ([".."], "at least one end"),
    (["2026-12-02T12:00..2026-12-02T10:00"], "ends before it starts"),
    (["2026-13-02..2026-12-03"], "is not a time"),
    (["since"], "give a time after it"),
    (["since yesterday"], "is not a time"),
    (["a=1", "a=2"], "gives a twice"),
    (["since 1h", "until 2h"], "leave no time"),
])
def test_bad_filters_say_what_is_wrong(words, message):
    with pytest.raises(UsageError) as error:
        side([words], "--before", NOW)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert str(error.value).startswith("--before")


def test_a_side_needs_a_filter():
    with pytest.raises(UsageError, match="give --after FILTER"):
        side(None, "--after", NOW)


@pytest.mark.parametrize("args, message", [
    (["--before", "heroku", "--after", "cloud.provider=aws"], "'heroku' is not a filter"),
    (["--after", "cloud.provider=aws"], "give --before FILTER"),
    (["--before", "a=1", "--after", "b=2", "--noise-floor", "lots"], "--noise-floor 'lots'"),
    (["--before", "a=1", "--after", "b=2", "--metric", "p42"], "--metric must be one of"),
    (["--before", "a=1", "--after", "b=2", "--resamples", "5"], "--resamples must be at least 100"),
    (["--before", "a=1", "--after", "b=2", "--confidence", "100%"], "--confidence must be at least 50% and below 100%"),
    (["--before", "a=1", "--after", "b=2", "--confidence", "sure"], "--confidence 'sure': use a level such as 95%"),
    (["--before", "a=1", "--after", "b=2", "--confidence", "0.99", "--resamples", "400"],
     "--resamples must be at least 500 (a 99% interval needs them)"),
])
def test_the_command_exits_2_with_one_line(tmp_path, args, message):
    out = subprocess.run([script("takealook"), "traces", "compare", "--store", str(tmp_path / "none.db"), *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == ""
    (line,) = out.stderr.strip().splitlines()
    assert message in line, line


def test_a_missing_store_is_one_line(tmp_path):
    out = subprocess.run([script("takealook"), "traces", "compare", "--store", str(tmp_path / "none.db"),
                          "--before", "a=1", "--after", "a=2"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no span store at" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_the_combined_report_tells_filters_from_run_labels():
    assert _is_filter("deployment.environment=aws") and _is_filter("2026-12-01T10:00..")
    assert _is_filter("since 2h") and _is_filter("since")
    assert not _is_filter("before") and not _is_filter("run-2.after_index")
