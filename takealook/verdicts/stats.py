"""The statistics of before/after comparisons (``load compare``, ``traces compare``): percentiles,
a block bootstrap, verdicts.

Pure Python (no numpy) and deterministic: the same runs and seed give the same
intervals. Configuration is by arguments only.

Percentiles of the raw samples use linear interpolation between order
statistics (numpy's default). Changes are relative: ``after / before - 1`` in
percent; the error rate's change is in percentage points.

A side is one or more series of requests in time order: a load run's requests
of an endpoint, or the traces of an endpoint that one filter of ``traces
compare`` selects from one instance of the service ("run" below is a series).

Confidence intervals come from a block bootstrap. Requests of one run are not
independent (a GC pause, a noisy neighbour or a cache warming up slows a
stretch of consecutive requests), so each run's requests of an endpoint, in
time order, are cut into contiguous blocks (at most ``MAX_BLOCKS`` per run, at
least ``MIN_BLOCK`` requests each: 50 blocks of 60 for 3,000 requests) and
whole blocks are resampled with replacement, within each run. That measures
the sampling noise inside runs, not the noise between runs (a machine busier
during one run than another). When a side has repetitions, the variance of a
run's metric between repetitions (pooled over both sides, ``run_variance``),
less the part the bootstrap already carries (the sampling noise of one run),
is added to each resample as a run effect of variance ``s_b^2 / runs`` per
side (a one-way random-effects model, method of moments), drawn from Student's
t with the pooled degrees of freedom (two repetitions per side estimate it
poorly, and the interval says so). With one run per side nothing measures it,
and the noise floor is the only guard. ``paired=True`` is for runs made at the
same time in pairs (an old and a new host side by side): run-to-run noise is
then the variance of the per-pair changes, which cancels what a pair shared.
(Resampling the runs themselves would understate that variance by half with
two runs.) The interval is the 2.5th-97.5th percentile of the resampled
``log(after / before)``, moved by what binning (below) moved the whole sample's
change, and widened, if it must be, to hold the point change (a median between
two clusters of latencies can fall a hair outside its own percentile interval).

Speed: percentiles of a resample are read from log-spaced bins 0.5% wide
(a bin's value is off by at most 0.25%, far below any verdict's noise floor):
each block keeps cumulative counts per bin, a resample is a vector of block
weights, and its k-th value is a binary search over bins of a weighted sum.
2,000 resamples of two 50,000-request runs take about a second.

Verdicts: ``slower`` when the change exceeds the noise floor and the interval
lies above zero, ``faster`` symmetrically, else ``no detectable change``. The
minimum detectable change is what these runs would detect with 80% power at
the 5% level: ``(1.96 + 0.84) x`` the bootstrap standard error of the log
ratio (read from the width of the draws' central 95%), and never less than the
noise floor. A percentile gets a verdict only
with at least ``5 / (1 - q)`` requests per side (p95: 100, p99: 500).
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass
from operator import mul
from typing import Optional, Sequence

QUANTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}
LATENCY_METRICS = ("p50", "p95", "p99", "mean")
METRICS = LATENCY_METRICS + ("errors",)
DEFAULT_RESAMPLES = 2000
DEFAULT_NOISE_FLOOR_PCT = 5.0
DEFAULT_ERROR_FLOOR_PTS = 0.5
MAX_BLOCKS = 50
MIN_BLOCK = 10
BIN_RATIO = 1.005
_Z_POWER = 1.959964 + 0.841621  # two-sided 5% test with 80% power
_LOWEST_MS = 0.001

FASTER, SLOWER, SAME = "faster", "slower", "no detectable change"
MORE_ERRORS, FEWER_ERRORS = "more errors", "fewer errors"


@dataclass(frozen=True)
class Series:
    """One run's requests of one endpoint, in time order."""

    latencies_ms: Sequence[float]
    failed: Sequence[bool]
    seconds: float  # length of the measured window, for throughput


@dataclass(frozen=True)
class Summary:
    requests: int
    errors: int
    error_rate: float
    p50_ms: Optional[float]
    p95_ms: Optional[float]
    p99_ms: Optional[float]
    mean_ms: Optional[float]
    throughput_rps: float


@dataclass(frozen=True)
class Change:
    metric: str  # p50 | p95 | p99 | mean | errors
    before: Optional[float]
    after: Optional[float]
    change_pct: Optional[float]  # percent (latency) or percentage points (errors)
    ci_pct: Optional[tuple[float, float]]
    min_detectable_pct: Optional[float]
    verdict: str
    note: str = ""


