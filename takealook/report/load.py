"""The load-test report: ``load compare`` as a ``Document`` and as the JSON contract; ``load run``'s summary.

``compare_document(comparison, regressions, threshold)`` lays out one verdict
line per endpoint (and overall), the noise floor used, warnings, then per
endpoint every metric with its interval and a before/after latency
distribution chart. ``compare_contract(...)`` is the JSON object of
docs/json.md (docs/schemas/load-compare.schema.json).
"""

from __future__ import annotations

from typing import Optional, Sequence

from takealook.loadtests.compare import Comparison
from takealook.report.model import Distribution, Document, KeyValues, Paragraph, Section, Table
from takealook.verdicts import EndpointComparison, Regression, stats

_TONE = {stats.SLOWER: "bad", stats.FASTER: "good", stats.MORE_ERRORS: "bad", stats.FEWER_ERRORS: "good"}


def _r(value: Optional[float], digits: int = 3) -> Optional[float]:
    return None if value is None else round(float(value), digits)


def _interval(ci) -> Optional[list[float]]:
    return None if ci is None else [_r(ci[0], 2), _r(ci[1], 2)]


def endpoint_contract(e: EndpointComparison, metric: str) -> dict:
    out = {"name": e.name, "verdict": e.verdict, "requests_before": e.before.requests,
           "requests_after": e.after.requests}
    for m in stats.LATENCY_METRICS:
        c = e.changes[m]
        out.update({f"{m}_before_ms": _r(c.before), f"{m}_after_ms": _r(c.after),
                    f"{m}_change_pct": _r(c.change_pct, 2), f"{m}_change_ci_pct": _interval(c.ci_pct),
                    f"{m}_min_detectable_change_pct": _r(c.min_detectable_pct, 2), f"{m}_verdict": c.verdict})
    chosen = e.changes[metric]
    errors = e.changes["errors"]
    out.update({
        "min_detectable_change_pct": _r(chosen.min_detectable_pct, 2),
        "error_rate_before": _r(e.before.error_rate, 5), "error_rate_after": _r(e.after.error_rate, 5),
        "error_rate_change_pts": _r(errors.change_pct, 3), "error_rate_change_ci_pts": _interval(errors.ci_pct),
        "error_rate_min_detectable_change_pts": _r(errors.min_detectable_pct, 3),
        "errors_verdict": errors.verdict,
        "throughput_before_rps": _r(e.before.throughput_rps, 2), "throughput_after_rps": _r(e.after.throughput_rps, 2),
        "notes": sorted({c.note for c in e.changes.values() if c.note}),
    })
    return out


def compare_contract(c: Comparison, found: Sequence[Regression] = (), threshold: Optional[float] = None) -> dict:
    return {
        "schema_version": 1,
        "before": list(c.before),
        "after": list(c.after),
        "endpoints": [endpoint_contract(e, c.metric) for e in c.endpoints],
        "overall": endpoint_contract(c.overall, c.metric),
        "only_before": list(c.only_before),
        "only_after": list(c.only_after),
        "settings": {"metric": c.metric, "paired": c.paired, "noise_floor_pct": c.noise_floor_pct, "error_floor_pts": c.error_floor_pts,
                     "confidence": c.confidence, "resamples": c.resamples, "seed": c.seed,
                     "fail_on_regression_pct": threshold},
        "regressions": [{"name": r.name, "metric": r.metric, "change": _r(r.change_pct, 2),
                         "threshold": r.threshold_pct} for r in found],
        "runs": [{"label": r.label, "side": r.side, "host": r.host, "started_at": r.started_at, "load": dict(r.load),
                  "requests": r.requests, "samples_lost": r.samples_lost} for r in c.runs],
        "warnings": list(c.warnings),
    }


def _change_text(change: stats.Change, unit: str = "%") -> str:
    if change.change_pct is None:
        return "—"
    text = f"{change.change_pct:+.1f}{unit}"
    if change.ci_pct is not None:
        text += f" [{change.ci_pct[0]:+.1f}, {change.ci_pct[1]:+.1f}]"
    return text


def _verdict_row(e: EndpointComparison, metric: str) -> list:
    chosen = e.changes[metric]
    if metric == "errors":
        before, after = f"{100 * e.before.error_rate:.2f}%", f"{100 * e.after.error_rate:.2f}%"
        unit = " pts"
    else:
        before, after, unit = chosen.before, chosen.after, "%"
    mdc = None if chosen.min_detectable_pct is None else f"{chosen.min_detectable_pct:.1f}{unit.strip()}"
    return [e.name, e.verdict, before, after, _change_text(chosen, unit), mdc,
            f"{100 * e.before.error_rate:.2f}% → {100 * e.after.error_rate:.2f}%",
            f"{e.before.throughput_rps:.1f} → {e.after.throughput_rps:.1f}", e.before.requests, e.after.requests]


