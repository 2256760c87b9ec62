"""Threshold flags are made from the settings dataclasses: their defaults are the dataclasses' own."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess

import pytest

from takealook.analyzers.db.options import AuditOptions, IndexOptions, Thresholds
from takealook.analyzers.traces.settings import Settings
from takealook.cli.db import ADVICE_FLAGS, AUDIT_FLAGS
from takealook.cli.flags import add_flags, build, default_of, show_age
from takealook.cli.traces import THRESHOLD_FLAGS
from takealook.cli.verdict_flags import VERDICT_FLAGS
from takealook.errors import UsageError
from takealook.verdicts import Settings as VerdictSettings
from tests.conftest import script

CASES = [(Settings, THRESHOLD_FLAGS, ("traces", "report")), (IndexOptions, ADVICE_FLAGS, ("db", "indexes")),
         (AuditOptions, AUDIT_FLAGS, ("db", "audit")), (VerdictSettings, VERDICT_FLAGS, ("load", "compare")),
         (VerdictSettings, VERDICT_FLAGS, ("traces", "compare"))]


def _parse(settings_type, flags, argv):
    parser = argparse.ArgumentParser()
    add_flags(parser, settings_type, flags)
    return parser.parse_args(argv)


@pytest.mark.parametrize("settings_type, flags, command", CASES)
def test_no_flag_is_the_dataclass_default_and_help_says_it(settings_type, flags, command):
    assert build(settings_type, _parse(settings_type, flags, []), flags) == settings_type()
    help_text = " ".join(subprocess.run([script("takealook"), *command, "--help"], capture_output=True, text=True,
                                        check=True).stdout.split())
    for flag in flags:
        default = default_of(settings_type, flag.field)
        shown = flag.show(default) if flag.show else (
            default if isinstance(default, str) else str(int(default)) if float(default).is_integer() else str(default))
        assert f"{flag.flag} " in help_text and f"(default {shown})" in help_text, flag.flag


def test_flags_reach_nested_fields_and_keep_the_rest():
    args = _parse(AuditOptions, AUDIT_FLAGS, ["--top", "3", "--min-stats-age", "36h"])
    options = build(AuditOptions, args, AUDIT_FLAGS, advise=False)
    assert options.top == 3 and options.thresholds.min_stats_age_s == 36 * 3600 and not options.advise
    assert dataclasses.replace(options.thresholds, min_stats_age_s=Thresholds().min_stats_age_s) == Thresholds()
    index = build(IndexOptions, _parse(IndexOptions, ADVICE_FLAGS, ["--lock-timeout", "250", "--min-saving", "30%"]),
                  ADVICE_FLAGS, use_workload=False)
    assert index.connect.lock_timeout_ms == 250 and index.connect.statement_timeout_ms == 30_000
    assert index.min_saving_pct == 30.0 and not index.use_workload and index.min_calls == IndexOptions().min_calls
    assert show_age(7 * 86400) == "7d" and show_age(90) == "90s"


@pytest.mark.parametrize("argv, message", [(["--min-saving", "150"], "--min-saving must be between 0 and 100"),
                                           (["--max-statements", "0"], "--max-statements must be at least 1"),
                                           (["--min-calls", "x"], "--min-calls 'x': expected a whole number")])
def test_bad_values_are_usage_errors(argv, message):
    with pytest.raises(UsageError, match=message):
        build(IndexOptions, _parse(IndexOptions, ADVICE_FLAGS, argv), ADVICE_FLAGS)
