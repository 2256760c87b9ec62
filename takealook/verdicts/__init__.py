"""Before and after, one machinery: samples per endpoint in, verdicts with intervals out.

``load compare`` (``takealook.loadtests.compare``: load runs) and ``traces
compare`` (``takealook.analyzers.traces.compare``: production traces split by
resource attributes or time) hand each endpoint's requests of each side as
``stats.Series`` (latencies and failures in time order) to ``compare_endpoint``
and gate on ``regressions``; ``stats`` holds the statistics (percentiles, block
bootstrap, minimum detectable change, verdicts). So the same traffic gets the
same verdict whichever command measured it, and both JSON outputs share their
per-endpoint keys (``takealook.report.load.endpoint_contract``).

An endpoint is never called faster when its error rate rose by more than the
error floor: a request that fails at once (a 401, a redirect to the login
page) is fast, so a change that breaks an endpoint would look like a speed-up.
Its verdict is then ``more errors``, and ``regressions`` counts it.

``Settings`` are the knobs both commands expose (the CLI's flag defaults come
from it). This package imports no part of takealook: the analyzers and the load
tests both use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

from takealook.errors import UsageError
from takealook.verdicts import stats


@dataclass(frozen=True)
class Settings:
    metric: str = "p95"  # what the verdict of an endpoint and --fail-on-regression look at
    noise_floor_pct: float = stats.DEFAULT_NOISE_FLOOR_PCT  # smaller latency changes: no detectable change
    error_floor_pts: float = stats.DEFAULT_ERROR_FLOOR_PTS  # the same for the error rate, in points
    resamples: int = stats.DEFAULT_RESAMPLES
    seed: int = 1
    confidence: float = 0.95

    def __post_init__(self) -> None:
        check(self.metric, self.noise_floor_pct, self.resamples, self.confidence)


@dataclass(frozen=True)
class EndpointComparison:
    name: str
    before: stats.Summary
    after: stats.Summary
    changes: Mapping[str, stats.Change]
    verdict: str
    latencies_before: tuple[float, ...]  # for the distribution chart
    latencies_after: tuple[float, ...]


@dataclass(frozen=True)
class Regression:
    name: str
    metric: str
    change_pct: float
    threshold_pct: float


def check(metric: str, noise_floor_pct: float, resamples: int, confidence: float = 0.95) -> None:
    if metric not in stats.METRICS:
        raise UsageError(f"--metric must be one of {', '.join(stats.METRICS)}, not {metric!r}")
    if noise_floor_pct < 0:
        raise UsageError(f"--noise-floor must be 0% or more, not {noise_floor_pct:g}%")
    if not 0.5 <= confidence < 1:
        raise UsageError(f"--confidence must be at least 50% and below 100%, not {100 * confidence:g}%")
    # Each tail of the interval is read from the resamples beyond it: 2.5 of them at the least.
    needed = max(100, math.ceil(5 / (1 - confidence) - 1e-9))
    if resamples < needed:
        raise UsageError(f"--resamples must be at least {needed} (a {100 * confidence:g}% interval needs them), "
                         f"not {resamples}")


def compare_endpoint(name: str, before: Sequence[stats.Series], after: Sequence[stats.Series], metric: str,
                     noise_floor_pct: float, error_floor_pts: float, resamples: int, seed: int, confidence: float,
                     paired: bool = False) -> EndpointComparison:
    """Every metric's change and the endpoint's verdict; ``seed`` is the comparison's (made per endpoint here)."""
    changes = stats.compare(before, after, stats.METRICS, noise_floor_pct, error_floor_pts, resamples,
                            stats.seed_for(name, seed), confidence, paired=paired)
    return EndpointComparison(name, stats.summarize(before), stats.summarize(after), changes,
                              verdict(changes, metric, error_floor_pts),
                              tuple(v for s in before for v in s.latencies_ms),
                              tuple(v for s in after for v in s.latencies_ms))


def chance_warning(endpoints: int, confidence: float) -> Optional[str]:
    """Said when so many endpoints are judged that one may be called changed by chance alone: each verdict
    is at ``confidence`` on its own, so nothing changed still gives ``endpoints x (1 - confidence)`` intervals
    that miss zero, on average (the noise floor then spares the small ones)."""
    expected = endpoints * (1 - confidence)
    if expected < 0.5:
        return None
    firmer = next((level for level in (0.99, 0.999) if level > confidence and endpoints * (1 - level) < 0.5), None)
    advice = f"; --confidence {100 * firmer:g}% makes that unlikely" if firmer else ""
    return (f"{endpoints} endpoints judged at {100 * confidence:g}% each: even if nothing changed, about "
            f"{expected:.1f} of them would be called faster or slower by chance, before the noise floor{advice}")


def verdict(changes, metric: str, error_floor_pts: float) -> str:
    """The verdict of ``metric``, unless the error rate rose beyond the floor and it would not say so."""
    chosen = changes[metric].verdict
    errors = changes["errors"].change_pct
    if metric != "errors" and chosen != stats.SLOWER and errors is not None and errors > error_floor_pts:
        return stats.MORE_ERRORS
    return chosen


def regressions(endpoints: Iterable[EndpointComparison], metric: str, error_floor_pts: float,
                threshold_pct: float) -> list[Regression]:
    """Endpoints whose ``metric`` got worse beyond the threshold, interval above zero, and those whose error
    rate rose beyond the floor (its verdict ``more errors``; the change in points), whatever their latency
    did: an endpoint that got slower and fails more is gated on its errors even when its slowdown is under
    the threshold."""
    worse = stats.MORE_ERRORS if metric == "errors" else stats.SLOWER
    found = []
    for endpoint in endpoints:
        change = endpoint.changes[metric]
        if change.verdict == worse and change.change_pct is not None and change.change_pct > threshold_pct:
            found.append(Regression(endpoint.name, metric, change.change_pct, threshold_pct))
        errors = endpoint.changes["errors"]
        if metric != "errors" and errors.verdict == stats.MORE_ERRORS:
            found.append(Regression(endpoint.name, "errors", errors.change_pct or 0.0, error_floor_pts))
    return found
