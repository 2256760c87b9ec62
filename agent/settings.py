"""The agent's settings: read once, from defaults < environment < ``start()`` arguments.

Standard OpenTelemetry variables win where they exist; takealook's own are
few. Every variable the agent reads is named here and nowhere else.

OpenTelemetry variables honoured:
  OTEL_SDK_DISABLED                       "true" turns the agent off
  OTEL_SERVICE_NAME                       service.name (else takealook-run --service, else the program name)
  OTEL_RESOURCE_ATTRIBUTES                k=v,k=v added to the resource
  OTEL_EXPORTER_OTLP_ENDPOINT             base URL; /v1/traces and /v1/metrics are appended
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT      full URL for spans
  OTEL_EXPORTER_OTLP_METRICS_ENDPOINT     full URL for metrics
  OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION, _CERTIFICATE   passed to the OTLP exporter
  OTEL_EXPORTER_OTLP_PROTOCOL             only http/protobuf is supported (others: a warning)
  OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG   always_on, always_off, traceidratio, parentbased_*
  OTEL_TRACES_EXPORTER, OTEL_METRICS_EXPORTER    "none" turns that signal's export off
  OTEL_METRIC_EXPORT_INTERVAL             milliseconds between metric exports (default 60000)
  OTEL_PROPAGATORS                        as OpenTelemetry reads it (default tracecontext,baggage)
  OTEL_SEMCONV_STABILITY_OPT_IN           "http/dup" / "database/dup" also emit the old attribute names

takealook's own:
  TAKEALOOK_RESPONSE_HEADERS   "true": add Server-Timing and traceresponse headers to responses
  TAKEALOOK_SQLCOMMENTER       "true": append /*traceparent='...'*/ to SQL (off by default: every
                               statement text becomes unique, which defeats prepared-statement caches,
                               pgbouncer's statement reuse and pg_stat_statements' grouping by text)
  TAKEALOOK_EXPORT             "process" (default: a helper process encodes and sends, off the app's
                               CPU and GIL) or "thread" (in-process background thread)
  TAKEALOOK_DISABLED_INSTRUMENTATIONS   comma list of ours or contrib ones, e.g. "httpx,logging,redis"
  TAKEALOOK_MAX_QUEUE          spans held for export at most (default 20000); beyond, dropped and counted
  TAKEALOOK_RECORD_QUERY_VALUES    which query-string values are recorded (``redact`` has the rules):
                               unset: numbers and paging/sorting words; "all": every value but
                               secret-looking ones; "none": no value; "q,status": those names' values too
  TAKEALOOK_RECORD_PATH_VALUES     which path segments are recorded: unset: ids, the routes' own words and
                               page slugs under catch-all routes; "all": paths whole; "ids": ids and
                               route words only; "sku,slug": those route parameters' values too
  TAKEALOOK_RECORD_USER_AGENT  "true": record the User-Agent header (user_agent.original); off by default
  TAKEALOOK_RECORD_CLIENT_ADDRESS  client.address: unset ("network"): a public address cut to its /24
                               (IPv6 /48), a private one (a proxy, a router) whole; "full"; "off"
"""

from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass, field, replace
from typing import Mapping, Optional
from urllib.parse import urlsplit

log = logging.getLogger("takealook.agent")

DEFAULT_ENDPOINT = "http://127.0.0.1:4318"
INSTRUMENTATIONS = ("wsgi", "asgi", "flask", "django", "psycopg2", "psycopg", "urllib3", "httpx", "urllib", "logging")
SAMPLERS = ("always_on", "always_off", "traceidratio", "parentbased_always_on",
            "parentbased_always_off", "parentbased_traceidratio")


