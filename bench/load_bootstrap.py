"""Speed of ``load compare``'s block bootstrap against a naive bootstrap, measured in the same run.

Two sides of 50,000 lognormal latencies each, p50/p95/p99/mean/errors, 2,000
resamples. The naive baseline resamples blocks of raw values and sorts them for
every resample (what a straightforward implementation does); it is timed on 20
resamples and scaled. Prints seconds and the ratio. The machine may be shared:
absolute times are noisy, the ratio less so.
"""

from __future__ import annotations

import math
import random
import time

from takealook.verdicts import stats

N, RESAMPLES, NAIVE_RESAMPLES = 50_000, 2000, 20


def side(rng: random.Random, scale: float) -> stats.Series:
    values = [scale * math.exp(rng.gauss(0, 0.5)) for _ in range(N)]
    return stats.Series(values, [rng.random() < 0.01 for _ in range(N)], 60.0)


def naive(before: stats.Series, after: stats.Series, resamples: int) -> None:
    rng = random.Random(1)
    blocks = [[s.latencies_ms[i:i + N // 50] for i in range(0, N, N // 50)] for s in (before, after)]
    for _ in range(resamples):
        for chosen in blocks:
            values = sorted(v for _ in chosen for v in chosen[rng.randrange(len(chosen))])
            for q in (0.5, 0.95, 0.99):
                stats.quantile(values, q)
            sum(values) / len(values)


def main() -> None:
    rng = random.Random(2)
    before, after = side(rng, 20.0), side(rng, 22.0)
    began = time.perf_counter()
    stats.compare([before], [after], resamples=RESAMPLES)
    ours = time.perf_counter() - began
    began = time.perf_counter()
    naive(before, after, NAIVE_RESAMPLES)
    baseline = (time.perf_counter() - began) * RESAMPLES / NAIVE_RESAMPLES
    print(f"block bootstrap, {RESAMPLES} resamples of 2 x {N:,} requests, 5 metrics: {ours:.2f} s")
    print(f"naive (sort every resample), scaled from {NAIVE_RESAMPLES}: {baseline:.1f} s")
    print(f"ratio naive / ours: {baseline / ours:.0f}x")


if __name__ == "__main__":
    main()
