"""otel-collector.yaml: well-formed, every pipeline references defined components of types the
contrib distribution has, and the sampling and export choices the docs promise are there.

``otelcol-contrib`` itself is not available here (no binary, no container), so this parses the
file; ``otelcol-contrib validate --config otel-collector.yaml`` is the full check where it is.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "otel-collector.yaml"

# Component types of otelcol-contrib, from opentelemetry-collector-releases
# distributions/otelcol-contrib/manifest.yaml (components at v0.136.0). The
# types that module names map to; a subset of the receivers.
CONTRIB_VERSION = "0.136.0"
CONTRIB_TYPES = {
    "receivers": {
        "otlp", "nop", "jaeger", "zipkin", "prometheus", "filelog", "hostmetrics", "kafka", "otlpjsonfile",
        "postgresql", "statsd", "syslog", "k8s_cluster", "kubeletstats", "docker_stats", "httpcheck", "redis",
        "sqlquery", "journald", "fluentforward", "otelarrow", "receiver_creator", "awsxray", "datadog",
    },
    "processors": {
        "batch", "memory_limiter", "attributes", "cumulativetodelta", "deltatocumulative", "deltatorate",
        "filter", "geoip", "groupbyattrs", "groupbytrace", "interval", "k8sattributes", "logdedup",
        "metricsgeneration", "metricstransform", "probabilistic_sampler", "redaction", "remotetap",
        "resourcedetection", "resource", "schema", "span", "tail_sampling", "transform",
    },
    "exporters": {
        "debug", "nop", "otlp", "otlphttp", "file", "loadbalancing", "kafka", "prometheus",
        "prometheusremotewrite", "zipkin", "elasticsearch", "clickhouse", "awss3", "awsxray", "datadog",
        "googlecloud", "otelarrow", "splunk_hec", "sentry", "syslog", "opensearch", "influxdb",
    },
    "extensions": {
        "zpages", "health_check", "pprof", "file_storage", "db_storage", "basicauth", "bearertokenauth",
        "oauth2client", "oidc", "headers_setter", "opamp", "sigv4auth", "docker_observer", "host_observer",
        "k8s_observer", "ecs_observer", "jaegerremotesampling", "http_forwarder",
    },
    "connectors": {"forward", "count", "exceptions", "failover", "routing", "servicegraph", "spanmetrics",
                   "roundrobin", "sum", "signaltometrics"},
}
KINDS = ("receivers", "processors", "exporters", "connectors")
_ENV = re.compile(r"\$\{env:([A-Z0-9_]+)(?::-([^}]*))?\}")


def _expand(text: str) -> str:
    """Resolve ${env:NAME:-default} to its default, as the Collector does with NAME unset."""
    return _ENV.sub(lambda m: m.group(2) if m.group(2) is not None else "", text)


def _main() -> dict:
    return yaml.safe_load(_expand(CONFIG.read_text()))


def _tier(name: str) -> dict:
    text = CONFIG.read_text()
    block = text.split(f"# BEGIN {name}\n", 1)[1].split(f"# END {name}", 1)[0]
    lines = [line[2:] if line.startswith("# ") else line.lstrip("#") for line in block.splitlines()]
    return yaml.safe_load(_expand("\n".join(lines)))


def _agent_tier() -> dict:
    return _tier("agent-tier")


def _clickhouse_tier() -> dict:
    return _tier("clickhouse-tier")


def _type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


@pytest.mark.parametrize("load", [_main, _agent_tier, _clickhouse_tier],
                         ids=["sampling-tier", "agent-tier", "clickhouse-tier"])
def test_pipelines_reference_defined_components_of_contrib_types(load):
    config = load()
    for kind in (*KINDS, "extensions"):
        for component_id in config.get(kind) or {}:
            assert _type(component_id) in CONTRIB_TYPES[kind], (
                f"{kind}: {component_id!r} is not in otelcol-contrib {CONTRIB_VERSION}")
    service = config["service"]
    for extension in service.get("extensions", []):
        assert extension in config["extensions"], extension
    assert service["pipelines"]
    for name, pipeline in service["pipelines"].items():
        assert _type(name) in ("traces", "metrics", "logs"), name
        assert pipeline["receivers"] and pipeline["exporters"], name
        for kind in ("receivers", "processors", "exporters"):
            for component_id in pipeline.get(kind, []):
                assert component_id in (config.get(kind) or {}), f"pipeline {name} uses undefined {component_id}"
        processors = pipeline.get("processors", [])
        assert processors[0] == "memory_limiter" and processors[-1] == "batch", name
    used = {c for p in service["pipelines"].values() for kind in ("receivers", "processors", "exporters")
            for c in p.get(kind, [])}
    defined = {c for kind in ("receivers", "processors", "exporters") for c in (config.get(kind) or {})}
    assert defined - used == set(), "components defined but never used"


def test_sampling_tier_keeps_errors_and_slow_traces_and_exports_to_takealook_and_files():
    config = _main()
    otlp = config["receivers"]["otlp"]["protocols"]
    assert otlp["grpc"]["endpoint"].endswith(":4317") and otlp["http"]["endpoint"].endswith(":4318")
    assert otlp["http"]["cors"]["allowed_origins"]
    policies = {p["type"]: p for p in config["processors"]["tail_sampling"]["policies"]}
    assert policies["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    assert policies["latency"]["latency"]["threshold_ms"] > 0
    assert 0 < policies["probabilistic"]["probabilistic"]["sampling_percentage"] < 100
    traces = config["service"]["pipelines"]["traces"]
    assert traces["processors"].index("tail_sampling") < traces["processors"].index("batch")
    takealook = config["exporters"]["otlphttp/takealook"]
    # The documented `takealook collect --listen 127.0.0.1:14318` is where it sends.
    assert takealook["endpoint"] == "http://127.0.0.1:14318"
    assert "takealook collect --listen 127.0.0.1:14318" in CONFIG.read_text()
    assert takealook["sending_queue"]["storage"] in config["extensions"]
    assert config["exporters"]["file/traces"]["format"] == "json"
    assert config["exporters"]["file/traces"]["rotation"]["max_backups"] > 0
    assert set(traces["exporters"]) == {"otlphttp/takealook", "file/traces"}


def test_agent_tier_routes_by_trace_id():
    config = _agent_tier()
    balancer = config["exporters"]["loadbalancing"]
    assert balancer["routing_key"] == "traceID"
    assert balancer["resolver"]["dns"]["hostname"]
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["loadbalancing"]


def test_clickhouse_tier_writes_the_table_takealook_reads_and_drops_old_spans():
    from takealook.collector import parse_store

    config = _clickhouse_tier()
    exporter = config["exporters"]["clickhouse"]
    assert exporter["endpoint"].startswith("tcp://127.0.0.1:9000")
    hours = re.fullmatch(r"(\d+)h", exporter["ttl"])
    assert hours and int(hours.group(1)) >= 24  # a TTL: the table does not grow forever
    assert exporter["create_schema"] is True and exporter["sending_queue"]["storage"] in config["extensions"]
    pipelines = config["service"]["pipelines"]
    assert pipelines["traces"]["exporters"] == ["clickhouse"]
    assert "tail_sampling" not in pipelines["traces"]["processors"]  # reports sample at read time
    # The --store URL the comment shows reads the table this exporter writes.
    shown = re.search(r"--store (clickhouse://\S+)", CONFIG.read_text()).group(1)
    url = parse_store(shown)
    assert (url.database, url.table) == (exporter["database"], exporter["traces_table_name"])
