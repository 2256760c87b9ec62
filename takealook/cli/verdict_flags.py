"""The verdict flags of ``load compare`` and ``traces compare``: one set, defaults from ``verdicts.Settings``."""

from __future__ import annotations

from takealook.cli.flags import Flag, non_negative_float, non_negative_int, percentage
from takealook.errors import UsageError
from takealook.verdicts import stats


def _metric(text: str, flag: str) -> str:
    if text not in stats.METRICS:
        raise UsageError(f"{flag} must be one of {', '.join(stats.METRICS)}, not {text!r}")
    return text


VERDICT_FLAGS = (
    Flag("metric", "--metric", f"what verdicts and --fail-on-regression look at: {', '.join(stats.METRICS)}",
         "METRIC", parse=_metric),
    Flag("noise_floor_pct", "--noise-floor", "smaller latency changes are no detectable change", "PCT",
         parse=percentage, show=lambda v: f"{v:g}%"),
    Flag("error_floor_pts", "--error-floor", "the same for the error rate, in points", "PTS",
         parse=non_negative_float),
    Flag("resamples", "--resamples", "bootstrap resamples (at least 100)", parse=non_negative_int),
    Flag("seed", "--seed", "bootstrap seed", parse=non_negative_int),
)
