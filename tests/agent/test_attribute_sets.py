"""A statement's attribute set goes once a message, its spans by number; a span that changed its copy never
shares the set, and the OTLP the collector receives is what each span's own attributes say."""

from __future__ import annotations

import marshal
from types import SimpleNamespace

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from takealook.agent.exporter import Forwarder
from takealook.agent.instrument import dbapi
from takealook.agent.instrument.common import attach, detach
from takealook.agent.otlp import encode_request
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
        protocol, kind, resource, records, sets = marshal.loads(payload)
        request = ExportTraceServiceRequest()
        request.ParseFromString(encode_request([(marshal.loads(resource), records, sets)]))
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
    protocol, _, _, records, sets = marshal.loads(payload)
    numbered = [record for record in records if type(record[10]) is int]
    assert protocol == 2 and len(numbered) == 5 and len(sets) == 2, "unchanged spans go by number, sets once"
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


def test_each_message_carries_the_sets_it_refers_to(traced):
    """Numbers start over in each message, and each half of a split message has every set: a message
    dropped, or a helper that started afresh, never leaves a number without its set."""
    main = _cursor()
    for _ in range(FLUSH_AT + 5):  # one full message, then a second
        traced.execute(main, TEXT, (1,))
    traced.pipeline.flush()
    assert len(traced.messages) == 2
    for payload in traced.messages:
        _, _, _, records, sets = marshal.loads(payload)
        assert {record[10] for record in records} == {0} and len(sets) == 1
    before = len(traced.messages)
    traced.pipeline._send = lambda payload: False  # noqa: SLF001 - the helper busy: this message is dropped
    traced.execute(main, TEXT, (1,))
    traced.pipeline.flush()
    traced.pipeline._send = lambda payload: not traced.messages.append(payload)  # noqa: SLF001
    traced.execute(main, TEXT, (1,))
    traced.pipeline.flush()
    _, _, _, records, sets = marshal.loads(traced.messages[before])
    assert [record[10] for record in records] == [0] and len(sets) == 1
    split = []
    traced.pipeline._send = lambda payload: not split.append(payload)  # noqa: SLF001
    traced.pipeline._ship(b"spans", records * 4, sets * 1)  # noqa: SLF001
    assert len(split) == 1
    import takealook.agent.pipeline as pipeline_module

    pipeline_module.MAX_MESSAGE, saved = 10, pipeline_module.MAX_MESSAGE
    try:
        split.clear()
        traced.pipeline._ship(b"spans", records * 4, sets)  # noqa: SLF001
    finally:
        pipeline_module.MAX_MESSAGE = saved
    assert len(split) == 4 and all(marshal.loads(payload)[4] == sets for payload in split)


def test_the_exporter_delivers_numbered_spans_as_their_sets(traced):
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
