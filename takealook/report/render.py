"""Render a ``Document`` as text, Markdown or self-contained HTML; JSON from plain objects."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import html
import json
import math
import re
from pathlib import PurePath
from typing import Any

from takealook.report import svg
from takealook.report.model import (
    Bars,
    Code,
    Distribution,
    Document,
    KeyValues,
    Paragraph,
    Section,
    StackedBars,
    Table,
    Waterfall,
)


def render(document: Document, fmt: str, color: bool = False) -> str:
    if fmt == "text":
        return _Text(color).document(document)
    if fmt == "md":
        return _Markdown().document(document)
    if fmt == "html":
        return _Html().document(document)
    raise ValueError(f"unknown format {fmt!r}")


# --------------------------------------------------------------------------- values


def fmt_value(value: Any) -> str:
    """How a cell reads: floats with 3 significant figures past 100, '—' for nothing."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 0.01:
            return f"{value:.2f}"
        return f"{value:.2g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def span_figure(span) -> str:
    """A waterfall row's figure: "12.3 ms", or for a folded run "0.3–9.9 ms" (its shortest and longest)."""
    if span.count > 1 and span.min_ms is not None and span.max_ms is not None:
        return f"{fmt_value(float(span.min_ms))}–{fmt_value(float(span.max_ms))} ms"
    return f"{fmt_value(float(span.duration_ms))} ms"


# --------------------------------------------------------------------------- json


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(obj: dict) -> str:
    """JSON text of a contract object; ``schema_version`` is put first."""
    plain = _plain(obj)
    if isinstance(plain, dict) and "schema_version" in plain:
        plain = {"schema_version": plain.pop("schema_version"), **plain}
    return json.dumps(plain, indent=2, ensure_ascii=False, allow_nan=False)


# --------------------------------------------------------------------------- text

_TONE_COLORS = {"good": "32", "warning": "33", "bad": "31", "info": "0"}
WATERFALL_TEXT_ROWS = 40  # a terminal shows the top of a trace; the HTML page draws every row


class _Text:
    def __init__(self, color: bool):
        self.color = color

    def _c(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color and code != "0" else text

    def document(self, doc: Document) -> str:
        out = [self._c("1", doc.title)]
        if doc.subtitle:
            out.append(doc.subtitle)
        for key, value in doc.meta:
            out.append(f"{key}: {fmt_value(value)}")
        for section in doc.sections:
            out.append("")
            out.extend(self.section(section, 1))
        return "\n".join(out).rstrip() + "\n"

    def section(self, section: Section, level: int) -> list[str]:
        rule = "=" if level == 1 else "-"
        out = [self._c("1", section.title), rule * min(len(section.title), 78)]
        for block in section.blocks:
            out.extend(self.block(block))
            out.append("")
        for sub in section.subsections:
            out.extend(self.section(sub, level + 1))
        return out

    def block(self, block) -> list[str]:
        if isinstance(block, Paragraph):
            return [self._c(_TONE_COLORS.get(block.tone, "0"), block.text)]
        if isinstance(block, Table):
            return self.table(block)
        if isinstance(block, KeyValues):
            width = max((len(k) for k, _ in block.items), default=0)
            return [f"{k.ljust(width)}  {fmt_value(v)}" for k, v in block.items]
        if isinstance(block, Code):
            return ["    " + line for line in block.text.splitlines()]
        if isinstance(block, Bars):
            return self.bars(block.title, [(label, value, block.unit) for label, value in block.items])
        if isinstance(block, StackedBars):
            lines = [block.title] if block.title else []
            for label, parts in block.rows:
                lines.append(f"{label}: " + ", ".join(f"{name} {fmt_value(v)}{block.unit}" for name, v in parts))
            return lines
        if isinstance(block, Waterfall):
            return self.waterfall(block)
        if isinstance(block, Distribution):
            lines = [block.title] if block.title else []
            for name, values in block.series:
                ordered = sorted(values)
                if not ordered:
                    continue
                p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
                lines.append(f"{name}: n={len(ordered)} p50={fmt_value(p(.5))}{block.unit} "
                             f"p95={fmt_value(p(.95))}{block.unit} p99={fmt_value(p(.99))}{block.unit}")
            return lines
        raise TypeError(f"cannot render {type(block).__name__}")

    def table(self, table: Table) -> list[str]:
        cells = [[fmt_value(v) for v in row] for row in table.rows]
        widths = [len(c.name) for c in table.columns]
        for row in cells:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(cell))
        widths = [min(w, 60) for w in widths]

        def line(values, bold=False):
            parts = []
            for i, (col, value) in enumerate(zip(table.columns, values)):
                value = value if len(value) <= widths[i] else value[: widths[i] - 1] + "…"
                parts.append(value.rjust(widths[i]) if col.align == "right" else value.ljust(widths[i]))
            text = "  ".join(parts).rstrip()
            return self._c("1", text) if bold else text

        out = [table.title] if table.title else []
        out.append(line([c.name for c in table.columns], bold=True))
        out.extend(line(row) for row in cells)
        if not cells:
            out.append("(none)")
        return out

    def bars(self, title: str, items: list[tuple[str, float, str]]) -> list[str]:
        out = [title] if title else []
        top = max((v for _, v, _ in items), default=0) or 1
        width = max((len(label) for label, _, _ in items), default=0)
        for label, value, unit in items:
            out.append(f"{label.ljust(width)}  {'█' * max(1, round(30 * value / top))} {fmt_value(value)}{unit}")
        return out

    def waterfall(self, chart: Waterfall) -> list[str]:
        out = [chart.title] if chart.title else []
        end = max((s.start_ms + s.duration_ms for s in chart.spans), default=0) or 1
        for s in chart.spans[:WATERFALL_TEXT_ROWS]:
            lead = round(40 * s.start_ms / end)
            size = max(1, round(40 * s.duration_ms / end))
            label = ("  " * s.depth + s.label)
            label = (label if len(label) <= 40 else label[:39] + "…").ljust(40)
            out.append(f"{label} {' ' * lead}{'▇' * size} {span_figure(s)}")
        if len(chart.spans) > WATERFALL_TEXT_ROWS:
            out.append(f"… {len(chart.spans) - WATERFALL_TEXT_ROWS} more rows (the HTML report draws them all)")
        return out


