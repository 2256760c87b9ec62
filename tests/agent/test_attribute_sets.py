"""A statement's attribute block is encoded once and kept on its set; a span that changed its copy never
uses it, and the OTLP the collector receives is what each span's own attributes say."""

from __future__ import annotations

import marshal
from types import SimpleNamespace

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from takealook.agent.exporter import Forwarder
from takealook.agent.instrument import dbapi
from takealook.agent.instrument.common import attach, detach
from takealook.agent.otlp import frame_request
from takealook.agent.pipeline import FLUSH_AT, Pipeline
from takealook.agent.settings import AgentSettings
from takealook.agent.tracer import LeanTracerProvider
from tests.agent.otlp_sink import OtlpSink, _attributes

SCOPE = ("takealook.agent", "test")
TEXT = "SELECT * FROM orders WHERE id = %s"


class Cursor:
    fail = False

    def execute(self, query, params=None):
        if self.fail:
            raise ValueError("no such order")

    def executemany(self, query, params):
        pass


@pytest.fixture
def traced(monkeypatch):
    """(pipeline, messages, ended spans, execute, executemany, start) around the real DB span code."""
    messages: list = []
    ended: list = []
    pipeline = Pipeline(lambda payload: not messages.append(payload), {"service.name": "sets"}, 60,
                        export_metrics=False)

    def on_end(span):
        ended.append(span)
        pipeline.on_end(span)

    provider = LeanTracerProvider(on_end)
    monkeypatch.setattr(dbapi, "_agent", SimpleNamespace(provider=provider, settings=AgentSettings(), scope=SCOPE))
    monkeypatch.setattr(dbapi, "_statements", {})
    ports = {"main": ("shop", "db.internal", 5432), "one": ("shop", "db.one", 1)}
    execute = dbapi._traced(Cursor.execute, lambda cursor: ports[cursor.conn])  # noqa: SLF001
    executemany = dbapi._traced(Cursor.executemany, lambda cursor: ports[cursor.conn], batch=True)  # noqa: SLF001
    root = provider.make_span("GET /orders", trace.INVALID_SPAN, 2, {"http.route": "/orders"}, SCOPE)
    token = attach(root)

    def start(cursor, text=TEXT):
        return dbapi._start(text, lambda c: ports[c.conn], cursor)  # noqa: SLF001

    yield SimpleNamespace(pipeline=pipeline, messages=messages, ended=ended, execute=execute,
                          executemany=executemany, start=start, root=root)
    detach(token)
    pipeline._closed = True  # noqa: SLF001 - nothing to send at exit


def _cursor(conn="main"):
    cursor = Cursor()
    cursor.conn = conn
    return cursor


def _received(messages) -> list:
    """The spans as the collector decodes them, through the exporter's own decoding and encoding."""
    spans = []
    for payload in messages:
        protocol, kind, resource, count, groups = marshal.loads(payload)
        request = ExportTraceServiceRequest()
        request.ParseFromString(frame_request([(marshal.loads(resource), groups)]))
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append((span.span_id, span.name, _typed(span.attributes)))
    return spans


def _typed(key_values) -> dict:
    """Attributes with each value's protobuf kind: 1 (int), True (bool) and 1.0 (double) stay apart."""
    return {kv.key: (kv.value.WhichOneof("value"), _attributes([kv])[kv.key]) for kv in key_values}


def _expected(span) -> tuple:
    kinds = {bool: "bool_value", int: "int_value", float: "double_value", str: "string_value"}
    return (span.span_id.to_bytes(8, "big"), span.name,
            {key: (kinds[type(value)], value) for key, value in span.attributes.items()})


