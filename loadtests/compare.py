"""``load compare``: did the change make each endpoint faster, slower, or nothing we can tell?

``compare_runs(before, after, ...)`` takes loaded runs (``runs.load_run``), one
or more per side (repetitions), and returns a ``Comparison``: per endpoint
common to both sides and overall, the summaries of each side and, for p50,
p95, p99, mean and the error rate, the change with its bootstrap interval,
the minimum detectable change and a verdict (``takealook.verdicts.stats`` says how). The
verdict of an endpoint is that of ``metric`` (p95 unless asked otherwise).

Latency here is what a user sees: the time from when the request was due
(scheduled, in the open model) to the end of its response, failed requests
included, as Locust counts them. Only requests due inside each run's
measurement window count (no warm-up, no drain).

``paired=True``: ``before[i]`` ran at the same time as ``after[i]`` (two hosts
side by side); run-to-run noise is then read from the pairs' differences.

The per-endpoint comparison, its verdict (``more errors`` beats ``faster``)
and the regressions are ``takealook.verdicts``', shared with ``traces compare``.

``regressions(comparison, threshold_pct)`` lists what ``--fail-on-regression``
gates on: a ``slower`` (or ``more errors``) verdict whose change exceeds the
threshold, and any endpoint whose verdict is ``more errors``.

``failing_endpoints(run)`` lists the endpoints of one run that failed more than
``FAILURE_WARNING`` of their requests, with their most frequent error, for the
warning ``load run`` prints.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

from takealook import verdicts
from takealook.errors import InputError, UsageError
from takealook.loadtests.runs import Run
from takealook.verdicts import EndpointComparison, Regression, stats

OVERALL = "(all requests)"
FAILURE_WARNING = 0.05  # load run warns about endpoints failing more than this share of requests
_PSEUDO_METHOD = "TASK"  # open-model tasks that ended without a request of their own


@dataclass(frozen=True)
class RunInfo:
    label: str
    side: str  # before | after
    host: str
    started_at: str
    load: Mapping
    requests: int
    samples_lost: int


@dataclass(frozen=True)
class Comparison:
    before: tuple[str, ...]
    after: tuple[str, ...]
    paired: bool
    metric: str
    noise_floor_pct: float
    error_floor_pts: float
    confidence: float
    resamples: int
    seed: int
    endpoints: tuple[EndpointComparison, ...]
    overall: EndpointComparison
    only_before: tuple[str, ...]
    only_after: tuple[str, ...]
    runs: tuple[RunInfo, ...]
    warnings: tuple[str, ...]


def endpoint_series(run: Run) -> dict[str, stats.Series]:
    seconds = float(run.meta["duration_s"])
    latencies: dict[str, list[float]] = defaultdict(list)
    failed: dict[str, list[bool]] = defaultdict(list)
    for sample in run.measured():
        for key in (sample.endpoint, OVERALL):
            latencies[key].append(sample.user_latency_ms)
            failed[key].append(sample.failed)
    return {key: stats.Series(tuple(latencies[key]), tuple(failed[key]), seconds) for key in latencies}


def compare_runs(before: Sequence[Run], after: Sequence[Run], metric: str = "p95",
                 noise_floor_pct: float = stats.DEFAULT_NOISE_FLOOR_PCT,
                 error_floor_pts: float = stats.DEFAULT_ERROR_FLOOR_PTS,
                 resamples: int = stats.DEFAULT_RESAMPLES, seed: int = 1, confidence: float = 0.95,
                 paired: bool = False) -> Comparison:
    verdicts.check(metric, noise_floor_pct, resamples)
    if not before or not after:
        raise UsageError("give at least one run before and one after")
    if paired and (len(before) != len(after) or len(before) < 2):
        raise UsageError("--paired needs as many runs after as before, at least two each, in matching order")
    sides = {"before": [endpoint_series(r) for r in before], "after": [endpoint_series(r) for r in after]}
    names = {side: set().union(*(s.keys() for s in series)) - {OVERALL} for side, series in sides.items()}
    common = sorted(n for n in names["before"] & names["after"] if not n.startswith(_PSEUDO_METHOD + " "))
    if not common:
        raise InputError(f"runs {', '.join(r.label for r in before)} and {', '.join(r.label for r in after)} "
                         f"have no endpoint in common (before: {_few(names['before'])}; after: {_few(names['after'])})")

    def one(name: str) -> EndpointComparison:
        if paired:  # keep the pairs aligned: only pairs where both runs saw the endpoint
            pairs = [(sb[name], sa[name]) for sb, sa in zip(sides["before"], sides["after"])
                     if name in sb and name in sa]
            b, a = [p[0] for p in pairs], [p[1] for p in pairs]
        else:
            b = [s[name] for s in sides["before"] if name in s]
            a = [s[name] for s in sides["after"] if name in s]
        return verdicts.compare_endpoint(name, b, a, metric, noise_floor_pct, error_floor_pts, resamples, seed,
                                         confidence, paired=paired and len(b) >= 2)

    endpoints = tuple(one(name) for name in common)
    overall = one(OVERALL)
    runs = tuple(_info(r, "before") for r in before) + tuple(_info(r, "after") for r in after)
    return Comparison(
        before=tuple(r.label for r in before), after=tuple(r.label for r in after), paired=paired, metric=metric,
        noise_floor_pct=noise_floor_pct, error_floor_pts=error_floor_pts, confidence=confidence,
        resamples=resamples, seed=seed, endpoints=endpoints, overall=overall,
        only_before=tuple(sorted(names["before"] - names["after"])),
        only_after=tuple(sorted(names["after"] - names["before"])),
        runs=runs, warnings=tuple(_warnings(before, after, sides, metric, noise_floor_pct))
        + tuple(filter(None, [verdicts.chance_warning(len(endpoints), confidence)])),
    )


_verdict = verdicts.verdict  # the verdict of ``metric``, unless the error rate rose beyond the floor


def regressions(comparison: Comparison, threshold_pct: float) -> list[Regression]:
    """Endpoints (and the overall line) whose ``metric`` got worse beyond the threshold, interval above zero,
    and those whose verdict is ``more errors`` (their error-rate change, in points)."""
    return verdicts.regressions((*comparison.endpoints, comparison.overall), comparison.metric,
                                comparison.error_floor_pts, threshold_pct)


def failing_endpoints(run: Run, share: float = FAILURE_WARNING) -> list[tuple[str, float, str]]:
    """(endpoint, failure rate, most frequent error) of the endpoints failing more than ``share`` of requests."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    errors: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for sample in run.measured():
        if sample.method == _PSEUDO_METHOD:  # a task cut off before its request: counted in "unfinished"
            continue
        tally = counts[sample.endpoint]
        tally[0] += 1
        if sample.failed:
            tally[1] += 1
            errors[sample.endpoint][sample.error] += 1
    out = []
    for name, (requests, failed) in sorted(counts.items()):
        if requests and failed / requests > share:
            top = max(errors[name].items(), key=lambda kv: kv[1])[0]
            out.append((name, failed / requests, top))
    return out


