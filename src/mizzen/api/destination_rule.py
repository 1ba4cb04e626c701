"""Istio DestinationRule (networking.istio.io): every field of Istio's schema, with Istio's validation rules
(pkg/config/validation: validateTrafficPolicy, validateConnectionPool, validateLoadBalancer, ValidateTLS, ...),
plus Mizzen's `healthCheck` extension (active health checking; not in Istio).

Fields Mizzen accepts but does not translate are listed in api/effects.py; `mizzen analyze` reports them.
"""
from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import Spec
from .duration import Duration, ZeroOkDuration, duration_type
from .fields import (At, NonNegInt32, Number, Percent0to100, Port, UInt32, check_export_to, check_fqdn,
                     check_labels, check_selector_labels, check_wildcard_domain, is_dns1123_label, is_ip, show)
from .client_tls import ClientTLSSettings
from .networking import PortSelector

LbSimple = Literal["UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"]
# keepalive times become whole seconds in a uint32 (Envoy's TcpKeepalive)
KeepaliveDuration = duration_type(maximum_ns=(2**32 - 1) * 10**9)
TOPOLOGY_LABELS = ("topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone")


def _one_of(obj: Spec, names: tuple[str, ...], what: str, required: bool = True) -> None:
    n = sum(getattr(obj, x) is not None for x in names)
    if n > 1 or (required and n == 0):
        camel = ", ".join(type(obj).model_fields[x].alias or x for x in names)
        raise ValueError(f"{what}: exactly one of {camel} must be set" if required else
                         f"{what}: at most one of {camel} may be set")


# ---------------------------------------------------------------- load balancing

class HTTPCookieAttribute(Spec):
    name: str
    value: str | None = None


class HTTPCookie(Spec):
    name: str = Field(min_length=1)
    path: str | None = None
    ttl: ZeroOkDuration | None = None  # 0s: a session cookie
    attributes: list[HTTPCookieAttribute] = Field(default_factory=list)

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, v: list[HTTPCookieAttribute]) -> list[HTTPCookieAttribute]:
        seen: set[str] = set()
        for i, a in enumerate(v):
            if not a.name:
                raise At(f"[{i}].name", "cookie attribute name cannot be empty")
            if a.name in seen:
                raise At(f"[{i}].name", f"duplicate cookie attribute name: {show(a.name)}")
            seen.add(a.name)
        return v


class RingHash(Spec):
    minimum_ring_size: int | None = Field(default=None, ge=0, le=8388608)


def _is_prime(n: int) -> bool:
    """Envoy's (and Istio's) isPrime: 1, 2 and 3 count as prime."""
    if 0 < n < 4:
        return True
    if n % 2 == 0:
        return False
    return all(n % f for f in range(3, math.isqrt(n) + 1, 2))


class MagLev(Spec):
    table_size: int | None = Field(default=None, ge=0)

    @field_validator("table_size")
    @classmethod
    def _prime(cls, v: int | None) -> int | None:
        if v is None or v == 0:
            raise ValueError("tableSize must be set for maglev")
        if v >= 5000011:
            raise ValueError("tableSize must be less than 5000011 for maglev")
        if not _is_prime(v):
            raise ValueError(f"tableSize {v} must be a prime number (e.g. 65537)")
        return v


class ConsistentHashLB(Spec):
    http_header_name: str | None = Field(default=None, min_length=1)
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = Field(default=None, min_length=1)
    ring_hash: RingHash | None = None
    maglev: MagLev | None = None
    minimum_ring_size: int | None = Field(default=None, ge=0, le=8388608)  # deprecated by Istio: ringHash

    @model_validator(mode="after")
    def _one(self) -> "ConsistentHashLB":
        _one_of(self, ("http_header_name", "http_cookie", "use_source_ip", "http_query_parameter_name"),
                "consistentHash")
        if self.use_source_ip is False:
            raise ValueError("consistentHash: useSourceIp must be true when set")
        if self.minimum_ring_size and (self.ring_hash is not None or self.maglev is not None):
            raise ValueError("only one of minimumRingSize or maglev/ringHash can be specified")
        _one_of(self, ("ring_hash", "maglev"), "consistentHash", required=False)
        return self