def test_changed_copies_never_share_the_set_and_the_collector_gets_each_spans_own(traced):
    main, one = _cursor(), _cursor("one")
    for _ in range(3):
        traced.execute(main, TEXT, (1,))
    main.fail = True
    with pytest.raises(ValueError):
        traced.execute(main, TEXT, (2,))  # a failure adds error.type to its copy
    main.fail = False
    traced.executemany(main, TEXT, [(1,), (2,)])  # a batch size added
    changed = traced.start(main)
    changed.set_attribute("db.query.text", "SELECT 2")  # a value changed after the span started
    changed.end()
    equal_but_float = traced.start(main)
    equal_but_float.set_attribute("server.port", 5432.0)  # == 5432: equal dicts, another value
    equal_but_float.end()
    traced.execute(one, TEXT, (1,))
    equal_but_bool = traced.start(one)
    equal_but_bool.set_attribute("server.port", True)  # == 1
    equal_but_bool.end()
    removed = traced.start(main)
    del removed.attributes["db.namespace"]
    removed.end()
    traced.execute(main, TEXT, (3,))
    traced.pipeline.flush()

    (payload,) = traced.messages
    protocol, _, _, count, _ = marshal.loads(payload)
    assert protocol == 3 and count == len(traced.ended) == 11
    assert sorted(_received(traced.messages)) == sorted(_expected(span) for span in traced.ended)
    by_id = {span.span_id: span for span in traced.ended}
    assert by_id[changed.span_id].attributes["db.query.text"] == "SELECT 2"
    assert by_id[equal_but_bool.span_id].attributes["server.port"] is True
    # The statement's own set is as it was made: nothing a span did reached it.
    statements = dbapi._statements  # noqa: SLF001
    for (_, shared), port, host in ((statements[(TEXT, ("shop", "db.internal", 5432))], 5432, "db.internal"),
                                    (statements[(TEXT, ("shop", "db.one", 1))], 1, "db.one")):
        assert shared.attributes == {"db.system": "postgresql", "db.system.name": "postgresql",
                                     "db.query.text": "SELECT * FROM orders WHERE id = %s", "db.namespace": "shop",
                                     "db.operation.name": "SELECT", "server.address": host, "server.port": port}
        assert type(shared.attributes["server.port"]) is int
        block = Span.FromString(shared.block)  # the block kept on the set (a span's field 9): what the set says
        kinds = {int: "int_value", str: "string_value"}
        assert _typed(block.attributes) == {key: (kinds[type(value)], value)
                                            for key, value in shared.attributes.items()}


def test_a_message_too_big_is_split_and_each_half_stands_alone(traced):
    """Halves carry their own spans, grouped by scope, with nothing lost or doubled; a message the helper
    could not take is dropped whole and counted, and the next one is complete."""
    main = _cursor()
    for _ in range(FLUSH_AT + 5):  # one full message, then a second
        traced.execute(main, TEXT, (1,))
    traced.pipeline.flush()
    counts = [marshal.loads(payload)[3] for payload in traced.messages]  # the idle thread may send the first
    assert sum(counts) == FLUSH_AT + 5 and max(counts) < 4 * FLUSH_AT
    before = len(traced.messages)
    traced.pipeline._send = lambda payload: False  # noqa: SLF001 - the helper busy: this message is dropped
    traced.execute(main, TEXT, (1,))
    traced.pipeline.flush()
    assert traced.pipeline.dropped == 1
    traced.pipeline._send = lambda payload: not traced.messages.append(payload)  # noqa: SLF001
    traced.execute(main, TEXT, (1,))
    traced.pipeline.flush()
    assert len(traced.messages) == before + 1 and len(_received(traced.messages[before:])) == 1
    _, _, _, count, groups = marshal.loads(traced.messages[0])
    other = [("app.code", "", [field]) for _, _, fields in groups for field in fields[:3]]
    split = []
    traced.pipeline._send = lambda payload: not split.append(payload)  # noqa: SLF001
    import takealook.agent.pipeline as pipeline_module

    pipeline_module.MAX_MESSAGE, saved = 10, pipeline_module.MAX_MESSAGE
    try:
        traced.pipeline._ship(b"spans", count + 3, groups + other)  # noqa: SLF001
    finally:
        pipeline_module.MAX_MESSAGE = saved
    assert len(split) == count + 3 and all(marshal.loads(payload)[3] == 1 for payload in split)
    whole = sorted(_received([marshal.dumps((3, b"spans", marshal.dumps({"service.name": "sets"}), count + 3,
                                             groups + other))]))
    assert sorted(_received(split)) == whole and len(whole) == count + 3


