"""``traces compare`` as a ``Document`` and as the JSON contract (docs/schemas/traces-compare.schema.json).

The verdict table is ``load compare``'s, with one more column: where the change
is (``compare_where``'s cause line). Each endpoint's section adds every metric
with its interval, the critical-path shares before and after, the parts of the
critical path that moved (ms per request), the statements and calls whose time
per request moved most, and the latency distributions. The JSON's endpoints
carry ``load compare``'s keys (``load.endpoint_contract``) plus ``service``,
``critical_path_before``/``_after`` and ``where`` (with the traces it rests on:
all of the endpoint's, or a sample when the top-level ``sampled`` is true).
"""

from __future__ import annotations

import datetime as dt
from typing import Optional, Sequence

from takealook.report.load import _change_text, _r, endpoint_contract
from takealook.report.model import Distribution, Document, KeyValues, Paragraph, Section, StackedBars, Table
from takealook.verdicts import Regression, stats


def _iso(ns: Optional[int]) -> Optional[str]:
    if ns is None:
        return None
    return dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _side(side, traces: int, window, instances: int) -> dict:
    return {"filter": side.text, "attributes": dict(side.attributes), "since": _iso(side.since_ns),
            "until": _iso(side.until_ns), "traces": traces, "instances": instances, "first_trace_at": _iso(window[0]),
            "last_trace_at": _iso(window[1])}


def _item(i) -> dict:
    return {"service": i.service, "text": i.text, "fingerprint": i.fingerprint or None,
            "calls_per_request_before": i.calls_before, "calls_per_request_after": i.calls_after,
            "ms_per_request_before": i.ms_before, "ms_per_request_after": i.ms_after, "change_ms": i.change_ms}


def _endpoint(e, metric: str) -> dict:
    out = endpoint_contract(e.comparison, metric)
    w = e.where
    out.update({
        "service": e.service, "method": e.method, "route": e.route,
        "critical_path_before": dict(w.shares_before), "critical_path_after": dict(w.shares_after),
        "where": {
            "cause": w.cause or None,
            "traces_before": e.where_traces[0], "traces_after": e.where_traces[1],
            "critical_path": [{"service": p.service, "category": p.category, "ms_per_request_before": p.ms_before,
                               "ms_per_request_after": p.ms_after, "change_ms": p.change_ms,
                               "share_of_change": p.share_of_change} for p in w.path],
            "statements": [_item(i) for i in w.statements],
            "calls": [_item(i) for i in w.calls],
        },
    })
    return out


def contract(c, found: Sequence[Regression] = (), threshold: Optional[float] = None) -> dict:
    s = c.settings
    return {
        "schema_version": 1,
        "sampled": c.sampled,
        "before": _side(c.before, c.traces_before, c.window_before, c.instances_before),
        "after": _side(c.after, c.traces_after, c.window_after, c.instances_after),
        "endpoints": [_endpoint(e, s.metric) for e in c.endpoints],
        "overall": endpoint_contract(c.overall, s.metric),
        "only_before": list(c.only_before),
        "only_after": list(c.only_after),
        "settings": {"metric": s.metric, "noise_floor_pct": s.noise_floor_pct, "error_floor_pts": s.error_floor_pts,
                     "confidence": s.confidence, "resamples": s.resamples, "seed": s.seed,
                     "fail_on_regression_pct": threshold},
        "regressions": [{"name": r.name, "metric": r.metric, "change": _r(r.change_pct, 2),
                         "threshold": r.threshold_pct} for r in found],
        "notes": list(c.notes),
        "warnings": list(c.warnings),
    }


# --------------------------------------------------------------------------- document


def verdict_table(c, title: str = "") -> Table:
    metric = c.settings.metric
    label = "error rate" if metric == "errors" else metric
    rows = []
    for e in (*(x.comparison for x in c.endpoints), c.overall):
        chosen = e.changes[metric]
        unit = " pts" if metric == "errors" else "%"
        before, after = (f"{100 * e.before.error_rate:.2f}%", f"{100 * e.after.error_rate:.2f}%") \
            if metric == "errors" else (chosen.before, chosen.after)
        rows.append([e.name, e.verdict, before, after, _change_text(chosen, unit),
                     None if chosen.min_detectable_pct is None else f"{chosen.min_detectable_pct:.1f}{unit.strip()}",
                     f"{100 * e.before.error_rate:.2f}% → {100 * e.after.error_rate:.2f}%", e.before.requests,
                     e.after.requests, _cause_of(c, e.name)])
    headers = ["endpoint", "verdict", f"{label} before", f"{label} after", f"change [{100 * c.settings.confidence:g}% CI]",
               "min detectable", "errors", "n before", "n after", "where"]
    return Table.of(headers, rows, title=title, right=headers[2:4])


def _cause_of(c, name: str) -> Optional[str]:
    for e in c.endpoints:
        if e.comparison.name == name and e.comparison.verdict != stats.SAME:
            return e.where.cause or None
    return None


def _counted(traces: int, instances: int) -> str:
    return f"{traces} traces" + (f", {instances} instances" if instances > 1 else "")


