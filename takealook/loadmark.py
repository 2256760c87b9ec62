"""The mark load-test traffic carries: a W3C ``tracestate`` entry ``takealook=load:<run label>``.

Shared by the load tests (which send it) and the collector (which stores the
run label per trace), like ``sqltext.py``; standard library only. The agent
carries ``tracestate`` from the request to every span under it and to every
outbound call, so each span a load-test request causes, in every app, has it.

Why ``tracestate``: it is the W3C Trace Context header meant for
vendor-specific data, propagated unchanged by every compliant tracer
(OpenTelemetry's SDKs included), unlike a custom header. Its grammar
(https://www.w3.org/TR/trace-context/#tracestate-header): a key is a lowercase
letter then up to 255 of ``a-z 0-9 _ - * /``; a value is up to 256 printable
ASCII characters except ``,`` and ``=``, not ending in a space. Run labels
(letters, digits, ``.``, ``_``, ``-``) fit as they are.
"""

from __future__ import annotations

import re
from typing import Optional

KEY = "takealook"
PREFIX = "load:"
DEFAULT_LABEL = "locust"  # a suite run by plain Locust without TAKEALOOK_LOAD_RUN
MAX_LABEL = 100
_VALUE_CHARS = re.compile(r"[^\x21-\x2b\x2d-\x3c\x3e-\x7e]")
_ENTRY = re.compile(r"(?:^|,)[ \t]*" + KEY + r"=" + PREFIX + r"([^,]*)")


def entry(label: str) -> str:
    """The ``tracestate`` list member for a run: ``takealook=load:before-1``."""
    clean = _VALUE_CHARS.sub("_", label.strip())[:MAX_LABEL] or DEFAULT_LABEL
    return f"{KEY}={PREFIX}{clean}"


def with_entry(tracestate: str, label: str) -> str:
    """``tracestate`` with our entry first (W3C: the updated entry moves to the left), others kept."""
    others = [m.strip() for m in tracestate.split(",") if m.strip() and not m.strip().startswith(KEY + "=")]
    return ",".join([entry(label)] + others[:31])  # at most 32 list members


def label_of(tracestate: str) -> Optional[str]:
    """The run label of a marked ``tracestate`` header value, else None."""
    if not tracestate or KEY not in tracestate:
        return None
    match = _ENTRY.search(tracestate)
    if match is None:
        return None
    return match.group(1).strip()[:MAX_LABEL] or DEFAULT_LABEL
