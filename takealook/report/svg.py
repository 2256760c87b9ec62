"""Charts as inline SVG: no script, no network, readable when printed."""

from __future__ import annotations

import html
import math

from takealook.report.model import Bars, Distribution, StackedBars, Waterfall

PALETTE = ("#3b6fd8", "#e07b39", "#2e9e6a", "#a25ad9", "#d64a6a", "#1f9bb4", "#b59a1c", "#6d7a8c")
WIDTH = 960


def _e(text) -> str:
    return html.escape(str(text))


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _svg(height: int, title: str, parts: list[str]) -> str:
    head = f'<text x="0" y="16" font-size="14" font-weight="600" fill="#1d2330">{_e(title)}</text>' if title else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
            f'height="{height}" role="img" aria-label="{_e(title)}" font-family="system-ui,sans-serif">'
            f"{head}{''.join(parts)}</svg>")


def colors_for(names) -> dict[str, str]:
    result: dict[str, str] = {}
    for name in names:
        if name not in result:
            result[name] = PALETTE[len(result) % len(PALETTE)]
    return result


def bars(chart: Bars) -> str:
    label_w, top, row = 260, 28 if chart.title else 4, 24
    peak = max((v for _, v in chart.items), default=0) or 1
    parts = []
    for i, (label, value) in enumerate(chart.items):
        y = top + i * row
        w = max(1.0, (WIDTH - label_w - 90) * value / peak)
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" font-size="12" text-anchor="end">{_e(label[:40])}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="16" fill="{PALETTE[0]}"/>'
                     f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" font-size="12">{_num(value)}{_e(chart.unit)}</text>')
    return _svg(top + row * len(chart.items) + 6, chart.title, parts)


def stacked_bars(chart: StackedBars) -> str:
    label_w, top, row = 260, 28 if chart.title else 4, 26
    colors = colors_for(name for _, segs in chart.rows for name, _ in segs)
    span = WIDTH - label_w - 20
    parts = []
    for i, (label, segments) in enumerate(chart.rows):
        y = top + i * row
        total = sum(v for _, v in segments) or 1
        x = float(label_w)
        parts.append(f'<text x="{label_w - 8}" y="{y + 16}" font-size="12" text-anchor="end">{_e(label[:40])}</text>')
        for name, value in segments:
            w = span * value / total
            if w <= 0:
                continue
            parts.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="18" fill="{colors[name]}">'
                         f"<title>{_e(name)}: {_num(value)}{_e(chart.unit)}</title></rect>")
            if w > 60:
                parts.append(f'<text x="{x + 4:.1f}" y="{y + 16}" font-size="11" fill="#fff">'
                             f"{_e(name[:14])} {_num(value)}{_e(chart.unit)}</text>")
            x += w
    y = top + row * len(chart.rows) + 8
    parts.extend(_legend(colors, label_w, y))
    return _svg(y + 22, chart.title, parts)


def _legend(colors: dict[str, str], x0: int, y: int) -> list[str]:
    parts, x = [], x0
    for name, color in colors.items():
        parts.append(f'<rect x="{x}" y="{y}" width="12" height="12" fill="{color}"/>'
                     f'<text x="{x + 16}" y="{y + 11}" font-size="12">{_e(name)}</text>')
        x += 28 + 7 * len(name)
    return parts


def waterfall(chart: Waterfall) -> str:
    label_w, top, row = 330, 28 if chart.title else 4, 20
    end = max((s.start_ms + s.duration_ms for s in chart.spans), default=0) or 1
    span = WIDTH - label_w - 80
    colors = colors_for(s.group for s in chart.spans)
    parts = []
    for i, s in enumerate(chart.spans):
        y = top + i * row
        x = label_w + span * s.start_ms / end
        w = max(1.5, span * s.duration_ms / end)
        label = s.label if len(s.label) <= 46 - 2 * s.depth else s.label[: 45 - 2 * s.depth] + "…"
        stroke = ' stroke="#c62828" stroke-width="2"' if s.error else ""
        parts.append(f'<text x="{4 + 10 * s.depth}" y="{y + 14}" font-size="11.5">{_e(label)}</text>'
                     f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="14" fill="{colors[s.group]}"{stroke}>'
                     f"<title>{_e(s.group)}: {_e(s.label)} — {_e(_figure(s))} at +{_num(s.start_ms)} ms</title></rect>"
                     f'<text x="{x + w + 4:.1f}" y="{y + 14}" font-size="11">{_e(_figure(s))}</text>')
    y = top + row * len(chart.spans) + 8
    parts.extend(_legend(colors, 4, y))
    return _svg(y + 22, chart.title, parts)


def _figure(span) -> str:
    if span.count > 1 and span.min_ms is not None and span.max_ms is not None:
        return f"{_num(span.min_ms)}–{_num(span.max_ms)} ms"
    return f"{_num(span.duration_ms)} ms"


def distribution(chart: Distribution) -> str:
    """Overlaid histograms on a log-scaled latency axis (latencies are skewed)."""
    series = [(name, [v for v in values if v > 0]) for name, values in chart.series]
    series = [(name, values) for name, values in series if values]
    top, height, left = 28 if chart.title else 4, 170, 50
    if not series:
        return _svg(top + 20, chart.title, ['<text x="0" y="40" font-size="12">no samples</text>'])
    low = min(min(v) for _, v in series)
    high = max(max(v) for _, v in series)
    lo, hi = math.log10(low), math.log10(high) if high > low else math.log10(low) + 1
    bins = 48
    colors = colors_for(name for name, _ in series)
    span = WIDTH - left - 20
    parts = []
    peak = 0.0
    shapes = []
    for name, values in series:
        counts = [0] * bins
        for v in values:
            k = min(bins - 1, int((math.log10(v) - lo) / (hi - lo) * bins))
            counts[k] += 1
        shares = [c / len(values) for c in counts]
        peak = max(peak, max(shares))
        shapes.append((name, shares))
    for name, shares in shapes:
        points = [f"{left},{top + height}"]
        for k, share in enumerate(shares):
            x0, x1 = left + span * k / bins, left + span * (k + 1) / bins
            y = top + height - height * share / (peak or 1)
            points += [f"{x0:.1f},{y:.1f}", f"{x1:.1f},{y:.1f}"]
        points.append(f"{left + span},{top + height}")
        parts.append(f'<polygon points="{" ".join(points)}" fill="{colors[name]}" fill-opacity="0.35" '
                     f'stroke="{colors[name]}" stroke-width="1.5"/>')
    for k in range(6):
        value = 10 ** (lo + (hi - lo) * k / 5)
        x = left + span * k / 5
        parts.append(f'<line x1="{x:.1f}" y1="{top + height}" x2="{x:.1f}" y2="{top + height + 4}" stroke="#5b6577"/>'
                     f'<text x="{x:.1f}" y="{top + height + 16}" font-size="11" text-anchor="middle">'
                     f"{_num(value)}{_e(chart.unit)}</text>")
    parts.append(f'<line x1="{left}" y1="{top + height}" x2="{left + span}" y2="{top + height}" stroke="#5b6577"/>')
    parts.extend(_legend(colors, left, top + height + 26))
    return _svg(top + height + 48, chart.title, parts)
