"""The control plane's own metrics (prometheus-client), named in the spirit of istiod's `pilot_*` metrics.

One `ControlPlaneMetrics` per control-plane process, on its own `CollectorRegistry` (so tests and several
replicas in one process do not collide). The control plane calls the small methods below from where things
happen (phase 2 wires them: ADS stream open/close, push sent, ACK/NACK, debounce merge, apply, registry
and store changes, REST middleware) and serves `exposition()` on :15014 `/metrics` and on the API socket.

Push latency is measured from the *change* (the config or registry commit that caused a push) to the ACK of
the proxy, per xDS type: the time a user waits for a change to be in force on a proxy.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

XDS_TYPES = ("CDS", "EDS", "LDS", "RDS", "SDS")
# seconds: pushes are expected in the 1 ms - 10 s range (debounce 0.1 s by default)
PUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class ControlPlaneMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry(auto_describe=True)
        self.proxies = Gauge("mizzen_xds_connected_proxies", "Proxies with an open ADS stream, by proxy kind "
                             "(sidecar, gateway, proxyless) and protocol (sotw, delta).", ["kind", "protocol"],
                             registry=r)
        self.pushes = Counter("mizzen_xds_pushes", "xDS responses sent, by type.", ["type"], registry=r)
        self.push_bytes = Counter("mizzen_xds_push_bytes", "Serialized bytes of xDS responses sent, by type.",
                                  ["type"], registry=r)
        self.push_latency = Histogram("mizzen_xds_push_latency_seconds", "Time from the change that caused a "
                                      "push to the proxy's ACK, by type.", ["type"], buckets=PUSH_BUCKETS,
                                      registry=r)
        self.acks = Counter("mizzen_xds_acks", "ACKs received, by type.", ["type"], registry=r)
        self.nacks = Counter("mizzen_xds_nacks", "NACKs received (Envoy rejected the config), by type.", ["type"],
                             registry=r)
        self.debounce_merges = Counter("mizzen_push_debounce_merges", "Changes merged into a push already "
                                       "waiting in the debounce window.", registry=r)
        self.push_triggers = Counter("mizzen_push_triggers", "Pushes started, by cause (config, registry, "
                                     "connect).", ["cause"], registry=r)
        self.applies = Counter("mizzen_config_applies", "Config applies, by result (applied, rejected, "
                               "conflict).", ["result"], registry=r)
        self.apply_latency = Histogram("mizzen_config_apply_seconds", "Time to validate and commit an apply.",
                                       buckets=API_BUCKETS, registry=r)
        self.rejections = Counter("mizzen_config_rejections", "Documents rejected at apply, by kind.", ["kind"],
                                  registry=r)
        self.registry_instances = Gauge("mizzen_registry_instances", "Instances in the registry, by health.",
                                        ["healthy"], registry=r)
        self.registry_services = Gauge("mizzen_registry_services", "Services known (Service and ServiceEntry "
                                       "hosts).", registry=r)
        self.store_revision = Gauge("mizzen_store_revision", "The config store's current revision.", registry=r)
        self.config_resources = Gauge("mizzen_config_resources", "Resources in the store, by kind.", ["kind"],
                                      registry=r)
        self.api_latency = Histogram("mizzen_api_request_duration_seconds", "REST API request latency, by "
                                     "method, route and status class.", ["method", "route", "code"],
                                     buckets=API_BUCKETS, registry=r)

    # ------------------------------------------------------------------ calls from the control plane
    def stream_opened(self, kind: str, protocol: str) -> None:
        self.proxies.labels(kind, protocol).inc()

    def stream_closed(self, kind: str, protocol: str) -> None:
        self.proxies.labels(kind, protocol).dec()

    def pushed(self, xds_type: str, nbytes: int) -> None:
        self.pushes.labels(xds_type).inc()
        self.push_bytes.labels(xds_type).inc(nbytes)

    def acked(self, xds_type: str, since_change_seconds: float | None) -> None:
        self.acks.labels(xds_type).inc()
        if since_change_seconds is not None:
            self.push_latency.labels(xds_type).observe(max(since_change_seconds, 0.0))

    def nacked(self, xds_type: str) -> None:
        self.nacks.labels(xds_type).inc()

    def applied(self, result: str, seconds: float, rejected_kinds: tuple[str, ...] = ()) -> None:
        self.applies.labels(result).inc()
        self.apply_latency.observe(seconds)
        for k in rejected_kinds:
            self.rejections.labels(k).inc()

    def registry_size(self, healthy: int, unhealthy: int, services: int) -> None:
        self.registry_instances.labels("true").set(healthy)
        self.registry_instances.labels("false").set(unhealthy)
        self.registry_services.set(services)

    def store_changed(self, revision: int, counts_by_kind: dict[str, int]) -> None:
        self.store_revision.set(revision)
        for kind, n in counts_by_kind.items():
            self.config_resources.labels(kind).set(n)

    def api_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """`route` is the matched route pattern (e.g. `/api/v1/resources/{kind}`), never the raw path."""
        self.api_latency.labels(method, route, f"{status // 100}xx").observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) for a `/metrics` handler."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
