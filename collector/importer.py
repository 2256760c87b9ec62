"""``takealook traces import``: OTLP JSON files, as the Collector's ``file`` exporter writes them.

Each line is one ``ExportTraceServiceRequest`` (``{"resourceSpans": ...}``)
or ``ExportMetricsServiceRequest`` (``{"resourceMetrics": ...}``) in OTLP's
JSON encoding; log lines (``resourceLogs``) and blank lines are skipped.
Files may be gzip-compressed (recognised by content, not by name). Importing
is idempotent: the store keeps one copy of each span (trace id + span id) and
of each metric point.

A bad line is skipped and reported (``file:line: reason``), never fatal; a
file that cannot be read at all (missing, binary protobuf, zstd) stops the
import before anything is written, with one line saying what to do.
"""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from takealook.collector.convert import Converter
from takealook.collector.otlp_json import BadRequest, metrics_from_document, traces_from_document
from takealook.collector.store import IngestBatch, SpanStore
from takealook.errors import InputError

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_COMMIT_EVERY = 20_000  # items per transaction: big enough to be fast, small enough to hold the lock briefly
_MAX_PROBLEMS = 20


@dataclass
class ImportResult:
    files: int = 0
    lines: int = 0
    spans_new: int = 0
    spans_duplicate: int = 0
    spans_rejected: int = 0
    points_new: int = 0
    points_duplicate: int = 0
    skipped_lines: int = 0
    problems: list[str] = field(default_factory=list)  # the first _MAX_PROBLEMS, "file:line: reason"

    def _problem(self, where: str, reason: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(f"{where}: {reason}")


def check_files(paths: list[Path]) -> None:
    """Refuse the whole import up front when a file cannot be read as OTLP JSON."""
    for path in paths:
        if not path.exists():
            raise InputError(f"{path}: no such file")
        if path.is_dir():
            raise InputError(f"{path} is a folder; pass the files in it (e.g. {path}/*.json)")
        try:
            with open(path, "rb") as handle:
                head = handle.read(4)
        except OSError as error:
            raise InputError(f"cannot read {path}: {error.strerror or error}") from None
        if head.startswith(_ZSTD_MAGIC):
            raise InputError(f"{path} is zstd-compressed: run `zstd -d {path}` first, or set the file "
                             "exporter's compression to none")
        if head and not head.startswith(_GZIP_MAGIC) and head.lstrip()[:1] not in (b"{", b""):
            raise InputError(f"{path} is not OTLP JSON lines (binary protobuf?): set the file exporter's "
                             "format to json")


def import_files(paths: list[Path], store: SpanStore,
                 progress: Optional[Callable[[ImportResult], None]] = None) -> ImportResult:
    check_files(paths)
    result = ImportResult()
    converter = Converter()
    pending: list[IngestBatch] = []
    size = 0
    for path in paths:
        result.files += 1
        for number, line in _lines(path, result):
            result.lines += 1
            batch = _convert(converter, line, f"{path}:{number}", result)
            if batch is None:
                continue
            pending.append(batch)
            size += batch.size
            if size >= _COMMIT_EVERY:
                _flush(store, pending, result)
                pending, size = [], 0
                if progress:
                    progress(result)
    _flush(store, pending, result)
    return result


def _lines(path: Path, result: ImportResult) -> Iterator[tuple[int, str]]:
    with open(path, "rb") as raw:
        head = raw.read(2)
        raw.seek(0)
        binary = gzip.GzipFile(fileobj=raw) if head == _GZIP_MAGIC else raw
        text = io.TextIOWrapper(binary, encoding="utf-8", errors="strict")
        number = 0
        try:
            for number, line in enumerate(text, 1):
                if line.strip():
                    yield number, line
        except (OSError, EOFError, UnicodeDecodeError) as error:
            # A truncated .gz (a file the exporter is still writing) or bad bytes: keep what was read.
            result.skipped_lines += 1
            result._problem(f"{path}:{number + 1}", f"unreadable from here on ({error})")


def _convert(converter: Converter, line: str, where: str, result: ImportResult) -> Optional[IngestBatch]:
    try:
        head = json.loads(line)
    except ValueError as error:
        result.skipped_lines += 1
        result._problem(where, f"not JSON ({error})")
        return None
    if not isinstance(head, dict):
        result.skipped_lines += 1
        result._problem(where, "not a JSON object")
        return None
    try:
        if "resourceSpans" in head or "resource_spans" in head:
            converted = converter.traces(traces_from_document(head).SerializeToString())
            result.spans_rejected += converted.rejected
        elif "resourceMetrics" in head or "resource_metrics" in head:
            converted = converter.metrics(metrics_from_document(head))
        else:
            return None  # logs, or an empty request
    except BadRequest as error:
        result.skipped_lines += 1
        result._problem(where, str(error))
        return None
    if converted.rejected:
        result._problem(where, converted.message)
    return converted.batch


def _flush(store: SpanStore, pending: list[IngestBatch], result: ImportResult) -> None:
    if not pending:
        return
    written = store.write(pending)
    result.spans_new += written.spans_new
    result.spans_duplicate += written.spans_duplicate
    result.points_new += written.points_new
    result.points_duplicate += written.points_duplicate