def _check_localities(localities: list[str], where: str) -> None:
    """Istio's validateLocalities: one trailing '*' at most, no empty parts, no overlaps."""
    tree: dict[str, Any] = {}
    for loc in localities:
        if "*" in loc and (loc.count("*") > 1 or not loc.endswith("*")):
            raise ValueError(f"{where}: locality {show(loc)} wildcard '*' number can not exceed 1 and must be in "
                             "the end")
        if "*" in tree:
            raise ValueError(f"{where}: locality {show(loc)} overlaps with previous specified ones")
        parts = loc.split("/", 2)
        if any(p == "" for p in parts):
            raise ValueError(f"{where}: locality {show(loc)} must not contain empty region/zone/subzone info")
        node = tree
        for depth, p in enumerate(parts):
            if node.get("*") is True:
                raise ValueError(f"{where}: locality {show(loc)} overlaps with previous specified ones")
            last = depth == len(parts) - 1
            if last:
                if p in node:
                    raise ValueError(f"{where}: locality {show(loc)} overlaps with previous specified ones")
                node[p] = {"*": True} if depth < 2 else True
            else:
                node = node.setdefault(p, {})
                if node is True:
                    raise ValueError(f"{where}: locality {show(loc)} overlaps with previous specified ones")


class LocalityDistribute(Spec):
    from_: str = Field(alias="from", min_length=1)
    to: dict[str, UInt32] = Field(min_length=1)

    @model_validator(mode="after")
    def _weights(self) -> "LocalityDistribute":
        for k, w in self.to.items():
            if w <= 0 or w > 100:
                raise At(f"to[{k!r}]", f"locality weight {w} must be in range [1, 100]")
        total = sum(self.to.values())
        if total != 100:
            raise ValueError(f"distribute from {show(self.from_)}: total locality weight {total} != 100")
        _check_localities(list(self.to), "to")
        return self


class LocalityFailover(Spec):
    from_: str = Field(alias="from", min_length=1)
    to: str = Field(min_length=1)

    @model_validator(mode="after")
    def _differ(self) -> "LocalityFailover":
        if self.from_ == self.to:
            raise ValueError(f"failover from and to are the same region {show(self.to)}")
        if "/" in self.from_ or "/" in self.to:
            raise ValueError("failover from and to are regions (no '/')")
        if "*" in self.from_ or "*" in self.to:
            raise ValueError("failover region should not contain '*' wildcard")
        return self


class LocalityLbSetting(Spec):
    distribute: list[LocalityDistribute] = Field(default_factory=list)
    failover: list[LocalityFailover] = Field(default_factory=list)
    failover_priority: list[str] = Field(default_factory=list)
    enabled: bool | None = None

    @model_validator(mode="after")
    def _exclusive(self) -> "LocalityLbSetting":
        if self.distribute and self.failover:
            raise ValueError("localityLbSetting: can not simultaneously specify 'distribute' and 'failover'")
        if self.failover:
            for i, p in enumerate(self.failover_priority):
                if p in TOPOLOGY_LABELS:
                    raise At(f"failoverPriority[{i}]", f"can not simultaneously set 'failover' and topology label "
                                                       f"{show(p)} in 'failoverPriority'")
        _check_localities([d.from_ for d in self.distribute], "distribute")
        return self


class ZoneAwareLbSetting(Spec):
    enabled: bool | None = None
    failover: list[LocalityFailover] = Field(default_factory=list)
    failover_priority: list[str] = Field(default_factory=list)
    min_cluster_size: int | None = Field(default=None, ge=1, le=2**32 - 1)

    @field_validator("failover_priority")
    @classmethod
    def _labels(cls, v: list[str]) -> list[str]:
        for i, p in enumerate(v):
            if p in TOPOLOGY_LABELS:
                raise At(f"[{i}]", f"failoverPriority for zone aware lb must not use topology label {show(p)}; "
                                   "region- and zone-level routing are handled automatically")
        return v


