"""``takealook traces compare --before FILTER --after FILTER`` (issue 15).

A FILTER selects one side's traces; give ``--before``/``--after`` several
times (or several filters after one flag): all must match.

- ``KEY=VALUE``: a resource attribute of the trace's root span, as the agent
  sets it (``cloud.provider=heroku``, ``deployment.environment=aws``,
  ``service.version=1.4.2``; ``OTEL_RESOURCE_ATTRIBUTES`` adds any);
- ``FROM..TO``: traces that started in that time (``2026-12-01T10:00..2026-12-01T12:00``;
  either end may be left out; UTC when no zone is given; durations back from
  now work too: ``3h..1h``);
- ``since WHEN`` / ``until WHEN``: the same with one end (``since 2h``).

The verdicts are those of ``load compare`` (``takealook.verdicts``); the flags
``--metric``, ``--noise-floor``, ``--error-floor``, ``--resamples`` and
``--seed`` take their defaults from ``verdicts.Settings``. Load-test traffic is
left out unless ``--include-load`` or ``--load-run LABEL``. Exit 1 when
``--fail-on-regression PCT`` finds a regression; 2 on a bad filter or a side
that matches no trace. A window of 20,000 traces or more is compared from every
request's root span, and "where" from a random sample of whole traces per
endpoint and side, which every format states (docs/traces.md).
"""

from __future__ import annotations

import re
import sys
import time
from typing import Optional, Sequence

from takealook.cli.common import (
    add_load_options, add_output_options, add_store_option, emit, load_filter, store_exists, store_path,
)
from takealook.cli.flags import add_flags, build
from takealook.cli.verdict_flags import VERDICT_FLAGS
from takealook.errors import UsageError
from takealook.verdicts import Settings

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/]*$")
_FILTER_HELP = ("KEY=VALUE on the root span's resource (cloud.provider=heroku, service.version=1.4.2), "
                "FROM..TO (2026-12-01T10:00..2026-12-01T12:00), or since/until WHEN (since 2h); "
                "repeatable, all must match")


def register(verbs) -> None:
    sub = verbs.add_parser(
        "compare", help="before and after from production traces (two platforms, two releases, two times)",
        description="Compare two sides of the traffic in the span store, selected by resource attributes of the "
                    "traces' root spans or by time: per endpoint the change in p50/p95/p99, mean and error rate "
                    "with a block-bootstrap interval (95% unless --confidence), a verdict, the smallest change the "
                    "traces could detect, "
                    "and where the change is (critical path, statements and calls per request).")
    sub.add_argument("--before", action="append", nargs="+", metavar="FILTER", help=_FILTER_HELP)
    sub.add_argument("--after", action="append", nargs="+", metavar="FILTER", help="the other side (same forms)")
    add_flags(sub, Settings, VERDICT_FLAGS)
    sub.add_argument("--fail-on-regression", metavar="PCT",
                     help="exit 1 when an endpoint got slower by more than PCT (points for --metric errors), "
                          "or its error rate rose beyond --error-floor")
    add_store_option(sub)
    add_load_options(sub)
    add_output_options(sub)
    sub.set_defaults(run=run_compare)


# --------------------------------------------------------------------------- filters


def side(groups: Optional[Sequence[Sequence[str]]], flag: str, now_ns: Optional[int] = None):
    """The ``Side`` that the filters given after ``flag`` (one list per use of the flag) select."""
    from takealook.analyzers.traces.compare import Side

    words = [word for group in (groups or ()) for word in group]
    if not words:
        raise UsageError(f"give {flag} FILTER: {_FILTER_HELP}")
    now_ns = time.time_ns() if now_ns is None else now_ns
    attributes: dict[str, str] = {}
    since = until = None
    texts = []
    for text in _joined(words, flag):
        texts.append(text)
        kind, *value = parse_filter(text, flag, now_ns)
        if kind == "attribute":
            key, wanted = value
            if key in attributes and attributes[key] != wanted:
                raise UsageError(f"{flag} gives {key} twice ({attributes[key]}, {wanted}): a trace has one value; "
                                 "put one on each side")
            attributes[key] = wanted
        else:
            low, high = value
            since = low if since is None or (low is not None and low > since) else since
            until = high if until is None or (high is not None and high < until) else until
    if since is not None and until is not None and until <= since:
        raise UsageError(f"{flag} {' '.join(texts)!r}: the time filters leave no time between them")
    return Side(tuple(sorted(attributes.items())), since, until, " ".join(texts))


