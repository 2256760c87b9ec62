"""The verdict flags of ``load compare`` and ``traces compare``: one set, defaults from ``verdicts.Settings``."""

from __future__ import annotations

from takealook.cli.flags import Flag, non_negative_float, non_negative_int, percentage
from takealook.errors import UsageError
from takealook.verdicts import stats


def _confidence(text: str, flag: str) -> float:
    """``99%``, ``99`` or ``0.99``: the level of every interval and verdict."""
    try:
        value = float(text.strip().rstrip("%").strip())
    except ValueError:
        raise UsageError(f"{flag} {text!r}: use a level such as 95% or 0.95") from None
    value = value / 100 if value > 1 else value
    if not 0.5 <= value < 1:
        raise UsageError(f"{flag} must be at least 50% and below 100%, not {text}")
    return value


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
    Flag("confidence", "--confidence", "the level of every interval and verdict; at 95%, about one endpoint in 20 "
         "is called changed by chance: 99% for many endpoints", "LEVEL", parse=_confidence,
         show=lambda v: f"{100 * v:g}%"),
    Flag("resamples", "--resamples", "bootstrap resamples (at least 100 at 95%, 500 at 99%)", parse=non_negative_int),
    Flag("seed", "--seed", "bootstrap seed", parse=non_negative_int),
)
