"""Raw samples of a load run: one row per request, in ``samples.csv.gz``.

``load run`` records every request Locust makes (not Locust's rounded
response-time buckets) so that ``load compare`` can compute exact percentiles
and resample blocks of consecutive requests. The file is a gzip-compressed CSV
with a header row, because every tool reads it (``zcat``, pandas, DuckDB,
a spreadsheet) and the standard library writes it; 50,000 requests take about
1.5 MB. Columns:

``start``       epoch seconds when the request was sent (6 decimals)
``scheduled``   epoch seconds when the open model scheduled it; empty in the
                closed model. ``start - scheduled`` is the time the request
                waited for the load generator (a free connection, a slow
                server holding all of them): it counts in user-visible latency.
``latency_ms``  from sending the request to the end of the response, as
                Locust measures it (a failed connection: until the error)
``method``, ``name``  Locust's request type and name (the route template in
                generated suites, e.g. ``/orders/{id}``)
``status``      HTTP status, 0 when there was no response
``error``       empty when Locust counted the request a success
``size``        response body bytes
``trace_id``    the W3C trace id of the request: the server's, from a
                ``traceresponse`` header when it sent one, else the one we sent
                in ``traceparent``
``worker``      Locust worker index (0 when not distributed)

This module is the reader and writer; it does not import locust.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from takealook.errors import InputError

SAMPLES_FILE = "samples.csv.gz"
FIELDS = ("start", "scheduled", "latency_ms", "method", "name", "status", "error", "size", "trace_id", "worker")
UNFINISHED = "unfinished when the run ended"


@dataclass(frozen=True, slots=True)
class Sample:
    start: float
    scheduled: Optional[float]
    latency_ms: float
    method: str
    name: str
    status: int
    error: str
    size: int
    trace_id: str
    worker: int

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.name}"

    @property
    def at(self) -> float:
        """When the request was due: scheduled time in the open model, else its start."""
        return self.scheduled if self.scheduled is not None else self.start

    @property
    def wait_ms(self) -> float:
        if self.scheduled is None:
            return 0.0
        return max(0.0, (self.start - self.scheduled) * 1000.0)

    @property
    def user_latency_ms(self) -> float:
        """Latency as a user arriving at the scheduled time sees it (no coordinated omission)."""
        return self.latency_ms + self.wait_ms

    @property
    def failed(self) -> bool:
        return bool(self.error)


def format_row(sample: Sample) -> tuple:
    """The CSV row of a sample (what the recorder writes and sends between Locust nodes)."""
    return (
        f"{sample.start:.6f}",
        "" if sample.scheduled is None else f"{sample.scheduled:.6f}",
        f"{sample.latency_ms:.3f}",
        sample.method,
        sample.name,
        sample.status,
        sample.error,
        sample.size,
        sample.trace_id,
        sample.worker,
    )


def parse_row(row: Sequence[str]) -> Sample:
    return Sample(
        start=float(row[0]),
        scheduled=float(row[1]) if row[1] else None,
        latency_ms=float(row[2]),
        method=row[3],
        name=row[4],
        status=int(row[5] or 0),
        error=row[6],
        size=int(row[7] or 0),
        trace_id=row[8],
        worker=int(row[9] or 0),
    )


class SampleWriter:
    """Appends rows to ``samples.csv.gz``; ``flush()`` makes what was written readable."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._gzip = gzip.GzipFile(self.path, "wb")
        self._raw = io.TextIOWrapper(self._gzip, encoding="utf-8", newline="")
        self._csv = csv.writer(self._raw)
        self._csv.writerow(FIELDS)
        self.count = 0

    def write_rows(self, rows: Iterable[Sequence]) -> None:
        rows = list(rows)
        self._csv.writerows(rows)
        self.count += len(rows)

    def flush(self) -> None:
        # A full gzip flush so a reader (the progress line, a crash) sees complete rows.
        self._raw.flush()
        self._gzip.flush(zlib.Z_SYNC_FLUSH)

    def close(self) -> None:
        self._raw.close()


def read_samples(path: Path) -> list[Sample]:
    """All samples of a file, ordered by when they were due. Raises InputError when unreadable."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} is missing: the run folder has no raw samples (was the run interrupted?)")
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or tuple(header[: len(FIELDS)]) != FIELDS:
                raise InputError(f"{path} is not a takealook samples file (unexpected header {header!r})")
            samples = [parse_row(row) for row in reader if row]
    except EOFError:
        # A run killed mid-write leaves a truncated gzip stream; keep the complete rows.
        samples = _read_truncated(path)
    except (OSError, ValueError, IndexError, csv.Error) as error:
        raise InputError(f"cannot read {path}: {error}") from error
    samples.sort(key=lambda s: s.at)
    return samples


def _read_truncated(path: Path) -> list[Sample]:
    data = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(path.read_bytes())
    text = data.decode("utf-8", errors="replace")
    lines = text.splitlines()[1:]
    if text and not text.endswith("\n") and lines:
        lines = lines[:-1]  # the last row was cut off mid-way
    return [parse_row(row) for row in csv.reader(io.StringIO("\n".join(lines))) if row]