def _joined(words: list[str], flag: str) -> list[str]:
    """``since`` and ``until`` given apart from their value (``--before since 2h``) joined to it."""
    out, pending = [], None
    for word in words:
        if pending is not None:
            out.append(f"{pending} {word}")
            pending = None
        elif word.strip().lower() in ("since", "until"):
            pending = word.strip().lower()
        else:
            out.append(word)
    if pending is not None:
        raise UsageError(f"{flag} {pending}: give a time after it ({pending} 2h, {pending} 2026-12-01T10:00)")
    return out


def parse_filter(text: str, flag: str, now_ns: int) -> tuple:
    """``("attribute", key, value)`` or ``("time", since_ns, until_ns)``; UsageError says what is wrong."""
    raw = text.strip()
    word, _, rest = raw.partition(" ")
    if word.lower() in ("since", "until") and rest.strip():
        when = _when(rest.strip(), now_ns, flag, raw)
        return ("time", when, None) if word.lower() == "since" else ("time", None, when)
    if ".." in raw and "=" not in raw:
        low, _, high = raw.partition("..")
        if not low.strip() and not high.strip():
            raise UsageError(f"{flag} {text!r}: give at least one end of the time range (2026-12-01T10:00..)")
        since = _when(low.strip(), now_ns, flag, raw) if low.strip() else None
        until = _when(high.strip(), now_ns, flag, raw) if high.strip() else None
        if since is not None and until is not None and until <= since:
            raise UsageError(f"{flag} {text!r}: the range ends before it starts")
        return ("time", since, until)
    key, equals, value = raw.partition("=")
    key, value = key.strip(), value.strip()
    if equals and _KEY.match(key) and value:
        return ("attribute", key, value)
    if equals and not value:
        raise UsageError(f"{flag} {text!r}: give the value after = ({key}=VALUE)")
    if equals:
        raise UsageError(f"{flag} {text!r}: {key!r} is not an attribute name (such as deployment.environment)")
    raise UsageError(f"{flag} {text!r} is not a filter: use {_FILTER_HELP}")


def _when(text: str, now_ns: int, flag: str, whole: str) -> int:
    from takealook.cli.traces import parse_when

    try:
        return parse_when(text, now_ns, flag)
    except UsageError:
        raise UsageError(f"{flag} {whole!r}: {text!r} is not a time: give a duration back from now (2h, 30m) "
                         "or a time (2026-12-01T10:00, UTC unless a zone is given)") from None


# --------------------------------------------------------------------------- command


def compare_sides(store, before_words: list[str], after_words: list[str], load, settings: Optional[Settings] = None):
    """The comparison of the two sides' filters (for ``takealook report --before/--after``)."""
    from takealook.analyzers.traces.compare import compare_store

    now = time.time_ns()
    return compare_store(store, side([before_words], "--before", now), side([after_words], "--after", now),
                         settings or Settings(), load=load)


def run_compare(args) -> int:
    from takealook.analyzers.traces.compare import compare_store
    from takealook.cli.load import parse_pct
    from takealook.report import traces_compare as report
    from takealook.verdicts import regressions

    now = time.time_ns()
    before, after = side(args.before, "--before", now), side(args.after, "--after", now)
    threshold = parse_pct(args.fail_on_regression) if args.fail_on_regression else None
    settings = build(Settings, args, VERDICT_FLAGS)
    store = store_path(args)
    if not store_exists(store):
        raise UsageError(f"no span store at {store}: run `takealook collect` first, or pass --store")
    comparison = compare_store(store, before, after, settings, load=load_filter(args))
    found = regressions((*(e.comparison for e in comparison.endpoints), comparison.overall), settings.metric,
                        settings.error_floor_pts, threshold) if threshold is not None else []
    for note in comparison.notes:
        print(f"takealook: note: {note}", file=sys.stderr)
    emit(args, lambda: report.document(comparison, found, threshold),
         lambda: report.contract(comparison, found, threshold))
    return 1 if found else 0