class WarmupConfiguration(Spec):
    duration: Duration
    minimum_percent: Percent0to100 | None = None
    aggression: Number | None = None

    @field_validator("aggression")
    @classmethod
    def _aggression(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError("aggression should be greater than 0")
        return v


class BackendUtilization(Spec):
    error_utilization_penalty_percent: UInt32 | None = None
    metric_names_for_computing_utilization: list[str] = Field(default_factory=list)
    weight_expiration_period: Duration | None = None
    weight_stabilization_period: Duration | None = None
    weight_update_period: Duration | None = None


class LoadBalancerSettings(Spec):
    simple: LbSimple | None = None
    consistent_hash: ConsistentHashLB | None = None
    backend_utilization: BackendUtilization | None = None
    locality_lb_setting: LocalityLbSetting | None = None
    zone_aware_lb_setting: ZoneAwareLbSetting | None = None
    warmup_duration_secs: Duration | None = None
    warmup: WarmupConfiguration | None = None

    @model_validator(mode="after")
    def _one(self) -> "LoadBalancerSettings":
        n = sum(x is not None for x in (self.simple, self.consistent_hash, self.backend_utilization))
        if n > 1:
            raise ValueError("loadBalancer: only one of simple, consistentHash, backendUtilization may be set")
        if self.locality_lb_setting is not None and self.zone_aware_lb_setting is not None:
            raise ValueError("only one of localityLbSetting and zoneAwareLbSetting can be set")
        return self

    @property
    def warmup_window(self) -> str | None:
        """The slow-start window: `warmup.duration`, or the older `warmupDurationSecs`."""
        return self.warmup.duration if self.warmup is not None else self.warmup_duration_secs


# ---------------------------------------------------------------- connection pool, outlier detection

class TcpKeepalive(Spec):
    probes: UInt32 | None = None
    time: KeepaliveDuration | None = None
    interval: KeepaliveDuration | None = None


class TCPSettings(Spec):
    max_connections: NonNegInt32 | None = None
    connect_timeout: Duration | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: Duration | None = None
    idle_timeout: ZeroOkDuration | None = None  # 0s turns the idle timeout off

    @field_validator("idle_timeout")
    @classmethod
    def _idle(cls, v: str | None) -> str | None:
        from .duration import MILLISECOND, duration_ns

        if v is not None and 0 < duration_ns(v) < MILLISECOND:
            raise ValueError(f"idleTimeout {show(v)} must be 0s (off) or at least 1ms")
        return v


class HTTP2KeepAlive(Spec):
    interval: Duration | None = None
    timeout: Duration | None = None

    @model_validator(mode="after")
    def _both(self) -> "HTTP2KeepAlive":
        if self.interval is None:
            raise ValueError("http2 keepalive interval is required")
        if self.timeout is None:
            raise ValueError("http2 keepalive timeout is required")
        return self


class HTTPSettings(Spec):
    http1_max_pending_requests: NonNegInt32 | None = None
    http2_max_requests: NonNegInt32 | None = None
    max_requests_per_connection: NonNegInt32 | None = None
    max_retries: NonNegInt32 | None = None
    idle_timeout: Duration | None = None
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] | None = None
    use_client_protocol: bool | None = None
    max_concurrent_streams: NonNegInt32 | None = None
    http2_keep_alive: HTTP2KeepAlive | None = Field(default=None, alias="http2KeepAlive")

    @model_validator(mode="after")
    def _upgrade(self) -> "HTTPSettings":
        if self.h2_upgrade_policy == "UPGRADE" and self.use_client_protocol:
            raise ValueError("useClientProtocol must not be true when h2UpgradePolicy is UPGRADE")
        return self


