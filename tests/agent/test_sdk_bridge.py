"""An app that set up OpenTelemetry's SDK itself: its spans leave through takealook, under takealook's policy.

The app (a process of its own, as in production) makes its own ``TracerProvider`` before
``takealook.agent.start()``; the agent then adds its bridge to that provider instead of replacing it.
A contrib instrumentation's span (SQLAlchemy's scope, a statement with a literal, a URL with a password and
a token) and an app span that fails with a message holding a user's name and email go out: the contrib
span's attributes scrubbed as ours are, the failure's status, message and stack trace without the values,
the app's own attributes as the app set them.
"""

from __future__ import annotations

import subprocess
import sys

from tests.agent.conftest import ROOT
from tests.agent.otlp_sink import OtlpSink

APP = r"""
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

trace.set_tracer_provider(TracerProvider())  # the app's own, set up before takealook starts

import takealook.agent

assert takealook.agent.start()
contrib = trace.get_tracer("opentelemetry.instrumentation.sqlalchemy", "0.48b0")
with contrib.start_as_current_span("SELECT shop", kind=trace.SpanKind.CLIENT) as span:
    span.set_attribute("db.system", "postgresql")
    span.set_attribute("db.statement", "SELECT id FROM users WHERE email = 'ann@example.org' AND pin = 4321")
    span.set_attribute("url.full", "http://svc:hunter2@crm.internal/users/ann/7?token=s3cr3t&page=2")
    span.set_attribute("http.request.header.authorization", ("Bearer s3cr3t",))
app = trace.get_tracer("shop.views")
try:
    with app.start_as_current_span("checkout") as span:
        span.set_attribute("shop.cart_items", 3)
        raise LookupError("no user 'ann' with email ann@example.org")
except LookupError:
    pass
takealook.agent.shutdown()
"""
SECRETS = ("ann@example.org", "'ann'", "hunter2", "s3cr3t", "4321")


def test_the_apps_own_provider_exports_through_takealook_without_values(tmp_path):
    with OtlpSink() as sink:
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "OTEL_SERVICE_NAME": "shop",
               "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "HOME": str(tmp_path)}
        out = subprocess.run([sys.executable, "-c", APP], env=env, capture_output=True, text=True, timeout=60,
                             cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        spans = sink.wait_for_spans(lambda found: {"SELECT shop", "checkout"} <= {s["name"] for s in found})
    by_name = {s["name"]: s for s in spans}
    query, checkout = by_name["SELECT shop"], by_name["checkout"]
    assert query["scope"] == "opentelemetry.instrumentation.sqlalchemy" and query["service"] == "shop"
    assert query["attributes"]["db.statement"] == "SELECT id FROM users WHERE email = %s AND pin = %s"
    assert query["attributes"]["url.full"] == "http://crm.internal/REDACTED/REDACTED/7?token=REDACTED&page=2"
    assert "http.request.header.authorization" not in query["attributes"]
    assert checkout["attributes"] == {"shop.cart_items": 3}  # the app's own attributes, as it set them
    assert checkout["status"] == 2 and checkout["status_message"].startswith("LookupError: no user '?' with email ?")
    (event,) = checkout["events"]
    assert event["name"] == "exception" and event["attributes"]["exception.type"] == "LookupError"
    assert event["attributes"]["exception.message"] == "no user '?' with email ?"
    assert 'File "<string>", line ' in event["attributes"]["exception.stacktrace"]
    text = repr(spans)
    assert not [secret for secret in SECRETS if secret in text], [secret for secret in SECRETS if secret in text]