def _truthy(value: Optional[str]) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class AgentSettings:
    enabled: bool = True
    service_name: str = ""
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    traces_endpoint: str = DEFAULT_ENDPOINT + "/v1/traces"
    metrics_endpoint: str = DEFAULT_ENDPOINT + "/v1/metrics"
    export_traces: bool = True
    export_metrics: bool = True
    sampler: str = "parentbased_always_on"
    sampler_arg: float = 1.0
    metric_interval_s: float = 60.0
    response_headers: bool = False
    sqlcommenter: bool = False
    export_mode: str = "process"
    disabled: frozenset = frozenset()
    max_queue: int = 20000
    old_http_names: bool = False
    old_db_names: bool = False
    record_query_values: str = "default"  # default | all | none
    record_query_names: frozenset = frozenset()
    record_path_values: str = "default"  # default | all
    record_path_names: frozenset = frozenset()
    record_user_agent: bool = False
    record_client_address: str = "network"  # network | full | off

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides) -> "AgentSettings":
        """Build settings from the environment, then apply ``start()``'s keyword arguments."""
        env = os.environ if environ is None else environ
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip().rstrip("/")
        base = _checked_url(base, "OTEL_EXPORTER_OTLP_ENDPOINT") if base else ""
        settings = cls(
            enabled=not _truthy(env.get("OTEL_SDK_DISABLED")),
            service_name=env.get("OTEL_SERVICE_NAME", "").strip(),
            resource_attributes=_parse_pairs(env.get("OTEL_RESOURCE_ATTRIBUTES", ""), "OTEL_RESOURCE_ATTRIBUTES"),
            traces_endpoint=_endpoint(env, base, "TRACES", "/v1/traces"),
            metrics_endpoint=_endpoint(env, base, "METRICS", "/v1/metrics"),
            export_traces=env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() != "none",
            export_metrics=env.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower() != "none",
            sampler=_sampler(env),
            sampler_arg=_sampler_arg(env),
            metric_interval_s=_interval(env),
            response_headers=_truthy(env.get("TAKEALOOK_RESPONSE_HEADERS")),
            sqlcommenter=_truthy(env.get("TAKEALOOK_SQLCOMMENTER")),
            export_mode=_export_mode(env),
            disabled=_disabled(env),
            max_queue=_positive_int(env, "TAKEALOOK_MAX_QUEUE", 20000),
            old_http_names="http/dup" in env.get("OTEL_SEMCONV_STABILITY_OPT_IN", ""),
            old_db_names="database/dup" in env.get("OTEL_SEMCONV_STABILITY_OPT_IN", ""),
            record_user_agent=_truthy(env.get("TAKEALOOK_RECORD_USER_AGENT")),
            record_client_address=_client_address_mode(env),
        )
        query_mode, query_names = _record_values(env, "TAKEALOOK_RECORD_QUERY_VALUES", ("all", "none"))
        path_mode, path_names = _record_values(env, "TAKEALOOK_RECORD_PATH_VALUES", ("all", "ids"))
        settings = replace(settings, record_query_values=query_mode, record_query_names=query_names,
                           record_path_values=path_mode, record_path_names=path_names)
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        if protocol and protocol.strip() != "http/protobuf":
            log.warning("takealook: OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported; using http/protobuf", protocol)
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if "endpoint" in overrides:
            base = _checked_url(overrides.pop("endpoint").rstrip("/"), "endpoint")
            if base:
                overrides["traces_endpoint"] = base + "/v1/traces"
                overrides["metrics_endpoint"] = base + "/v1/metrics"
        unknown = set(overrides) - set(cls.__dataclass_fields__)
        if unknown:
            raise TypeError(f"takealook.agent.start() got unknown settings: {', '.join(sorted(unknown))}")
        settings = replace(settings, **overrides)
        if not settings.service_name:
            settings = replace(settings, service_name=settings.resource_attributes.get("service.name")
                               or _program_name())
        return settings


def _program_name() -> str:
    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if argv0 in ("", "-c", "-m", "manage.py", "__main__.py"):
        return "unknown_service:python" if argv0 != "manage.py" else "unknown_service:django"
    return f"unknown_service:{argv0}"


def _parse_pairs(text: str, name: str) -> dict[str, str]:
    """``k=v,k=v`` as the OpenTelemetry spec writes it (values may be percent-encoded)."""
    from urllib.parse import unquote

    pairs = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            log.warning("takealook: ignoring %r in %s (expected key=value)", item, name)
            continue
        pairs[key.strip()] = unquote(value.strip())
    return pairs