class ConnectionPoolSettings(Spec):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(Spec):
    split_external_local_origin_errors: bool = False
    consecutive_local_origin_failures: UInt32 | None = None
    consecutive_gateway_errors: UInt32 | None = None
    consecutive_5xx_errors: UInt32 | None = Field(default=None, alias="consecutive5xxErrors")
    consecutive_errors: NonNegInt32 | None = None  # deprecated by Istio
    interval: Duration | None = None
    base_ejection_time: Duration | None = None
    max_ejection_percent: int | None = Field(default=None, ge=0, le=100)
    min_health_percent: int | None = Field(default=None, ge=0, le=100)
    outlier_detection_http_error_codes: list[int] = Field(default_factory=list)

    @field_validator("outlier_detection_http_error_codes")
    @classmethod
    def _codes(cls, v: list[int]) -> list[int]:
        for i, c in enumerate(v):
            if not 100 <= c <= 599:
                raise At(f"[{i}]", f"{c} is not an HTTP status code (100-599)")
        return v

    @model_validator(mode="after")
    def _local(self) -> "OutlierDetection":
        if self.consecutive_local_origin_failures and not self.split_external_local_origin_errors:
            raise ValueError("consecutiveLocalOriginFailures needs splitExternalLocalOriginErrors: true")
        return self


# ---------------------------------------------------------------- TLS, tunnel, proxy protocol

class TunnelSettings(Spec):
    protocol: str | None = None
    target_host: str
    target_port: UInt32

    @model_validator(mode="after")
    def _rules(self) -> "TunnelSettings":
        if self.protocol not in (None, "", "CONNECT", "POST"):
            raise ValueError('tunnel protocol must be "CONNECT" or "POST"')
        if not is_ip(self.target_host):
            try:
                check_fqdn(self.target_host)
            except ValueError as e:
                raise ValueError(f"tunnel target host must be a valid FQDN or IP address: {e}") from None
        if not 1 <= self.target_port <= 65535:
            raise ValueError(f"tunnel target port {self.target_port} must be in the range 1..65535")
        return self


class ProxyProtocol(Spec):
    version: Literal["V1", "V2"] | None = None


# ---------------------------------------------------------------- Mizzen's active health checks

class HealthCheckHttp(Spec):
    """Mizzen extension: an HTTP active health check (Envoy http_health_check)."""
    path: str = "/"
    host: str | None = None
    expected_statuses: list[int] = Field(default_factory=list)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or any(c in v for c in "\r\n\0"):
            raise ValueError(f"path {show(v)} must start with '/' and have no control characters")
        return v

    @field_validator("expected_statuses")
    @classmethod
    def _codes(cls, v: list[int]) -> list[int]:
        for c in v:
            if c < 100 or c > 599:
                raise ValueError(f"expected status {c} is not an HTTP status (100-599)")
        return v


class HealthCheckTcp(Spec):
    """Mizzen extension: a TCP connect health check."""


class HealthCheckGrpc(Spec):
    """Mizzen extension: a gRPC health check (grpc.health.v1.Health/Check)."""
    service_name: str = ""


class HealthCheck(Spec):
    """Mizzen extension (trafficPolicy.healthCheck): active health checking from the caller's sidecar."""
    http: HealthCheckHttp | None = None
    tcp: HealthCheckTcp | None = None
    grpc: HealthCheckGrpc | None = None
    interval: Duration = "10s"
    timeout: Duration = "1s"
    unhealthy_threshold: int = Field(default=3, ge=1, le=2**32 - 1)
    healthy_threshold: int = Field(default=1, ge=1, le=2**32 - 1)

    @model_validator(mode="after")
    def _one(self) -> "HealthCheck":
        _one_of(self, ("http", "tcp", "grpc"), "healthCheck")
        return self


class RetryBudget(Spec):
    """trafficPolicy.retryBudget (Istio; Mizzen had it first as an extension): active retries ≤ percent of
    active requests, never fewer than minRetryConcurrency."""
    percent: Percent0to100 = 20.0
    min_retry_concurrency: UInt32 = 3
    budget_interval: Duration | None = None


# ---------------------------------------------------------------- traffic policy