def _info(run: Run, side: str) -> RunInfo:
    return RunInfo(run.label, side, str(run.meta.get("host", "")), str(run.meta.get("started_at", "")),
                   dict(run.meta.get("load") or {}), len(run.measured()), int(run.meta.get("samples_lost") or 0))


def _warnings(before, after, sides, metric, floor) -> list[str]:
    out = []
    shapes = {json_key(r.meta.get("load")) for r in (*before, *after)}
    if len(shapes) > 1:
        out.append("the runs used different load shapes (model, users or rate): latencies under different load "
                   "are not comparable")
    suites = {r.meta.get("suite_sha256") for r in (*before, *after)}
    if len(suites) > 1:
        out.append("the runs used different versions of the suite (suite_sha256 differs)")
    for run in (*before, *after):
        if run.meta.get("samples_lost"):
            out.append(f"run {run.label}: {run.meta['samples_lost']} samples were lost between Locust workers "
                       "and the master; its percentiles miss them")
        if run.meta.get("interrupted"):
            out.append(f"run {run.label} was interrupted; its window may be shorter than recorded")
    if len(before) == 1 and len(after) == 1:
        out.append("one run per side: run-to-run noise (a busier machine during one run) is not measured, only "
                   "the noise floor guards against it; for a firmer verdict repeat each side, interleaved "
                   "(before, after, before, after), and pass --before A1 A2 --after B1 B2")
    if metric != "errors":
        for side, series in sides.items():
            values = [stats.summarize([s[OVERALL]]) for s in series if OVERALL in s]
            points = [getattr(v, f"{metric}_ms") for v in values if getattr(v, f"{metric}_ms")]
            if len(points) > 1:
                spread = 100.0 * (max(points) / min(points) - 1)
                if spread > floor:
                    out.append(f"the {side} runs differ among themselves by {spread:.1f}% in overall {metric}, more "
                               f"than the {floor:g}% noise floor: this machine is noisy; consider "
                               f"--noise-floor {spread:.0f}")
    return out


def json_key(value) -> str:
    return json.dumps(value, sort_keys=True)


def _few(names) -> str:
    names = sorted(names)
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "") if names else "none"