def test_the_exporter_delivers_spans_written_with_their_sets_block_as_their_own(traced):
    """Through the exporter (as TAKEALOOK_EXPORT=thread runs it) to a real OTLP receiver."""
    with OtlpSink() as sink:
        forwarder = Forwarder(sink.endpoint + "/v1/traces", sink.endpoint + "/v1/metrics", export_every_s=0.1)
        forwarder.start()
        traced.pipeline._send = forwarder.submit  # noqa: SLF001
        main = _cursor()
        traced.execute(main, TEXT, (1,))
        main.fail = True
        with pytest.raises(ValueError):
            traced.execute(main, TEXT, (1,))
        main.fail = False
        traced.execute(main, TEXT, (1,))
        traced.pipeline.flush()
        forwarder.stop()
    assert [span["attributes"] for span in sink.spans] == [span.attributes for span in traced.ended]
    assert [span["attributes"].get("error.type") for span in sink.spans] == [None, "ValueError", None]


def test_a_statement_is_recorded_without_a_span_object_and_is_the_span_it_would_have_been(traced):
    """A statement that succeeds under the default sampler is recorded straight as a record (no span object
    is made or ended: its span is never seen by the app): the collector gets what a LeanSpan of it would
    have given, its parent and trace, the request's trace state (a load test's mark) included; a failed
    one is a whole LeanSpan with its error; under another sampler every statement is a LeanSpan."""
    from opentelemetry.trace import TraceState

    from takealook.agent.otlp import Record
    from takealook.agent.tracer import LeanSpan, build_sampler

    main = _cursor()
    traced.execute(main, TEXT, (1,))
    traced.root.trace_state = TraceState([("takealook", "load:run-3")])
    traced.execute(main, TEXT, (2,))
    main.fail = True
    with pytest.raises(ValueError):
        traced.execute(main, TEXT, (3,))
    plain, marked, failed = traced.ended
    assert type(plain) is Record and type(marked) is Record and type(failed) is LeanSpan
    assert len(plain) == len(Record._fields)  # made field by field (tuple.__new__): none left out
    assert failed.attributes["error.type"] == "ValueError" and failed.shared is plain.shared
    traced.pipeline.flush()
    request = ExportTraceServiceRequest()
    for payload in traced.messages:
        _, _, resource, _, groups = marshal.loads(payload)
        request.MergeFromString(frame_request([(marshal.loads(resource), groups)]))
    spans = [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
    assert [(s.name, s.kind, s.trace_state) for s in spans] == [
        ("SELECT shop", Span.SPAN_KIND_CLIENT, ""), ("SELECT shop", Span.SPAN_KIND_CLIENT, "takealook=load:run-3"),
        ("SELECT shop", Span.SPAN_KIND_CLIENT, "takealook=load:run-3")]
    assert {s.parent_span_id for s in spans} == {traced.root.span_id.to_bytes(8, "big")}
    assert {s.trace_id for s in spans} == {traced.root.trace_id.to_bytes(16, "big")}
    assert all(s.end_time_unix_nano >= s.start_time_unix_nano > 0 for s in spans)
    assert _typed(spans[0].attributes) == _typed(spans[1].attributes) and spans[2].status.code == 2
    traced.ended.clear()
    traced.root.trace_state = None
    main.fail = False
    sampler = build_sampler("traceidratio", 1.0)
    assert LeanTracerProvider(lambda span: None, sampler).inline_children is False
    dbapi._agent.provider._sampler = sampler  # noqa: SLF001 - the same wrapper, now under a ratio sampler
    dbapi._agent.provider.inline_children = False
    traced.execute(main, TEXT, (4,))
    assert [type(span) for span in traced.ended] == [LeanSpan]
