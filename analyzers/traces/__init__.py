"""Trace analyses: where a user's request spends its time, across apps and down to SQL.

One module per question, each a pure function over the spans of a trace plus an
aggregator that adds traces up; ``analysis.analyze`` runs them all in one pass:

- ``endpoints``: entry endpoints as users feel them (RED, percentiles), services
- ``critical_path``: where the waited-for time goes, per service, SQL, HTTP, own code
- ``n_plus_one``: N+1 statements and repeated outbound calls (parallel fan-out excluded)
- ``sequential``: back-to-back calls that could run in parallel, and the saving
- ``public_calls``: own services calling each other over public addresses
- ``slow_statements`` (``takealook.analyzers.join`` joins them to pg_stat_statements and the index advice)
- ``failures``: failing endpoints, exception types and messages
- ``health``: orphan spans, services without DB spans, clock skew, broken traces
- ``source``: reading a store through ``takealook.collector``'s read API

Thresholds live in ``settings.Settings``; results are frozen dataclasses.
"""

from takealook.analyzers.traces.analysis import TraceAnalysis, TraceReport, analyze
from takealook.analyzers.traces.settings import Settings, Window

__all__ = ["Settings", "TraceAnalysis", "TraceReport", "Window", "analyze"]
