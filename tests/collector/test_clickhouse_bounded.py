"""Windows of billions of spans on ClickHouse: grouping by trace in bounded memory, the same figures.

Counting a window's traces, their load runs and listing them group the spans by ``TraceId``: a row per trace
while the query runs. ``clickhouse_read.bounded`` lets the engine spill that grouping (and the sort) to disk.
Here a table of 400,000 traces is counted under a memory cap it does not fit in without spilling, and the
figures are those of the unbounded query; the small tables of the other tests give the same figures both ways.
"""

from __future__ import annotations

import pytest

from takealook.collector import clickhouse_read, open_store, parse_store
from takealook.collector.clickhouse import connect
from takealook.collector.clickhouse_write import CREATE_TABLE
from takealook.errors import InputError
from tests.collector.test_clickhouse import BASE_NS, EXPORTER_LAYOUT, _exported_rows, _table

TRACES = 400_000
CAP = {"max_memory_usage": 40_000_000, "max_threads": 1}  # 40 MB: a hash table of 400,000 trace ids is more


def _big_table(folder) -> object:
    """4 spans a trace (a root, three children), one trace in 50 a load test's (two runs), 1 ms apart."""
    url = parse_store(f"chdb:{folder}")
    engine = connect(url, create=True)
    try:
        engine.command(f"CREATE DATABASE IF NOT EXISTS {url.database}")
        engine.command(CREATE_TABLE.format(table=url.qualified))
        engine.command(
            f"INSERT INTO {url.qualified} (Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, "
            "ServiceName, Duration, StatusCode) SELECT "
            f"fromUnixTimestamp64Nano(toInt64({BASE_NS} + intDiv(number, 4) * 1000000 + (number % 4) * 1000)), "
            "lower(hex(MD5(toString(intDiv(number, 4))))), lower(hex(number + 1)), "
            "if(number % 4 = 0, '', lower(hex(number - number % 4 + 1))), "
            "if(intDiv(number, 4) % 50 = 7, concat('takealook=load:run-', toString(intDiv(number, 200) % 2)), ''), "
            "if(number % 4 = 0, 'GET /', 'SELECT'), if(number % 4 = 0, 'Server', 'Client'), 'app', 1000000, 'Unset' "
            f"FROM numbers({4 * TRACES})")
    finally:
        engine.close()
    return url


def _figures(store, windows) -> list:
    out = []
    for since, until in windows:
        out.append([store.count_traces(since, until, load=load) for load in (True, False, "run-0", "run-1")])
        out.append(store.load_runs(since, until))
    return out


def test_counting_the_traces_of_a_large_window_spills_instead_of_growing(tmp_path, monkeypatch):
    url = _big_table(tmp_path / "ch")
    windows = [(None, None), (BASE_NS + 10**9, BASE_NS + 300 * 10**9)]
    with open_store(url) as store:
        figures = _figures(store, windows)
        assert figures[0] == [TRACES, TRACES - TRACES // 50, TRACES // 100, TRACES // 100]
        assert figures[1] == {"run-0": TRACES // 100, "run-1": TRACES // 100}
        assert figures[2][0] == 299_000  # traces by their first span: [1 s, 300 s) of one a millisecond
        # Under the cap, the grouping without spilling fails: the cap is real, the table does not fit in it.
        monkeypatch.setattr(clickhouse_read, "SPILL", {**CAP, "max_bytes_before_external_group_by": 0,
                                                       "max_bytes_before_external_sort": 0})
        with pytest.raises(InputError, match="(?i)memory"):
            store.count_traces()
        # Spilling past 4 MB: the same figures under the cap.
        monkeypatch.setattr(clickhouse_read, "SPILL", {**CAP, "max_bytes_before_external_group_by": 4_000_000,
                                                       "max_bytes_before_external_sort": 4_000_000})
        assert _figures(store, windows) == figures


def test_the_small_tables_give_the_same_figures_spilled_or_not(tmp_path, monkeypatch):
    url = _table(tmp_path / "ch", EXPORTER_LAYOUT, _exported_rows())
    with open_store(url) as store:
        windows = [(None, None), (BASE_NS + 10**9, BASE_NS + 4 * 10**9)]
        figures = _figures(store, windows)
        listed = [[s.span_id for s in t] for t in store.iter_traces(load=True)]
        assert figures[0] == [6, 5, 0, 0] and figures[1] == {"before": 1} and len(listed) == 6
        monkeypatch.setattr(clickhouse_read, "SPILL", {"max_bytes_before_external_group_by": 1,
                                                       "max_bytes_before_external_sort": 1})
        assert _figures(store, windows) == figures
        assert [[s.span_id for s in t] for t in store.iter_traces(load=True)] == listed


def test_root_spans_come_a_page_at_a_time_in_the_same_order(tmp_path, monkeypatch):
    url = _table(tmp_path / "ch", EXPORTER_LAYOUT, _exported_rows())
    with open_store(url) as store:
        whole = [(s.trace_id, s.span_id, s.start_ns) for s in store.root_spans()]
        monkeypatch.setattr(clickhouse_read, "ROOT_PAGE", 2)
        assert [(s.trace_id, s.span_id, s.start_ns) for s in store.root_spans()] == whole
        assert [s.span_id for s in store.root_spans(load=False)] == [w[1] for w in whole[:5]]
    assert len(whole) == 6 and [w[2] for w in whole] == sorted(w[2] for w in whole)