# --------------------------------------------------------------------------- markdown


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


class _Markdown:
    def document(self, doc: Document) -> str:
        out = [f"# {doc.title}", ""]
        if doc.subtitle:
            out += [doc.subtitle, ""]
        for key, value in doc.meta:
            out.append(f"- **{key}**: {fmt_value(value)}")
        if doc.meta:
            out.append("")
        for section in doc.sections:
            out.extend(self.section(section, 2))
        return "\n".join(out).rstrip() + "\n"

    def section(self, section: Section, level: int) -> list[str]:
        out = ["#" * level + " " + section.title, ""]
        for block in section.blocks:
            out.extend(self.block(block))
            out.append("")
        for sub in section.subsections:
            out.extend(self.section(sub, min(level + 1, 6)))
        return out

    def block(self, block) -> list[str]:
        if isinstance(block, Paragraph):
            prefix = {"warning": "**Warning:** ", "bad": "**Problem:** "}.get(block.tone, "")
            return [prefix + block.text]
        if isinstance(block, Table):
            out = [f"**{block.title}**", ""] if block.title else []
            out.append("| " + " | ".join(_md_escape(c.name) for c in block.columns) + " |")
            out.append("|" + "|".join("---:" if c.align == "right" else "---" for c in block.columns) + "|")
            for row in block.rows:
                out.append("| " + " | ".join(_md_escape(fmt_value(v)) for v in row) + " |")
            return out
        if isinstance(block, KeyValues):
            return [f"- **{k}**: {fmt_value(v)}" for k, v in block.items]
        if isinstance(block, Code):
            return [f"```{block.language}", block.text, "```"]
        # Charts: Markdown has none; the text rendering in a code block reads well.
        return ["```"] + _Text(False).block(block) + ["```"]


# --------------------------------------------------------------------------- html