class _PolicyFields(Spec):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    health_check: HealthCheck | None = None  # Mizzen extension

    @field_validator("connection_pool")
    @classmethod
    def _pool(cls, v: ConnectionPoolSettings | None) -> ConnectionPoolSettings | None:
        if v is not None and v.tcp is None and v.http is None:
            raise ValueError("connection pool must have at least one field")
        return v


class PortTrafficPolicy(_PolicyFields):
    port: PortSelector | None = None
    retry_budget: RetryBudget | None = None  # Mizzen: also per port

    @model_validator(mode="after")
    def _some(self) -> "PortTrafficPolicy":
        if self.port is None:
            raise ValueError("portLevelSettings: every entry needs port.number")
        if all(x is None for x in (self.outlier_detection, self.connection_pool, self.load_balancer, self.tls,
                                   self.health_check, self.retry_budget)):
            raise ValueError("port traffic policy must have at least one field")
        return self


class TrafficPolicy(_PolicyFields):
    port_level_settings: list[PortTrafficPolicy] = Field(default_factory=list, max_length=4096)
    tunnel: TunnelSettings | None = None
    proxy_protocol: ProxyProtocol | None = None
    retry_budget: RetryBudget | None = None

    @model_validator(mode="after")
    def _ports(self) -> "TrafficPolicy":
        if all(x is None for x in (self.outlier_detection, self.connection_pool, self.load_balancer, self.tls,
                                   self.tunnel, self.proxy_protocol, self.retry_budget, self.health_check)) \
                and not self.port_level_settings:
            raise ValueError("traffic policy must have at least one field")
        if self.tunnel is not None and self.proxy_protocol is not None:
            raise ValueError("tunnel and proxyProtocol must not be set together")
        seen: set[int] = set()
        for i, pl in enumerate(self.port_level_settings):
            if pl.port is not None and pl.port.number in seen:
                raise At(f"portLevelSettings[{i}].port.number", f"port {pl.port.number} is listed twice")
            if pl.port is not None:
                seen.add(pl.port.number)
        return self


class Subset(Spec):
    name: str = Field(min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        # Istio wants a DNS label; Mizzen also takes dotted names (a Router's `<branch>-v1.0.1` subsets)
        if len(v) > 253 or not all(is_dns1123_label(p) for p in v.split(".")):
            raise ValueError(f"subset name {show(v)} is invalid: a DNS label (letters, digits, '-')")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        check_labels(v)
        return v


class WorkloadSelector(Spec):
    """A DestinationRule's (and Telemetry's) selector: `matchLabels`."""
    match_labels: dict[str, str] = Field(default_factory=dict, max_length=4096)

    @field_validator("match_labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        check_selector_labels(v)
        return v


class DestinationRuleSpec(Spec):
    host: str = Field(min_length=1)
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list)
    workload_selector: WorkloadSelector | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        check_wildcard_domain(v)
        return v

    @field_validator("subsets")
    @classmethod
    def _unique(cls, v: list[Subset]) -> list[Subset]:
        seen: set[str] = set()
        for i, s in enumerate(v):
            if s.name in seen:
                raise At(f"[{i}].name", f"duplicate subset name {show(s.name)}")
            seen.add(s.name)
        return v


def resource_checks(r: Any) -> list[tuple[str, str]]:
    """Rules that need the namespace: exportTo."""
    try:
        check_export_to(r.spec.export_to, r.namespace, dr_with_selector=r.spec.workload_selector is not None)
    except ValueError as e:
        from .fields import split_at

        sub, msg = split_at(str(e))
        return [("exportTo" + sub, msg)]
    return []


# Port is re-exported for older imports
__all__ = ["DestinationRuleSpec", "TrafficPolicy", "PortTrafficPolicy", "Subset", "LoadBalancerSettings",
           "ConsistentHashLB", "ConnectionPoolSettings", "OutlierDetection", "HealthCheck", "RetryBudget",
           "LocalityLbSetting", "ClientTLSSettings", "WorkloadSelector", "Port"]
