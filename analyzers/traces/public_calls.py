"""Calls between the user's own services that leave over a public address.

Apps on a PaaS often call each other by their public URLs
(``https://orders-api.herokuapp.com``): every call then goes out to the
internet, through the platform's router and TLS, and back, where a private
network would take a fraction of that.

"Own services" are learnt from the traces themselves: a host is one of the
user's services when some client span calling it has, as its child, the
server span of a service in the store. A call to such a host is flagged when
the host is public: a PaaS domain (``*.herokuapp.com`` and the like), a public
IP address, or any other DNS name outside private suffixes (``.internal``,
``.local``, ``.svc``...; names without a dot are private too). The cost per
request is the calls' time outside the callee's server span (network, TLS,
router); ``impact_ms_per_min`` is that cost per minute of the endpoint's
traffic.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional

from takealook.analyzers.traces.stats import TopSlowest, merge_into, ms, ratio, rekey
from takealook.analyzers.traces.trace import TraceView, host_of, scheme_of

PAAS_SUFFIXES = (
    "herokuapp.com", "herokudns.com", "onrender.com", "fly.dev", "railway.app", "azurewebsites.net",
    "appspot.com", "run.app", "vercel.app", "netlify.app", "elasticbeanstalk.com", "amazonaws.com",
    "ondigitalocean.app", "pythonanywhere.com", "scalingo.io", "cleverapps.io",
)
PRIVATE_SUFFIXES = (
    ".internal", ".local", ".localhost", ".localdomain", ".lan", ".home.arpa", ".svc", ".cluster.local",
    ".consul", ".intranet", ".corp", ".test", ".example", ".invalid", ".private",
)

# Where a server span says which host it was called by (new and old semantic conventions).
SERVER_HOST_ATTRIBUTES = ("server.address", "http.host", "net.host.name")
SERVER_HOST_SAMPLES = 50  # per service: hosts are few, and parsing every span's attributes is costly


@dataclass(frozen=True)
class PublicAddressCall:
    kind: str
    service: str  # the caller
    endpoint: str
    endpoint_service: str
    callee_service: str
    host: str
    reason: str
    calls_per_request: float  # in the requests that make such calls
    time_ms_per_request: float  # the calls' whole time
    overhead_ms_per_request: float  # the calls' time outside the callee's server span
    occurrences: int
    affected_share: float
    impact_ms_per_min: float
    trace_ids: tuple[str, ...]


def public_reason(host: str, scheme: Optional[str]) -> Optional[str]:
    """Why a host is a public address, or None when it is private (loopback, RFC 1918, internal names)."""
    host = host.strip("[]").rstrip(".").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        return "a public IP address" if address.is_global else None
    if "." not in host or host == "localhost" or host.endswith(PRIVATE_SUFFIXES):
        return None
    for suffix in PAAS_SUFFIXES:
        if host == suffix or host.endswith("." + suffix):
            return f"a public {suffix} URL"
    return "TLS to a public host name" if scheme == "https" else "a public host name"


class PublicCallAggregator:
    """Collects candidate calls per trace; decides which hosts are own services at the end."""

    def __init__(self, evidence: int):
        self.evidence = evidence
        self.own_hosts: dict[str, str] = {}  # host -> the service that answered there
        self.groups: dict[tuple, dict] = {}
        self._reasons: dict[tuple[str, Optional[str]], Optional[str]] = {}
        self._server_hosts_seen: dict[str, int] = {}

    def add(self, view: TraceView) -> None:
        entry = view.entry
        per_trace: dict[tuple, list[int]] = {}
        seen = self._server_hosts_seen
        for span in view.servers:
            if seen.get(span.service, 0) < SERVER_HOST_SAMPLES:
                self._learn_server_host(span)
        for span in view.calls:
            host = host_of(span)
            if not host:
                continue
            server = view.server_child(span)
            if server is not None and server.service != span.service:
                self.own_hosts.setdefault(host, server.service)
            if entry is None:
                continue
            scheme = scheme_of(span)
            reason = self._reasons.get((host, scheme), "?")
            if reason == "?":
                reason = self._reasons[(host, scheme)] = public_reason(host, scheme)
            if reason is None:
                continue
            overhead = span.duration_ns - (min(server.duration_ns, span.duration_ns) if server else 0)
            tally = per_trace.setdefault((entry.key, span.service, host, reason), [0, 0, 0])
            tally[0] += 1
            tally[1] += span.duration_ns
            tally[2] += overhead
        for key, (calls, time_ns, overhead_ns) in per_trace.items():
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = {"calls": 0, "time": 0, "overhead": 0, "traces": 0,
                                            "top": TopSlowest(self.evidence)}
            group["calls"] += calls
            group["time"] += time_ns
            group["overhead"] += overhead_ns
            group["traces"] += 1
            group["top"].add(overhead_ns, view.trace_id)

    def _learn_server_host(self, span) -> None:
        """The host a server span was called by (its Host header), for the first few spans of each service."""
        self._server_hosts_seen[span.service] = self._server_hosts_seen.get(span.service, 0) + 1
        # Not span.server_address: the store fills it from the old convention's net.peer.name too,
        # which on a server span is the caller, not the host called.
        attributes = span.attributes()
        host = next((attributes[k] for k in SERVER_HOST_ATTRIBUTES if isinstance(attributes.get(k), str)), None)
        if host:
            host = host.strip().lower()
            if host.startswith("[") and "]" in host:  # [::1]:8000
                host = host[1:host.index("]")]
            elif host.count(":") == 1:  # host:port
                host = host.split(":", 1)[0]
            self.own_hosts.setdefault(host, span.service)

    def merge(self, other: "PublicCallAggregator") -> None:
        for host, service in other.own_hosts.items():
            self.own_hosts.setdefault(host, service)
        merge_into(self.groups, other.groups)
        merge_into(self._server_hosts_seen, other._server_hosts_seen)

    def rekey(self, fold) -> None:
        self.groups = rekey(self.groups, fold)

    def findings(self, endpoints: dict) -> list[PublicAddressCall]:
        out = []
        for (entry_key, service, host, reason), group in self.groups.items():
            callee = self.own_hosts.get(host)
            stats = endpoints.get(entry_key)
            if callee is None or stats is None:
                continue  # a third-party API, not one of the user's services
            n = group["traces"]
            out.append(PublicAddressCall(
                kind="public_address_call", service=service, endpoint=stats.endpoint,
                endpoint_service=stats.service, callee_service=callee, host=host, reason=reason,
                calls_per_request=round(group["calls"] / n, 2), time_ms_per_request=ms(group["time"] / n),
                overhead_ms_per_request=ms(group["overhead"] / n), occurrences=n,
                affected_share=ratio(n, stats.requests),
                impact_ms_per_min=round(group["overhead"] / 1e6 / stats.requests * stats.requests_per_min, 3),
                trace_ids=group["top"].ids(),
            ))
        return out