def _endpoint_section(e: EndpointComparison, c: Comparison) -> Section:
    rows = []
    for m in stats.LATENCY_METRICS:
        ch = e.changes[m]
        rows.append([m, ch.before, ch.after, _change_text(ch), ch.min_detectable_pct, ch.verdict])
    err = e.changes["errors"]
    rows.append(["error rate (%)", 100 * e.before.error_rate, 100 * e.after.error_rate, _change_text(err, " pts"),
                 err.min_detectable_pct, err.verdict])
    blocks = [Table.of(["metric", "before", "after", f"change [{100 * c.confidence:g}% CI]", "min detectable", "verdict"],
                       rows, right=("before", "after", "min detectable"))]
    blocks += [Paragraph(note, "warning") for note in sorted({ch.note for ch in e.changes.values() if ch.note})]
    blocks.append(Distribution(f"Latency distribution of {e.name}",
                               ((f"before ({', '.join(c.before)})", e.latencies_before),
                                (f"after ({', '.join(c.after)})", e.latencies_after))))
    return Section(e.name, tuple(blocks))


def compare_document(c: Comparison, found: Sequence[Regression] = (), threshold: Optional[float] = None) -> Document:
    metric_label = "error rate" if c.metric == "errors" else c.metric
    headers = ["endpoint", "verdict", f"{metric_label} before", f"{metric_label} after",
               f"change [{100 * c.confidence:g}% CI]", "min detectable", "errors", "req/s", "n before", "n after"]
    rows = [_verdict_row(e, c.metric) for e in (*c.endpoints, c.overall)]
    blocks = [Table.of(headers, rows, right=headers[2:4]),
              Paragraph(f"Verdicts on {metric_label}. Noise floor: {c.noise_floor_pct:g}% (error rate: "
                        f"{c.error_floor_pts:g} points): a smaller change is reported as no detectable change even "
                        f"when its interval excludes zero. Intervals: {100 * c.confidence:g}% block bootstrap, "
                        f"{c.resamples} resamples. Latency counts from when each request was due.")]
    for r in found:
        if r.metric == "errors" and c.metric != "errors":  # the verdict says "more errors", whatever the latency
            blocks.append(Paragraph(f"Regression: {r.name} error rate {r.change_pct:+.1f} pts, beyond the "
                                    f"{r.threshold_pct:g}-point error floor: the change is in errors", "bad"))
            continue
        blocks.append(Paragraph(f"Regression: {r.name} {r.metric} {r.change_pct:+.1f}"
                                f"{' pts' if r.metric == 'errors' else '%'} exceeds --fail-on-regression "
                                f"{r.threshold_pct:g}", "bad"))
    if threshold is not None and not found:
        blocks.append(Paragraph(f"No regression beyond {threshold:g} on {metric_label}.", "good"))
    blocks += [Paragraph(w, "warning") for w in c.warnings]
    if c.only_before or c.only_after:
        blocks.append(KeyValues((("only before", ", ".join(c.only_before) or "none"),
                                 ("only after", ", ".join(c.only_after) or "none"))))
    runs = Table.of(["run", "side", "host", "started", "load", "measured requests"],
                    [[r.label, r.side, r.host, r.started_at, _load_text(r.load), r.requests] for r in c.runs])
    sections = [Section("Verdicts", tuple(blocks)),
                Section("Endpoints", (), tuple(_endpoint_section(e, c) for e in (*c.endpoints, c.overall))),
                Section("Runs", (runs,))]
    return Document(f"Load comparison: {', '.join(c.before)} → {', '.join(c.after)}", tuple(sections),
                    meta=(("metric", metric_label), ("noise floor", f"{c.noise_floor_pct:g}%")))


def _load_text(load) -> str:
    if load.get("model") == "open":
        return f"open, {load.get('rate')}/s"
    if load.get("model") == "closed":
        return f"closed, {load.get('users')} users"
    return "?"


def run_document(label: str, folder: str, meta: dict, summaries: Sequence[tuple[str, stats.Summary]],
                 failing: Sequence[tuple[str, float, str]] = ()) -> Document:
    """What ``load run`` prints when it is done: per endpoint count, percentiles, errors, throughput, and a
    warning for each endpoint in ``failing`` ((endpoint, failure rate, most frequent error))."""
    rows = [[name, s.requests, s.p50_ms, s.p95_ms, s.p99_ms, s.mean_ms, f"{100 * s.error_rate:.2f}%",
             s.throughput_rps] for name, s in summaries]
    table = Table.of(["endpoint", "requests", "p50 ms", "p95 ms", "p99 ms", "mean ms", "errors", "req/s"], rows,
                     right=("errors",))
    blocks = [table, KeyValues((("folder", folder), ("load", _load_text(meta.get("load") or {})),
                                ("measured", f"{meta.get('duration_s')}s after {meta.get('warmup_s')}s warm-up"),
                                ("samples recorded", meta.get("samples")),
                                ("samples lost", meta.get("samples_lost")),
                                ("Locust", meta.get("locust_version"))))]
    if meta.get("samples_lost"):
        blocks.append(Paragraph(f"{meta['samples_lost']} samples were lost on their way from the workers", "warning"))
    blocks[:0] = [Paragraph(failing_text(name, rate, error), "bad") for name, rate, error in failing]
    return Document(f"Load run {label}", (Section("Measured requests", tuple(blocks)),))


def failing_text(name: str, rate: float, error: str) -> str:
    return (f"WARNING: {name} failed {100 * rate:.1f}% of its requests ({error}): its latencies are not "
            "those of the page; fix the suite (log in, headers) before comparing runs")
