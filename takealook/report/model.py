"""A small document model every renderer understands.

A ``Document`` is a title and sections; a section holds blocks: paragraphs,
tables, key/value lists, code, and charts. Charts are data (bars, a waterfall,
distributions); the HTML renderer draws them as inline SVG and the text
renderer as bars of characters, so no renderer needs the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence, Union


@dataclass(frozen=True)
class Paragraph:
    text: str
    tone: str = "info"  # info | good | warning | bad


@dataclass(frozen=True)
class Column:
    name: str
    align: str = "left"  # left | right


@dataclass(frozen=True)
class Table:
    columns: Sequence[Column]
    rows: Sequence[Sequence[Any]]
    title: str = ""

    @staticmethod
    def of(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "", right: Sequence[str] = ()) -> "Table":
        """A table whose columns named in ``right`` (and numeric ones) align right."""
        numeric = set(right)
        for index, name in enumerate(headers):
            if rows and all(isinstance(row[index], (int, float)) and not isinstance(row[index], bool) for row in rows):
                numeric.add(name)
        columns = tuple(Column(name, "right" if name in numeric else "left") for name in headers)
        return Table(columns, tuple(tuple(row) for row in rows), title)


@dataclass(frozen=True)
class KeyValues:
    items: Sequence[tuple[str, Any]]


@dataclass(frozen=True)
class Code:
    text: str
    language: str = "sql"


@dataclass(frozen=True)
class Bars:
    """Horizontal bars: one value per label (``unit`` is appended to values)."""

    title: str
    items: Sequence[tuple[str, float]]
    unit: str = ""


@dataclass(frozen=True)
class StackedBars:
    """One bar per row, split in segments that add up to the row's total (shares of time)."""

    title: str
    rows: Sequence[tuple[str, Sequence[tuple[str, float]]]]
    unit: str = "%"


@dataclass(frozen=True)
class WaterfallSpan:
    label: str
    group: str  # the service; spans of one group share a colour
    start_ms: float
    duration_ms: float
    depth: int
    error: bool = False
    count: int = 1  # > 1: a run of similar spans drawn as one row, from the first's start to the last's end
    min_ms: float | None = None  # the shortest and longest span of the run
    max_ms: float | None = None


@dataclass(frozen=True)
class Waterfall:
    title: str
    spans: Sequence[WaterfallSpan]

    @staticmethod
    def of(title: str, spans: Sequence[WaterfallSpan]) -> "Waterfall":
        """A waterfall whose runs of similar spans are folded (``fold_runs``)."""
        return Waterfall(title, fold_runs(spans))


FOLD_MIN_RUN = 3
_DIGITS = re.compile(r"\d+")


def fold_runs(spans: Sequence[WaterfallSpan], min_run: int = FOLD_MIN_RUN) -> tuple[WaterfallSpan, ...]:
    """Runs of ``min_run`` or more similar sibling spans as one row each: "150 × SELECT ...".

    Spans are in depth-first order; similar means the same depth, service and label up to its
    numbers (``/stock/SKU1`` and ``/stock/SKU2``), with no children (a span with children is
    drawn with them). An N+1 of 150 statements is one row, not 150.
    """
    out: list[WaterfallSpan] = []
    i = 0
    while i < len(spans):
        j = i + 1
        while j < len(spans) and _similar(spans[i], spans[j]) and _leaf(spans, j - 1) and _leaf(spans, j):
            j += 1
        if j - i >= min_run and _leaf(spans, i):
            out.append(_folded(spans[i:j]))
            i = j
        else:
            out.append(spans[i])
            i += 1
    return tuple(out)


def _similar(a: WaterfallSpan, b: WaterfallSpan) -> bool:
    return (a.depth, a.group, _DIGITS.sub("#", a.label)) == (b.depth, b.group, _DIGITS.sub("#", b.label))


def _leaf(spans: Sequence[WaterfallSpan], i: int) -> bool:
    return i + 1 >= len(spans) or spans[i + 1].depth <= spans[i].depth


def _folded(run: Sequence[WaterfallSpan]) -> WaterfallSpan:
    first = run[0]
    end = max(s.start_ms + s.duration_ms for s in run)
    label = first.label if len(run) == 1 else f"{len(run)} × {first.label}"
    return WaterfallSpan(label, first.group, first.start_ms, end - first.start_ms, first.depth,
                         any(s.error for s in run), len(run), min(s.duration_ms for s in run),
                         max(s.duration_ms for s in run))


@dataclass(frozen=True)
class Distribution:
    """Latency distributions to compare (before/after): each series is raw values."""

    title: str
    series: Sequence[tuple[str, Sequence[float]]]
    unit: str = "ms"


Block = Union[Paragraph, Table, KeyValues, Code, Bars, StackedBars, Waterfall, Distribution]


@dataclass(frozen=True)
class Section:
    title: str
    blocks: Sequence[Block] = ()
    subsections: Sequence["Section"] = ()


@dataclass(frozen=True)
class Document:
    title: str
    sections: Sequence[Section] = ()
    subtitle: str = ""
    meta: Sequence[tuple[str, Any]] = field(default_factory=tuple)