_CSS = """
:root{--fg:#1d2330;--muted:#5b6577;--line:#d9dee7;--bg:#fff;--soft:#f4f6f9;--good:#1a7f37;--warn:#9a6700;--bad:#c62828;}
*{box-sizing:border-box}body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg);margin:0 auto;max-width:1180px;padding:24px 28px 64px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:36px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:16px;margin:24px 0 8px}h4{font-size:15px;margin:18px 0 6px}.subtitle{color:var(--muted);margin:0 0 12px}
table{border-collapse:collapse;width:100%;margin:8px 0 14px;font-size:13.5px}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600;position:sticky;top:0}td.r,th.r{text-align:right;font-variant-numeric:tabular-nums}
td{max-width:520px;overflow-wrap:anywhere}td.r,td.n,th.r{white-space:nowrap;overflow-wrap:normal}.caption{font-weight:600;margin:10px 0 2px}
pre{background:var(--soft);padding:10px 12px;border-radius:6px;overflow-x:auto;font-size:13px;white-space:pre-wrap}
p.good{color:var(--good)}p.warning{color:var(--warn)}p.bad{color:var(--bad);font-weight:600}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0}dt{color:var(--muted)}dd{margin:0}
.chart{margin:10px 0 18px}.chart svg{max-width:100%;height:auto}.meta{color:var(--muted);font-size:13px}
"""


# A figure as a cell shows it: "38,144", "-79%", "≈ 22,005 ms/min", "0.3–9.9 ms", "[+1.2%, +3.4%]".
_FIGURE = re.compile(r"^[\[(≈~<>+\-−]*\s?[\d.,]+(?:\s?[%–\-−,+\d. ]*)*(?:\s?[a-zA-Z/%\]).]{0,12})?$")


def _cell_class(column, value) -> str:
    """``r`` for right-aligned columns; ``n`` for a figure elsewhere: neither ever wraps."""
    if column.align == "right":
        return "r"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "n"
    return "n" if isinstance(value, str) and len(value) <= 32 and _FIGURE.match(value.strip()) else ""


class _Html:
    def __init__(self):
        self._chart_index = 0

    def document(self, doc: Document) -> str:
        body = [f"<h1>{html.escape(doc.title)}</h1>"]
        if doc.subtitle:
            body.append(f'<p class="subtitle">{html.escape(doc.subtitle)}</p>')
        if doc.meta:
            body.append('<p class="meta">' + " · ".join(
                f"{html.escape(k)}: {html.escape(fmt_value(v))}" for k, v in doc.meta) + "</p>")
        for section in doc.sections:
            body.extend(self.section(section, 2))
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(doc.title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body)
            + "\n</body></html>\n"
        )

    def section(self, section: Section, level: int) -> list[str]:
        out = [f"<section><h{level}>{html.escape(section.title)}</h{level}>"]
        for block in section.blocks:
            out.append(self.block(block))
        for sub in section.subsections:
            out.extend(self.section(sub, min(level + 1, 6)))
        out.append("</section>")
        return out

    def block(self, block) -> str:
        if isinstance(block, Paragraph):
            return f'<p class="{html.escape(block.tone)}">{html.escape(block.text)}</p>'
        if isinstance(block, Table):
            return self.table(block)
        if isinstance(block, KeyValues):
            return "<dl>" + "".join(
                f"<dt>{html.escape(k)}</dt><dd>{html.escape(fmt_value(v))}</dd>" for k, v in block.items) + "</dl>"
        if isinstance(block, Code):
            return f'<pre class="{html.escape(block.language)}">{html.escape(block.text)}</pre>'
        self._chart_index += 1
        if isinstance(block, Bars):
            drawing = svg.bars(block)
        elif isinstance(block, StackedBars):
            drawing = svg.stacked_bars(block)
        elif isinstance(block, Waterfall):
            drawing = svg.waterfall(block)
        elif isinstance(block, Distribution):
            drawing = svg.distribution(block)
        else:
            raise TypeError(f"cannot render {type(block).__name__}")
        return f'<figure class="chart" id="chart-{self._chart_index}">{drawing}</figure>'

    def table(self, table: Table) -> str:
        out = [f'<div class="caption">{html.escape(table.title)}</div>'] if table.title else []
        out.append("<table><thead><tr>")
        out.extend(f'<th class="{"r" if c.align == "right" else ""}">{html.escape(c.name)}</th>' for c in table.columns)
        out.append("</tr></thead><tbody>")
        for row in table.rows:
            out.append("<tr>" + "".join(
                f'<td class="{_cell_class(c, v)}">{html.escape(fmt_value(v))}</td>'
                for c, v in zip(table.columns, row)) + "</tr>")
        out.append("</tbody></table>")
        return "".join(out)
