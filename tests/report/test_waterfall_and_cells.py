"""Waterfalls fold runs of similar spans (text and HTML, the text one capped); figures never wrap in HTML cells."""

from __future__ import annotations

import re

from takealook.report.model import Document, Section, Table, Waterfall, WaterfallSpan, fold_runs
from takealook.report.render import WATERFALL_TEXT_ROWS, render


def _n_plus_one(count: int = 150) -> list[WaterfallSpan]:
    spans = [WaterfallSpan("GET /orders/<id>", "orders", 0.0, 400.0, 0),
             WaterfallSpan("SELECT * FROM orders WHERE id = %s", "orders", 1.0, 2.0, 1)]
    start = 4.0
    for i in range(count):
        duration = 0.3 + (9.6 * i / (count - 1))
        spans.append(WaterfallSpan("SELECT count(*) FROM lines WHERE order_id = %s", "orders", start, duration, 1))
        start += duration + 0.1
    spans += [WaterfallSpan("GET http://stock/stock/SKU1", "orders", start, 5.0, 1),
              WaterfallSpan("GET /stock/<sku>", "stock", start + 1, 3.0, 2),
              WaterfallSpan("GET http://stock/stock/SKU2", "orders", start + 6, 5.0, 1),
              WaterfallSpan("GET /stock/<sku>", "stock", start + 7, 3.0, 2)]
    return spans


def test_a_run_of_similar_spans_is_one_row():
    folded = fold_runs(_n_plus_one())
    assert len(folded) == 7
    run = folded[2]
    assert run.count == 150 and run.label == "150 × SELECT count(*) FROM lines WHERE order_id = %s"
    assert round(run.min_ms, 1) == 0.3 and round(run.max_ms, 1) == 9.9 and run.start_ms == 4.0
    assert run.start_ms + run.duration_ms > 150 * 0.3
    # Calls with children are drawn with them, even when they look alike; two in a row are not a run.
    assert [s.count for s in folded[3:]] == [1, 1, 1, 1]
    assert fold_runs(_n_plus_one(2))[2].count == 1


def test_labels_that_differ_by_numbers_fold_and_errors_show():
    spans = [WaterfallSpan(f"GET http://stock/stock/SKU{i}", "gateway", i * 10.0, 8.0, 1, error=(i == 2))
             for i in range(5)]
    (row,) = fold_runs(spans)
    assert row.count == 5 and row.error and row.label.startswith("5 × GET http://stock/stock/SKU0")


def test_text_and_html_show_the_folded_run_and_the_text_is_capped():
    many = [WaterfallSpan(f"step {chr(65 + i % 26)}{i // 26}", "app", float(i), 1.0, 0) for i in range(3 * 26)]
    doc = Document("t", (Section("s", (Waterfall.of("n+1", _n_plus_one()), Waterfall.of("long", many))),))
    text = render(doc, "text")
    assert "150 × SELECT count(*) FROM lines" in text and "0.30–9.90 ms" in text
    assert text.count("SELECT count(*)") == 1
    assert f"… {3 * 26 - WATERFALL_TEXT_ROWS} more rows" in text
    html = render(doc, "html")
    assert "150 × SELECT count(*) FROM lines" in html and "0.30–9.90 ms" in html
    assert html.count("SELECT count(*) FROM lines") == 2  # the label and its tooltip, once


def test_figures_never_wrap_in_html_cells():
    table = Table.of(("finding", "where", "cost", "share"),
                     [("a long description that may wrap", "GET /orders/<id>", "≈ 22,005 ms/min", "0.3–9.9 ms"),
                      ("another", "GET /", "38,144 ms/min", "-79%")])
    html = render(Document("t", (Section("s", (table,)),)), "html")
    cells = re.findall(r'<td class="([a-z]*)">([^<]*)</td>', html)
    classes = {value: cls for cls, value in cells}
    assert classes["≈ 22,005 ms/min"] == "n" and classes["0.3–9.9 ms"] == "n" and classes["-79%"] == "n"
    assert classes["a long description that may wrap"] == "" and classes["GET /orders/&lt;id&gt;"] == ""
    assert "td.r,td.n,th.r{white-space:nowrap" in html