def sides_text(c) -> str:
    return (f"{c.before.text} ({_counted(c.traces_before, c.instances_before)}) → "
            f"{c.after.text} ({_counted(c.traces_after, c.instances_after)})")


def document(c, found: Sequence[Regression] = (), threshold: Optional[float] = None) -> Document:
    s = c.settings
    label = "error rate" if s.metric == "errors" else s.metric
    blocks: list = [verdict_table(c),
                    Paragraph(f"Verdicts on {label}, from the traces' own durations (server spans at the entry). "
                              f"Noise floor: {s.noise_floor_pct:g}% (error rate: {s.error_floor_pts:g} points): a "
                              f"smaller change is no detectable change even when its interval excludes zero. "
                              f"Intervals: {100 * s.confidence:g}% block bootstrap over consecutive traces, "
                              f"{s.resamples} resamples. \"where\": the part of the critical path that moved most "
                              "(mean ms per request) and the statement or call behind it.")]
    for r in found:
        unit = " pts" if r.metric == "errors" else "%"
        gate = "the error floor" if r.metric == "errors" and s.metric != "errors" else "--fail-on-regression"
        blocks.append(Paragraph(f"Regression: {r.name} {r.metric} {r.change_pct:+.1f}{unit} exceeds {gate} "
                                f"{r.threshold_pct:g}", "bad"))
    if threshold is not None and not found:
        blocks.append(Paragraph(f"No regression beyond {threshold:g} on {label}.", "good"))
    blocks += [Paragraph(w, "warning") for w in c.warnings]
    blocks += [Paragraph(n, "info") for n in c.notes]
    if c.only_before or c.only_after:
        blocks.append(KeyValues((("only before", ", ".join(c.only_before) or "none"),
                                 ("only after", ", ".join(c.only_after) or "none"))))
    sections = [Section("Verdicts", tuple(blocks)),
                Section("Endpoints", (), tuple(endpoint_section(e, s.confidence, c.sampled) for e in c.endpoints))]
    return Document(f"Traces compared: {c.before.text} → {c.after.text}", tuple(sections),
                    meta=(("before", f"{c.before.text} ({_counted(c.traces_before, c.instances_before)})"),
                          ("after", f"{c.after.text} ({_counted(c.traces_after, c.instances_after)})"),
                          ("metric", label), ("noise floor", f"{s.noise_floor_pct:g}%")))


def endpoint_section(e, confidence: float, sampled: bool = False) -> Section:
    comparison, w = e.comparison, e.where
    rows = []
    for m in stats.LATENCY_METRICS:
        ch = comparison.changes[m]
        rows.append([m, ch.before, ch.after, _change_text(ch), ch.min_detectable_pct, ch.verdict])
    err = comparison.changes["errors"]
    rows.append(["error rate (%)", 100 * comparison.before.error_rate, 100 * comparison.after.error_rate,
                 _change_text(err, " pts"), err.min_detectable_pct, err.verdict])
    blocks: list = [Table.of(["metric", "before", "after", f"change [{100 * confidence:g}% CI]", "min detectable",
                              "verdict"], rows, right=("before", "after", "min detectable"))]
    if w.cause:
        blocks.append(Paragraph(f"Where: {w.cause}", "bad" if comparison.verdict == stats.SLOWER else "info"))
    if sampled:
        blocks.append(Paragraph(f"Where rests on a random sample of whole traces: {e.where_traces[0]:,} of "
                                f"{comparison.before.requests:,} before, {e.where_traces[1]:,} of "
                                f"{comparison.after.requests:,} after; the verdicts on every request.", "info"))
    notes = sorted({ch.note for ch in comparison.changes.values() if ch.note})
    blocks += [Paragraph(note, "warning") for note in notes]
    shares = tuple((side, tuple((k, round(v * 100, 1)) for k, v in values.items()))
                   for side, values in (("before", w.shares_before), ("after", w.shares_after)) if values)
    if shares:
        blocks.append(StackedBars("Share of critical-path time (services' own code, SQL, outbound HTTP)", shares))
    if w.path:
        blocks.append(Table.of(["service", "part", "ms/request before", "ms/request after", "change ms",
                                "share of change"],
                               [[p.service, p.category, p.ms_before, p.ms_after, f"{p.change_ms:+.2f}",
                                 None if p.share_of_change is None else f"{100 * p.share_of_change:.0f}%"]
                                for p in w.path[:8]], title="Critical path per request (mean)",
                               right=("change ms", "share of change")))
    for title, items in (("Statements whose time per request changed most", w.statements),
                         ("Calls whose time per request changed most", w.calls)):
        if items:
            blocks.append(Table.of(["service", "what", "per request before", "per request after", "ms before",
                                    "ms after", "change ms"],
                                   [[i.service, i.text, i.calls_before, i.calls_after, i.ms_before, i.ms_after,
                                     f"{i.change_ms:+.2f}"] for i in items], title=title, right=("change ms",)))
    blocks.append(Distribution(f"Latency distribution of {comparison.name}",
                               (("before", comparison.latencies_before), ("after", comparison.latencies_after))))
    return Section(comparison.name, tuple(blocks))

