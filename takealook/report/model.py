"""A small document model every renderer understands.

A ``Document`` is a title and sections; a section holds blocks: paragraphs,
tables, key/value lists, code, and charts. Charts are data (bars, a waterfall,
distributions); the HTML renderer draws them as inline SVG and the text
renderer as bars of characters, so no renderer needs the network.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class Waterfall:
    title: str
    spans: Sequence[WaterfallSpan]


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