def quantile(ordered: Sequence[float], q: float) -> Optional[float]:
    """Linear interpolation between order statistics of a sorted sequence."""
    if not ordered:
        return None
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(series: Sequence[Series]) -> Summary:
    values = sorted(v for s in series for v in s.latencies_ms)
    errors = sum(sum(1 for f in s.failed if f) for s in series)
    seconds = sum(s.seconds for s in series)
    n = len(values)
    return Summary(
        requests=n, errors=errors, error_rate=errors / n if n else 0.0,
        p50_ms=quantile(values, 0.50), p95_ms=quantile(values, 0.95), p99_ms=quantile(values, 0.99),
        mean_ms=sum(values) / n if n else None,
        throughput_rps=n / seconds if seconds > 0 else 0.0,
    )


# --------------------------------------------------------------------------- bootstrap


class _Side:
    """The blocks of one side (all its runs) in the binned form the bootstrap reads."""

    def __init__(self, series: Sequence[Series], to_bin):
        self.run_blocks: list[range] = []  # indexes of each run's blocks
        self.counts: list[int] = []
        self.sums: list[float] = []
        self.errors: list[int] = []
        bins_per_block: list[list[int]] = []
        for run in series:
            n = len(run.latencies_ms)
            if n == 0:
                continue
            k = max(1, min(MAX_BLOCKS, n // MIN_BLOCK))
            first = len(self.counts)
            for b in range(k):
                lo, hi = b * n // k, (b + 1) * n // k
                chunk = run.latencies_ms[lo:hi]
                self.counts.append(hi - lo)
                self.sums.append(float(sum(chunk)))
                self.errors.append(sum(1 for f in run.failed[lo:hi] if f))
                bins_per_block.append([to_bin(v) for v in chunk])
            self.run_blocks.append(range(first, len(self.counts)))
        self.bins_per_block = bins_per_block

    def columns(self, nbins: int) -> list[tuple[int, ...]]:
        """columns[j][b]: how many values of block b fall in bins 0..j."""
        per_block = []
        for bins in self.bins_per_block:
            counts = [0] * nbins
            for j in bins:
                counts[j] += 1
            running, cumulative = 0, []
            for c in counts:
                running += c
                cumulative.append(running)
            per_block.append(cumulative)
        return list(zip(*per_block)) if per_block else []

    @property
    def resamplable(self) -> bool:
        return any(len(r) > 1 for r in self.run_blocks)

    def weights(self, rng: random.Random) -> list[int]:
        """Block counts of one resample: each run's blocks resampled within the run (stratified)."""
        w = [0] * len(self.counts)
        for blocks in self.run_blocks:
            start, k = blocks.start, len(blocks)
            for _ in range(k):
                w[start + int(rng.random() * k)] += 1
        return w


def _kth_bin(columns, weights, k: int) -> int:
    """Smallest bin j whose weighted cumulative count reaches k (k is 1-based)."""
    low, high = 0, len(columns) - 1
    while low < high:
        mid = (low + high) // 2
        if sum(map(mul, weights, columns[mid])) >= k:
            high = mid
        else:
            low = mid + 1
    return low


def _resampled(side: _Side, columns, weights, metrics, bin_value) -> dict[str, float]:
    n = sum(map(mul, weights, side.counts))
    out = {}
    for metric in metrics:
        if metric in QUANTILES:
            k = max(1, math.ceil(QUANTILES[metric] * n))
            out[metric] = bin_value(_kth_bin(columns, weights, k))
        elif metric == "mean":
            out[metric] = sum(map(mul, weights, side.sums)) / n
        elif metric == "errors":
            out[metric] = sum(map(mul, weights, side.errors)) / n
    return out


def bootstrap(before: Sequence[Series], after: Sequence[Series], metrics: Sequence[str],
              resamples: int = DEFAULT_RESAMPLES, seed: int = 1,
              exact: Optional[tuple[Summary, Summary]] = None) -> dict[str, list[float]]:
    """Resampled changes per metric: log(after/before) for latency, after-before for the error rate.

    Empty when either side cannot be resampled (one run of fewer than 2 x MIN_BLOCK requests).
    """
    values = [v for s in (*before, *after) for v in s.latencies_ms]
    if not values:
        return {}
    lowest = max(_LOWEST_MS, min(values))
    log_ratio = math.log(BIN_RATIO)
    nbins = int(math.log(max(max(values), lowest) / lowest) / log_ratio) + 1

    def to_bin(v: float) -> int:
        return min(nbins - 1, int(math.log(max(v, lowest) / lowest) / log_ratio))

    def bin_value(j: int) -> float:
        return lowest * BIN_RATIO ** (j + 0.5)

    sides = [_Side(before, to_bin), _Side(after, to_bin)]
    if not all(side.resamplable for side in sides):
        return {}
    columns = [side.columns(nbins) for side in sides]
    # A bin's value is off by up to a quarter percent: each draw is moved by what binning moved the
    # whole sample's change, so the draws are centred on the exact change, not on the binned one.
    whole = [_resampled(side, cols, [1] * len(side.counts), metrics, bin_value) for side, cols in zip(sides, columns)]
    exact = exact or (summarize(before), summarize(after))  # the sides' own figures, when the caller has them
    offset = {}
    for metric in metrics:
        if metric in QUANTILES and min(whole[0][metric], whole[1][metric]) > 0:
            b, a = (getattr(s, f"{metric}_ms") or 0.0 for s in exact)
            if b > 0 and a > 0:
                offset[metric] = math.log(a / b) - math.log(whole[1][metric] / whole[0][metric])
    rng = random.Random(seed)
    out: dict[str, list[float]] = {m: [] for m in metrics}
    for _ in range(resamples):
        b, a = (_resampled(side, cols, side.weights(rng), metrics, bin_value) for side, cols in zip(sides, columns))
        for metric in metrics:
            if metric == "errors":
                out[metric].append(a[metric] - b[metric])
            elif b[metric] > 0 and a[metric] > 0:
                out[metric].append(math.log(a[metric] / b[metric]) + offset.get(metric, 0.0))
    return out


def _run_value(series: Series, metric: str) -> Optional[float]:
    """One run's metric on the scale its changes are measured on (log latency, error fraction)."""
    if metric == "errors":
        return sum(1 for f in series.failed if f) / len(series.failed) if series.failed else None
    if len(series.latencies_ms) < _min_requests(metric):
        return None
    value = summarize([series])
    value = getattr(value, f"{metric}_ms")
    return math.log(value) if value and value > 0 else None


def run_variance(before: Sequence[Series], after: Sequence[Series], metric: str) -> tuple[float, int]:
    """Variance of one run's metric between repetitions of a side, pooled over both sides, and its
    degrees of freedom.

    0 when neither side has two runs (then nothing measures run-to-run noise, and the
    noise floor is the only guard). It includes each run's own sampling noise, which
    ``compare`` subtracts before adding the rest to the bootstrap.
    """
    squares, freedom = 0.0, 0
    for side in (before, after):
        values = [v for v in (_run_value(s, metric) for s in side) if v is not None]
        if len(values) > 1:
            mean = sum(values) / len(values)
            squares += sum((v - mean) ** 2 for v in values)
            freedom += len(values) - 1
    return (squares / freedom if freedom else 0.0), freedom


def paired_variance(before: Sequence[Series], after: Sequence[Series], metric: str) -> tuple[float, int]:
    """Variance of the per-pair change (after[i] vs before[i]) and its degrees of freedom."""
    changes = []
    for b, a in zip(before, after):
        vb, va = _run_value(b, metric), _run_value(a, metric)
        if vb is not None and va is not None:
            changes.append(va - vb)
    if len(changes) < 2:
        return 0.0, 0
    mean = sum(changes) / len(changes)
    return sum((c - mean) ** 2 for c in changes) / (len(changes) - 1), len(changes) - 1


def _run_effect(before, after, metric: str, bootstrap_variance: float, paired: bool) -> tuple[float, int]:
    """Variance to add to the bootstrap's log ratio for run-to-run noise, and its degrees of freedom.

    Method of moments: what repetitions vary by, less the sampling noise inside runs that the
    bootstrap already carries (its variance is about within/runs_before + within/runs_after).
    Unpaired: between-run variance s^2 pooled over the sides, times 1/runs_before + 1/runs_after.
    Paired: the variance of the per-pair changes over the number of pairs; what the two runs of
    a pair shared (the machine's state at the time) cancels in it.
    """
    if paired:
        spread, freedom = paired_variance(before, after, metric)
        return (spread / len(before) - bootstrap_variance if spread > 0 else 0.0), freedom
    spread, freedom = run_variance(before, after, metric)
    weight = 1.0 / len(before) + 1.0 / len(after)
    return ((spread - bootstrap_variance / weight) * weight if spread > 0 else 0.0), freedom


def _student_t(rng: random.Random, freedom: int) -> float:
    """A Student t variate: a variance estimated from few repetitions is itself uncertain."""
    return rng.gauss(0.0, 1.0) / math.sqrt(rng.gammavariate(freedom / 2.0, 2.0) / freedom)


# --------------------------------------------------------------------------- verdicts


def _percentile_interval(values: list[float], confidence: float) -> tuple[float, float]:
    ordered = sorted(values)
    tail = (1 - confidence) / 2
    return quantile(ordered, tail), quantile(ordered, 1 - tail)


def _spread(values: list[float]) -> float:
    """A standard error read from the central 95% of the draws (robust to the t run effect's tails)."""
    low, high = _percentile_interval(values, 0.95)
    return (high - low) / (2 * 1.959964)


def _min_requests(metric: str) -> int:
    return math.ceil(5 / (1 - QUANTILES[metric])) if metric in QUANTILES else 2 * MIN_BLOCK


def compare(before: Sequence[Series], after: Sequence[Series], metrics: Sequence[str] = METRICS,
            noise_floor_pct: float = DEFAULT_NOISE_FLOOR_PCT, error_floor_pts: float = DEFAULT_ERROR_FLOOR_PTS,
            resamples: int = DEFAULT_RESAMPLES, seed: int = 1, confidence: float = 0.95,
            paired: bool = False) -> dict[str, Change]:
    """Point change, bootstrap interval, minimum detectable change and verdict for each metric.

    ``paired``: ``before[i]`` and ``after[i]`` ran at the same time (same length, two pairs or more).
    """
    if paired and (len(before) != len(after) or len(before) < 2):
        raise ValueError("paired comparison needs the same number of runs on each side, at least two")
    sb, sa = summarize(before), summarize(after)
    draws = bootstrap(before, after, metrics, resamples, seed, (sb, sa))
    rng = random.Random(seed + 7919)
    for metric, values in draws.items():
        extra, freedom = _run_effect(before, after, metric, _spread(values) ** 2, paired)
        if extra > 0:
            draws[metric] = [v + math.sqrt(extra) * _student_t(rng, freedom) for v in values]
    out = {}
    for metric in metrics:
        if metric == "errors":
            out[metric] = _error_change(sb, sa, draws.get(metric), error_floor_pts, confidence)
        else:
            out[metric] = _latency_change(metric, sb, sa, draws.get(metric), noise_floor_pct, confidence)
    return out


def _latency_change(metric, sb: Summary, sa: Summary, draws, floor: float, confidence: float) -> Change:
    before, after = getattr(sb, f"{metric}_ms"), getattr(sa, f"{metric}_ms")
    if before is None or after is None:
        return Change(metric, before, after, None, None, None, SAME, "no requests on one side")
    change = 100.0 * (after / before - 1) if before > 0 else None
    need = _min_requests(metric)
    if min(sb.requests, sa.requests) < need or not draws or change is None:
        return Change(metric, before, after, change, None, None, SAME,
                      f"too few requests for a {metric} verdict (needs {need} per side)")
    low, high = _percentile_interval(draws, confidence)
    # A percentile interval of a lumpy statistic (a median between two clusters of latencies) can
    # miss its own point change by a hair; it is widened to hold it rather than contradict it.
    ci = (min(change, 100.0 * math.expm1(low)), max(change, 100.0 * math.expm1(high)))
    mdc = max(floor, 100.0 * math.expm1(_Z_POWER * _spread(draws)))
    verdict = SAME
    if change > floor and ci[0] > 0:
        verdict = SLOWER
    elif change < -floor and ci[1] < 0:
        verdict = FASTER
    return Change(metric, before, after, change, ci, mdc, verdict)


def _error_change(sb: Summary, sa: Summary, draws, floor: float, confidence: float) -> Change:
    change = 100.0 * (sa.error_rate - sb.error_rate)
    if not draws:
        return Change("errors", sb.error_rate, sa.error_rate, change, None, None, SAME,
                      f"too few requests for an error-rate verdict (needs {2 * MIN_BLOCK} per side)")
    low, high = _percentile_interval(draws, confidence)
    ci = (min(change, 100.0 * low), max(change, 100.0 * high))
    mdc = max(floor, 100.0 * _Z_POWER * _spread(draws))
    verdict = SAME
    if change > floor and ci[0] > 0:
        verdict = MORE_ERRORS
    elif change < -floor and ci[1] < 0:
        verdict = FEWER_ERRORS
    return Change("errors", sb.error_rate, sa.error_rate, change, ci, mdc, verdict)


def seed_for(name: str, seed: int = 1) -> int:
    """A stable per-endpoint seed, so one endpoint's interval does not depend on the others."""
    return zlib.crc32(name.encode("utf-8")) ^ seed
