"""The agent's pieces on their own: settings, statement scrubbing, spans, histogram, pipeline, exporter."""

from __future__ import annotations

import logging
import marshal

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from takealook.agent.exporter import Forwarder
from takealook.agent.metrics import BOUNDS, ServerDurationHistogram
from takealook.agent.otlp import frame_request
from takealook.agent.pipeline import Pipeline
from takealook.agent.settings import DEFAULT_ENDPOINT, AgentSettings
from takealook.agent.sqlscrub import scrub
from takealook.agent.tracer import LeanSpan, LeanTracerProvider, build_sampler
from tests.agent.otlp_sink import OtlpSink
from tests.conftest import wait_for


# --------------------------------------------------------------------------- settings

def test_settings_from_environment():
    s = AgentSettings.load({"OTEL_SERVICE_NAME": "orders", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/",
                            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,team=a%20b",
                            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"})
    assert s.service_name == "orders"
    assert s.traces_endpoint == "http://c:4318/v1/traces" and s.metrics_endpoint == "http://c:4318/v1/metrics"
    assert s.resource_attributes == {"deployment.environment": "prod", "team": "a b"}
    assert (s.sampler, s.sampler_arg) == ("parentbased_traceidratio", 0.25)


def test_signal_endpoint_wins_and_arguments_win_over_environment():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/x",
           "OTEL_SERVICE_NAME": "env-name"}
    s = AgentSettings.load(env, service_name="arg-name")
    assert s.traces_endpoint == "http://t:1/x" and s.metrics_endpoint == "http://c:4318/v1/metrics"
    assert s.service_name == "arg-name"
    assert AgentSettings.load({}).traces_endpoint == DEFAULT_ENDPOINT + "/v1/traces"


@pytest.mark.parametrize("env, message", [
    ({"OTEL_TRACES_SAMPLER": "sometimes"}, "unknown OTEL_TRACES_SAMPLER"),
    ({"OTEL_TRACES_SAMPLER_ARG": "lots"}, "OTEL_TRACES_SAMPLER_ARG"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "is not an http(s) URL"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:43x18"}, "malformed port"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "novalue"}, "expected key=value"),
    ({"TAKEALOOK_DISABLED_INSTRUMENTATIONS": "flask,mongo"}, "unknown instrumentations"),
])
def test_bad_settings_warn_once_and_fall_back(caplog, env, message):
    with caplog.at_level(logging.WARNING, "takealook.agent"):
        settings = AgentSettings.load(env)
    assert [r.getMessage() for r in caplog.records if message in r.getMessage()], caplog.text
    assert len(caplog.records) == 1
    assert settings.traces_endpoint.startswith("http")


def test_unknown_start_argument_is_a_type_error():
    with pytest.raises(TypeError, match="colour"):
        AgentSettings.load({}, colour="blue")


# --------------------------------------------------------------------------- statements

@pytest.mark.parametrize("sql, expected", [
    ("SELECT * FROM t WHERE id = %s", "SELECT * FROM t WHERE id = %s"),
    ("SELECT * FROM t WHERE email = 'a@b.c' AND n > 10", "SELECT * FROM t WHERE email = %s AND n > %s"),
    ("SELECT * FROM t WHERE name = 'O''Brien'", "SELECT * FROM t WHERE name = %s"),
    ("SELECT * FROM t WHERE s = E'a\\'b' LIMIT 5", "SELECT * FROM t WHERE s = %s LIMIT %s"),
    ("SELECT $tag$ secret $tag$, 1.5e3", "SELECT %s, %s"),
    ("SELECT * FROM t1 WHERE x = $1 -- token=abc\n AND y = 2", "SELECT * FROM t1 WHERE x = $1 AND y = %s"),
    ('SELECT "Col 1" FROM t /* user=bob */ WHERE a IN (1, 2, 3)', 'SELECT "Col 1" FROM t WHERE a IN (%s, %s, %s)'),
    ("SELECT %(name)s, 100 %% 7", "SELECT %(name)s, %s %% %s"),
    ("UPDATE t SET flag = TRUE, v = NULL WHERE id = 3", "UPDATE t SET flag = TRUE, v = NULL WHERE id = %s"),
])
def test_scrub_removes_values_and_keeps_placeholders(sql, expected):
    assert scrub(sql)[0] == expected


def test_scrub_names_the_operation():
    assert scrub("  select 1")[1] == "SELECT"
    assert scrub("WITH x AS (SELECT 1) SELECT * FROM x")[1] == "WITH"
    assert scrub("(SELECT 1) UNION (SELECT 2)")[1] == "SELECT"


# --------------------------------------------------------------------------- spans

@pytest.fixture
def provider():
    ended: list[LeanSpan] = []
    tracer_provider = LeanTracerProvider(ended.append)
    tracer_provider.ended = ended
    return tracer_provider


def test_spans_follow_the_opentelemetry_api(provider):
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("root", kind=SpanKind.SERVER, attributes={"a": 1, "bad": object()}) as root:
        with tracer.start_as_current_span("child") as child:
            child.set_attribute("list", [1, 2])
            child.add_event("hello", {"k": "v"})
            assert trace.get_current_span() is child
        with pytest.raises(ValueError):
            with tracer.start_as_current_span("failing"):
                raise ValueError("nope")
        root.set_status(Status(StatusCode.OK))
        root.set_status(StatusCode.ERROR)  # OK is final
    child_span, failing, root_span = provider.ended
    assert root_span.parent_id == 0 and root_span.attributes == {"a": 1} and root_span.status_code == 1
    assert child_span.parent_id == root_span.span_id and child_span.trace_id == root_span.trace_id
    assert child_span.attributes == {"list": (1, 2)} and child_span.events[0][0] == "hello"
    assert failing.status_code == 2 and failing.events[0][2]["exception.type"] == "ValueError"
    assert root_span.get_span_context().trace_id == root_span.trace_id
    root_span.set_attribute("late", 1)
    assert "late" not in root_span.attributes


def test_spans_made_inline_are_whole_spans(provider):
    """The default sampler's spans are made without LeanSpan.__init__: every slot is set as it would set it."""
    root = provider.make_span("root", trace.INVALID_SPAN, 2, {"a": 1}, ("s", "1"))
    child = provider.make_span("child", root, 3, None, ("s", "1"), start_time=7)
    for span, parent_id, attributes, start in ((root, 0, {"a": 1}, root.start_ns), (child, root.span_id, {}, 7)):
        made = LeanSpan(span.name, span.trace_id, span.span_id, parent_id, False, span.kind, attributes, None,
                        ("s", "1"), provider._on_end, start)  # noqa: SLF001
        assert {slot: getattr(span, slot) for slot in LeanSpan.__slots__} == \
            {slot: getattr(made, slot) for slot in LeanSpan.__slots__}
    assert child.trace_id == root.trace_id and root.start_ns > 0 and root.span_id != child.span_id
    child.end()
    assert provider.ended == [child] and child.end_ns > 0


def test_remote_parent_and_sampling(provider):
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    tracer = provider.get_tracer("test")
    remote = SpanContext(0xABC, 0xDEF, True, TraceFlags(1))
    span = tracer.start_span("s", context=trace.set_span_in_context(NonRecordingSpan(remote)))
    assert (span.trace_id, span.parent_id, span.parent_remote) == (0xABC, 0xDEF, True)
    unsampled = SpanContext(0xABC, 0xDEF, True, TraceFlags(0))
    span = tracer.start_span("s", context=trace.set_span_in_context(NonRecordingSpan(unsampled)))
    assert not span.is_recording() and span.get_span_context().trace_id == 0xABC
    off = LeanTracerProvider(lambda s: None, build_sampler("always_off", 1.0)).get_tracer("t")
    assert not off.start_span("x").is_recording()
    half = LeanTracerProvider(lambda s: None, build_sampler("traceidratio", 0.5)).get_tracer("t")
    recorded = sum(half.start_span("x").is_recording() for _ in range(2000))
    assert 800 < recorded < 1200


# --------------------------------------------------------------------------- histogram, pipeline

def test_histogram_buckets_and_deltas():
    histogram = ServerDurationHistogram()
    for seconds in (0.001, 0.004, 0.2, 20.0):
        histogram.record(seconds, "GET", "/a", 200, "http")
    histogram.record(0.5, "GET", "/a", 500, "http")
    points = {p[2]["http.response.status_code"]: p for p in histogram.collect()}
    name, unit, attributes, start, end, count, total, low, high, buckets, bounds = points[200]
    assert (name, unit, count, low, high, bounds) == ("http.server.request.duration", "s", 4, 0.001, 20.0, BOUNDS)
    assert buckets[0] == 2 and buckets[BOUNDS.index(0.25)] == 1 and buckets[-1] == 1
    assert attributes["http.route"] == "/a" and points[500][5] == 1
    assert histogram.collect() == []


def test_pipeline_batches_across_requests_and_counts_drops(provider):
    from takealook.agent.pipeline import FLUSH_AT

    messages = []
    accept = [True]
    pipeline = Pipeline(lambda payload: accept[0] and not messages.append(payload), {"service.name": "x"}, 60)
    tracer = LeanTracerProvider(pipeline.on_end).get_tracer("t")
    with tracer.start_as_current_span("request"):
        for _ in range(3):
            tracer.start_span("sql").end()
    assert messages == []  # a request's end sends nothing: messages carry many requests
    for _ in range(FLUSH_AT - 4):
        tracer.start_span("another").end()
    wait_for(lambda: messages, 5, message="a full batch is sent (by the idle thread) at once")
    protocol, kind, resource, count, groups = marshal.loads(messages[0])
    assert (protocol, kind, count, len(messages)) == (3, b"spans", FLUSH_AT, 1)
    assert marshal.loads(resource)["service.name"] == "x"
    request = ExportTraceServiceRequest()
    request.ParseFromString(frame_request([(marshal.loads(resource), groups)]))
    spans = request.resource_spans[0].scope_spans[0].spans
    assert len(spans) == FLUSH_AT and [span.name for span in spans[:4]] == ["sql", "sql", "sql", "request"]
    tracer.start_span("waits").end()
    wait_for(lambda: len(messages) == 2, 5, message="the idle thread sends what waited a second")
    accept[0] = False
    tracer.start_span("lost").end()
    pipeline.flush()
    assert pipeline.dropped == 1 and pipeline.sent == FLUSH_AT + 1
    pipeline.close()


def test_spans_wait_as_they_are_and_a_span_that_cannot_be_encoded_is_left_out_alone():
    """Ended spans wait in a queue and are encoded together when a message goes (their code and data warm
    for the whole batch): one span that cannot be encoded is dropped, the batch still goes, the count is
    of the spans sent, and a span of another scope goes in its own scope."""
    from takealook.agent.pipeline import FLUSH_AT

    messages = []
    pipeline = Pipeline(lambda payload: not messages.append(payload), {"service.name": "x"}, 60)
    provider = LeanTracerProvider(pipeline.on_end)
    tracer, other = provider.get_tracer("t"), provider.get_tracer("contrib", "1.0")
    with tracer.start_as_current_span("request"):
        broken = tracer.start_span("broken")
        broken.name = object()  # not a text: its encoding fails
        broken.end()
        other.start_span("cache").end()
    assert len(pipeline._ended) == 3 and messages == []  # noqa: SLF001 - waiting, not encoded yet
    for _ in range(FLUSH_AT - 3):
        tracer.start_span("sql").end()
    wait_for(lambda: len(messages) == 1 and not pipeline._ended, 5, message="the batch sent")  # noqa: SLF001
    protocol, kind, resource, count, groups = marshal.loads(messages[0])
    assert count == FLUSH_AT - 1 == pipeline.sent and pipeline.dropped == 0
    request = ExportTraceServiceRequest()
    request.ParseFromString(frame_request([(marshal.loads(resource), groups)]))
    names = {scope.scope.name: [span.name for span in scope.spans] for scope in request.resource_spans[0].scope_spans}
    assert names == {"t": ["request"] + ["sql"] * (FLUSH_AT - 3), "contrib": ["cache"]}
    pipeline.close()


def test_urls_go_through_the_url_rules_with_their_batch_and_never_leave_raw():
    """A server path and an outgoing URL wait on their span as they came and go through the URL rules when
    the batch is encoded: the message holds them redacted (by the route, for the path), and a URL whose
    rules fail is REDACTED, not sent as it came."""
    from takealook.agent.pipeline import URL
    from takealook.agent.redact import DEFAULT

    messages = []
    pipeline = Pipeline(lambda payload: not messages.append(payload), {"service.name": "x"}, 60)
    tracer = LeanTracerProvider(pipeline.on_end).get_tracer("t")
    secret_url = "https://bob:pw@api.example.com/v1/users/alice/7?token=s3cr3t&page=2"

    def send(deferred_values):
        for keys, value, route in deferred_values:
            span = tracer.start_span("span", attributes={key: "" for key in keys})
            span.deferred = (keys, value, route)
            span.end()
        pipeline.flush()
        protocol, kind, resource, count, groups = marshal.loads(messages.pop())
        request = ExportTraceServiceRequest()
        request.ParseFromString(frame_request([(marshal.loads(resource), groups)]))
        return [{kv.key: kv.value.string_value for kv in span.attributes}
                for span in request.resource_spans[0].scope_spans[0].spans]

    sent = send([(("url.path", "http.target"), "/users/alice/orders/42", "/users/<name>/orders/<int:id>"),
                 (("url.full",), secret_url, URL)])
    assert sent == [{"url.path": "/users/REDACTED/orders/42", "http.target": "/users/REDACTED/orders/42"},
                    {"url.full": DEFAULT.url(secret_url)}]
    assert "pw" not in sent[1]["url.full"] and "s3cr3t" not in sent[1]["url.full"]

    class Failing:
        def url(self, url):
            raise ValueError(url)

        server_path = url

    pipeline.url_rules = Failing()
    assert send([(("url.full",), secret_url, URL), (("url.path",), "/users/alice", "/users/<name>")]) == [
        {"url.full": "REDACTED"}, {"url.path": "/REDACTED"}]
    pipeline.close()


def test_forwarder_exports_to_a_real_receiver():
    with OtlpSink() as sink:
        forwarder = Forwarder(sink.endpoint + "/v1/traces", sink.endpoint + "/v1/metrics", export_every_s=0.1)
        forwarder.start()
        pipeline = Pipeline(forwarder.submit, {"service.name": "unit"}, 0.05)
        tracer = LeanTracerProvider(pipeline.on_end).get_tracer("t")
        with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER, attributes={"http.route": "/x"}):
            tracer.start_span("child").end()
        pipeline.flush()
        pipeline.histogram.record(0.01, "GET", "/x", 200, "http")
        pipeline.flush_metrics()
        wait_for(lambda: len(sink.spans) == 2 and sink.points, 10, message="spans and metrics")
        forwarder.stop()
        pipeline.close()
    server = next(s for s in sink.spans if s["name"] == "GET /x")
    assert server["kind"] == 2 and server["service"] == "unit" and server["attributes"] == {"http.route": "/x"}
    assert sink.points[0]["count"] == 1 and sink.points[0]["temporality"] == 1  # DELTA


def test_forwarder_refuses_a_message_of_another_protocol_with_one_warning(caplog):
    """An app whose agent is of another version (its messages another protocol): one warning, no crash."""
    forwarder = Forwarder("http://127.0.0.1:9/v1/traces", "http://127.0.0.1:9/v1/metrics")
    old = marshal.dumps((2, b"spans", marshal.dumps({"service.name": "x"}), [], []))
    with caplog.at_level(logging.WARNING, logger="takealook.agent"):
        assert [forwarder.submit(old) for _ in range(3)] == [False] * 3
        assert forwarder.submit(b"not marshal") is False
        assert forwarder.submit(marshal.dumps((3, b"spans", b"", "7", []))) is False  # no crash on a bad count
    assert [r.getMessage() for r in caplog.records if "protocol" in r.getMessage()] == [
        "takealook: the app's agent speaks message protocol 2, this export helper 3 (two takealook versions at "
        "once?); its spans are dropped until the app restarts"]


def test_contrib_spans_are_scrubbed_before_they_leave():
    """Contrib instrumentations record what their authors chose; the agent's no-values policy applies."""
    from takealook.agent.contrib_policy import contrib_on_end
    from takealook.agent.tracer import LeanTracerProvider

    ended = []
    provider = LeanTracerProvider(ended.append, None, contrib_on_end(ended.append))
    old_redis = provider.get_tracer("opentelemetry.instrumentation.redis", "0.40b0")
    with old_redis.start_as_current_span("SET") as span:  # as instrumentations before 0.44 recorded it
        span.set_attributes({"db.system": "redis", "db.statement": "SET user:7:email ann@example.com",
                             "net.peer.name": "cache"})
    sqlalchemy = provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
    with sqlalchemy.start_as_current_span("SELECT shop", attributes={
            "db.system": "postgresql", "db.statement": "SELECT * FROM users WHERE email = 'ann@example.com'",
            "http.request.header.authorization": ("Bearer x",)}):
        pass
    client = provider.get_tracer("opentelemetry.instrumentation.aiohttp_client")
    with client.start_as_current_span("GET", attributes={
            "url.full": "https://bob:pw@api.example.com/v1?api_key=k3y&page=2", "user_agent.original": "x"}):
        pass
    mine = provider.get_tracer("shop.checkout")
    with mine.start_as_current_span("checkout", attributes={"db.statement": "SET a b"}):
        pass
    by_name = {span.name: span.attributes for span in ended}
    assert by_name["SET"] == {"db.system": "redis", "db.statement": "SET ? ?", "net.peer.name": "cache"}
    assert by_name["SELECT shop"] == {"db.system": "postgresql", "db.statement": "SELECT * FROM users WHERE email = %s"}
    assert by_name["GET"]["url.full"] == "https://api.example.com/v1?api_key=REDACTED&page=2"  # redact's rules
    assert "user_agent.original" not in by_name["GET"]
    assert by_name["checkout"] == {"db.statement": "SET a b"}, "the app's own spans are the app's business"


def test_url_rules_remember_results_and_forget_them_when_a_route_is_learned():
    from takealook.agent.redact import Redactor

    redactor = Redactor()
    url = "http://stock:8000/stock/12?page=2&q=ann"
    assert redactor.url(url) == "http://stock:8000/REDACTED/12?page=2&q=REDACTED"
    assert redactor.url(url) == "http://stock:8000/REDACTED/12?page=2&q=REDACTED"  # remembered
    redactor.learn("/stock/<int:sku>")  # a route of this app: "stock" is one of its words now
    assert redactor.url(url) == "http://stock:8000/stock/12?page=2&q=REDACTED"
    assert redactor.server_path("/users/ann", "/users/<name>") == "/users/REDACTED"
    assert redactor.server_path("/users/ann", "/users/<name>") == "/users/REDACTED"
    long_path = "/users/" + "x" * 600
    assert redactor.server_path(long_path, "/users/<name>") == "/users/REDACTED"
    assert (long_path, "/users/<name>") not in redactor._done  # noqa: SLF001 - long inputs are not kept


def test_statement_cache_gives_each_span_its_own_attributes_and_stays_bounded(monkeypatch, provider):
    """A unit layer under the real-PostgreSQL tests: a statement's attributes are made once, and what
    one span adds to them (a failure's error.type) never reaches the next execution's span."""
    from types import SimpleNamespace

    from takealook.agent.instrument import dbapi
    from takealook.agent.instrument.common import attach, detach

    monkeypatch.setattr(dbapi, "_agent", SimpleNamespace(provider=provider, settings=AgentSettings(),
                                                         scope=("takealook.agent", "test")))
    monkeypatch.setattr(dbapi, "_statements", {})

    class Cursor:
        fail = False

        def execute(self, query, params=None):
            if self.fail:
                raise ValueError("duplicate key")

    execute = dbapi._traced(Cursor.execute, lambda cursor: ("shop", "db.internal", 5432))  # noqa: SLF001
    cursor = Cursor()
    root = provider.make_span("GET /", trace.INVALID_SPAN, 2, {}, ("takealook.agent", "test"))
    token = attach(root)
    try:
        cursor.fail = True
        with pytest.raises(ValueError):
            execute(cursor, "INSERT INTO t VALUES (%s, 'secret')", (1,))
        cursor.fail = False
        execute(cursor, "INSERT INTO t VALUES (%s, 'secret')", (1,))
        for i in range(dbapi._STATEMENTS_MAX + 10):  # noqa: SLF001
            execute(cursor, f"SELECT {i} FROM t")
    finally:
        detach(token)
    failed, succeeded = provider.ended[:2]
    assert failed.attributes["error.type"] == "ValueError" and "error.type" not in succeeded.attributes
    assert succeeded.attributes == {"db.system": "postgresql", "db.system.name": "postgresql",
                                    "db.query.text": "INSERT INTO t VALUES (%s, %s)", "db.namespace": "shop",
                                    "db.operation.name": "INSERT", "server.address": "db.internal",
                                    "server.port": 5432}
    assert succeeded.name == "INSERT shop" and succeeded.attributes is not failed.attributes
    assert len(dbapi._statements) <= dbapi._STATEMENTS_MAX  # noqa: SLF001


def test_outgoing_headers_are_copied_from_requests_store_and_left_unchanged(provider):
    """requests' CaseInsensitiveDict is copied from its store (a Python mapping copied key by key costs
    thousands of instructions a call); the copy holds every header as the caller cased it, the caller's
    mapping never gets the trace context, and a plain dict or another mapping is copied as well."""
    from requests.structures import CaseInsensitiveDict

    from takealook.agent.instrument import http_clients

    span = provider.make_span("GET", trace.INVALID_SPAN, 3, {}, ("t", ""))
    for headers in (CaseInsensitiveDict({"User-Agent": "app/1", "X-Tenant": "acme"}),) * 2 + (
            {"Accept": "*/*"}, type("Headers", (dict,), {})({"Accept": "*/*"}), None):
        before = dict(headers or {})
        carrier = http_clients._headers_with_context(headers, span)
        assert carrier == {**before, "traceparent": f"00-{span.trace_id:032x}-{span.span_id:016x}-01"}
        assert type(carrier) is dict and dict(headers or {}) == before and "traceparent" not in (headers or {})
    assert http_clients._caseless is CaseInsensitiveDict  # found and checked once, then copied from its store
