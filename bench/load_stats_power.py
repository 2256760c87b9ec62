"""Operating characteristics of ``load compare``'s verdicts on simulated latencies.

Latencies are lognormal (median 20 ms, sigma 0.5) with AR(1) dependence in log
space (rho 0.5: neighbouring requests are alike, as on a real server). For each
sample size per side it prints the false positive rate on A/A pairs (the
default 5% noise floor, and with no floor: the interval's own error rate) and
the power to detect a 10% p95 increase. Usage: python bench/load_stats_power.py [SIMS]
"""

from __future__ import annotations

import math
import random
import sys
import time

from takealook.verdicts import stats


def simulate(rng: random.Random, n: int, scale: float = 1.0, rho: float = 0.5, sigma: float = 0.5) -> stats.Series:
    x, values = rng.gauss(0, 1), []
    noise = math.sqrt(1 - rho * rho)
    for _ in range(n):
        x = rho * x + noise * rng.gauss(0, 1)
        values.append(20.0 * scale * math.exp(sigma * x))
    return stats.Series(values, [False] * n, 60.0)


def rates(n: int, sims: int, change: float, resamples: int = 500, seed: int = 7) -> tuple[float, float]:
    """(share judged slower with the default floor, share whose interval excludes zero) over ``sims`` pairs."""
    rng = random.Random(seed)
    verdicts = excluded = 0
    for i in range(sims):
        before, after = simulate(rng, n), simulate(rng, n, 1.0 + change)
        result = stats.compare([before], [after], ("p95",), resamples=resamples, seed=i)["p95"]
        verdicts += result.verdict != stats.SAME
        excluded += result.ci_pct is not None and (result.ci_pct[0] > 0 or result.ci_pct[1] < 0)
    return verdicts / sims, excluded / sims


def main() -> None:
    sims = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    print(f"{'n/side':>7} {'A/A FPR (floor 5%)':>19} {'A/A FPR (no floor)':>19} {'power +10% p95':>15} {'s':>5}")
    for n in (1000, 2000, 3000, 5000):
        began = time.perf_counter()
        fpr, fpr_raw = rates(n, sims, 0.0)
        power, _ = rates(n, sims, 0.10, seed=8)
        print(f"{n:>7} {fpr:>19.1%} {fpr_raw:>19.1%} {power:>15.1%} {time.perf_counter() - began:>5.1f}")


if __name__ == "__main__":
    main()