def _checked_url(url: str, name: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        log.warning("takealook: %s=%r is not an http(s) URL; using %s", name, url, DEFAULT_ENDPOINT)
        return ""
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        log.warning("takealook: %s=%r has a malformed port; using %s", name, url, DEFAULT_ENDPOINT)
        return ""
    return url


def _endpoint(env: Mapping[str, str], base: str, signal: str, path: str) -> str:
    """The signal's own URL if valid, else the (checked) base URL plus the signal's path."""
    specific = env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", "").strip()
    if specific and _checked_url(specific, f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"):
        return specific
    return (base or DEFAULT_ENDPOINT) + path


def _sampler(env: Mapping[str, str]) -> str:
    name = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    if name not in SAMPLERS:
        log.warning("takealook: unknown OTEL_TRACES_SAMPLER=%r (known: %s); using parentbased_always_on",
                    name, ", ".join(SAMPLERS))
        return "parentbased_always_on"
    return name


def _sampler_arg(env: Mapping[str, str]) -> float:
    raw = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if not raw:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        log.warning("takealook: OTEL_TRACES_SAMPLER_ARG=%r is not a ratio between 0 and 1; using 1.0", raw)
        return 1.0
    return value


def _interval(env: Mapping[str, str]) -> float:
    return _positive_int(env, "OTEL_METRIC_EXPORT_INTERVAL", 60000) / 1000.0


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
        if value > 0:
            return value
    except ValueError:
        pass
    log.warning("takealook: %s=%r is not a positive integer; using %d", name, raw, default)
    return default


def _export_mode(env: Mapping[str, str]) -> str:
    mode = env.get("TAKEALOOK_EXPORT", "process").strip().lower() or "process"
    if mode not in ("process", "thread"):
        log.warning("takealook: TAKEALOOK_EXPORT=%r is not process or thread; using process", mode)
        return "process"
    return mode


def _client_address_mode(env: Mapping[str, str]) -> str:
    mode = env.get("TAKEALOOK_RECORD_CLIENT_ADDRESS", "").strip().lower() or "network"
    if mode not in ("network", "full", "off"):
        log.warning("takealook: TAKEALOOK_RECORD_CLIENT_ADDRESS=%r is not network, full or off; using network", mode)
        return "network"
    return mode


_VALUE_NAME = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,64}")


def _record_values(env: Mapping[str, str], name: str, modes: tuple) -> tuple:
    """(mode, names): a mode word, or a comma list of names whose values are recorded too."""
    raw = env.get(name, "").strip()
    if not raw or raw.lower() == "default":
        return "default", frozenset()
    if raw.lower() in modes:
        return raw.lower(), frozenset()
    names = {n.strip().lower() for n in raw.split(",") if n.strip()}
    bad = sorted(n for n in names if not _VALUE_NAME.fullmatch(n) or n in modes)
    if bad:
        log.warning("takealook: ignoring %s in %s (expected %s or a comma list of parameter names)",
                    ", ".join(bad), name, " or ".join(modes))
    return "default", frozenset(names - set(bad))


def _disabled(env: Mapping[str, str]) -> frozenset:
    """Names of ours or of installed contrib instrumentations (their entry point names, e.g. redis)."""
    names = {n.strip().lower() for n in env.get("TAKEALOOK_DISABLED_INSTRUMENTATIONS", "").split(",") if n.strip()}
    unknown = names - set(INSTRUMENTATIONS)
    if unknown:  # only then is the installed packages' metadata read
        from takealook.agent.contrib import entry_points

        contrib = {entry_point.name for entry_point in entry_points()}
        unknown -= contrib
        if unknown:
            log.warning("takealook: unknown instrumentations in TAKEALOOK_DISABLED_INSTRUMENTATIONS: %s (known: %s)",
                        ", ".join(sorted(unknown)), ", ".join(sorted(set(INSTRUMENTATIONS) | contrib)))
    return frozenset(names - unknown)
