"""Istio DestinationRule (networking.istio.io): traffic policy models (load balancing incl. consistent hash
and locality, connection pools, outlier detection; Mizzen's active health checks and retry budget), subsets
and the spec.

Shared pieces (apiVersions, PortSelector) are in networking.py; see docs/api.md for what each field does today.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from .base import Spec
from .client_tls import ClientTLSSettings
from .networking import PortSelector

LbSimple = Literal["UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"]

_DURATION = re.compile(r"^\d+(\.\d+)?(h|m|s|ms|us)$")


def _check_duration(v: str | None, allow_zero: bool = False) -> str | None:
    """Istio durations ('30s', '1.5s', '100ms', '1m', '1h'); at least 1ms, as Istio requires."""
    if v is None:
        return v
    if not _DURATION.match(v.strip()):
        raise ValueError(f"invalid duration {v!r}: a number with a unit h, m, s, ms or us, e.g. '30s'")
    num, unit = re.match(r"^([\d.]+)(\D+)$", v.strip()).groups()
    secs = float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
    if secs < 1e-3 and not (allow_zero and secs == 0):
        raise ValueError(f"invalid duration {v!r}: must be at least 1ms")
    return v


Duration = Annotated[str, AfterValidator(_check_duration)]
ZeroOkDuration = Annotated[str, AfterValidator(lambda v: _check_duration(v, allow_zero=True))]


def _one_of(obj: Spec, names: tuple[str, ...], what: str, required: bool = True) -> None:
    n = sum(getattr(obj, x) is not None for x in names)
    if n > 1 or (required and n == 0):
        camel = ", ".join(type(obj).model_fields[x].alias or x for x in names)
        raise ValueError(f"{what}: exactly one of {camel} must be set" if required else
                         f"{what}: at most one of {camel} may be set")


class HTTPCookie(Spec):
    name: str = Field(min_length=1)
    path: str | None = None
    ttl: ZeroOkDuration | None = None  # 0s: a session cookie


class RingHash(Spec):
    minimum_ring_size: int | None = Field(default=None, ge=1, le=8388608)


def _is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))


class MagLev(Spec):
    table_size: int | None = Field(default=None, ge=1, le=5000011)

    @field_validator("table_size")
    @classmethod
    def _prime(cls, v: int | None) -> int | None:
        if v is not None and not _is_prime(v):
            raise ValueError(f"tableSize {v} must be a prime number (e.g. 65537)")
        return v


class ConsistentHashLB(Spec):
    http_header_name: str | None = Field(default=None, min_length=1)
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = Field(default=None, min_length=1)
    ring_hash: RingHash | None = None
    maglev: MagLev | None = None
    minimum_ring_size: int | None = Field(default=None, ge=1, le=8388608)  # deprecated by Istio: ringHash

    @model_validator(mode="after")
    def _one(self) -> "ConsistentHashLB":
        _one_of(self, ("http_header_name", "http_cookie", "use_source_ip", "http_query_parameter_name"),
                "consistentHash")
        if self.use_source_ip is False:
            raise ValueError("consistentHash: useSourceIp must be true when set")
        _one_of(self, ("ring_hash", "maglev", "minimum_ring_size"), "consistentHash", required=False)
        return self


class LocalityDistribute(Spec):
    from_: str = Field(alias="from", min_length=1)
    to: dict[str, int] = Field(min_length=1)

    @model_validator(mode="after")
    def _weights(self) -> "LocalityDistribute":
        for k, w in self.to.items():
            if w < 0 or w > 100:
                raise ValueError(f"distribute to[{k!r}]: weight {w} must be between 0 and 100")
        total = sum(self.to.values())
        if total != 100:
            raise ValueError(f"distribute from {self.from_!r}: weights sum to {total}, must be 100")
        return self


class LocalityFailover(Spec):
    from_: str = Field(alias="from", min_length=1)
    to: str = Field(min_length=1)

    @model_validator(mode="after")
    def _differ(self) -> "LocalityFailover":
        if self.from_ == self.to:
            raise ValueError(f"failover from and to are the same region {self.to!r}")
        if "/" in self.from_ or "/" in self.to:
            raise ValueError("failover from and to are regions (no '/')")
        return self


class LocalityLbSetting(Spec):
    distribute: list[LocalityDistribute] = Field(default_factory=list)
    failover: list[LocalityFailover] = Field(default_factory=list)
    failover_priority: list[str] = Field(default_factory=list)
    enabled: bool | None = None

    @model_validator(mode="after")
    def _exclusive(self) -> "LocalityLbSetting":
        if self.distribute and (self.failover or self.failover_priority):
            raise ValueError("localityLbSetting: distribute and failover/failoverPriority are mutually exclusive")
        return self


class LoadBalancerSettings(Spec):
    simple: LbSimple | None = None
    consistent_hash: ConsistentHashLB | None = None
    locality_lb_setting: LocalityLbSetting | None = None
    warmup_duration_secs: Duration | None = None

    @model_validator(mode="after")
    def _one(self) -> "LoadBalancerSettings":
        if self.simple is not None and self.consistent_hash is not None:
            raise ValueError("loadBalancer: only one of simple, consistentHash may be set")
        return self


class TcpKeepalive(Spec):
    probes: int | None = Field(default=None, ge=0)
    time: Duration | None = None
    interval: Duration | None = None


class TCPSettings(Spec):
    max_connections: int | None = Field(default=None, ge=0)
    connect_timeout: Duration | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: Duration | None = None
    idle_timeout: Duration | None = None


class HTTPSettings(Spec):
    http1_max_pending_requests: int | None = Field(default=None, ge=0)
    http2_max_requests: int | None = Field(default=None, ge=0)
    max_requests_per_connection: int | None = Field(default=None, ge=0)
    max_retries: int | None = Field(default=None, ge=0)
    idle_timeout: Duration | None = None
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] | None = None
    use_client_protocol: bool | None = None
    max_concurrent_streams: int | None = Field(default=None, ge=1, le=2147483647)


class ConnectionPoolSettings(Spec):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(Spec):
    split_external_local_origin_errors: bool = False
    consecutive_local_origin_failures: int | None = Field(default=None, ge=0)
    consecutive_gateway_errors: int | None = Field(default=None, ge=0)
    consecutive_5xx_errors: int | None = Field(default=None, ge=0, alias="consecutive5xxErrors")
    consecutive_errors: int | None = Field(default=None, ge=0)  # deprecated by Istio
    interval: Duration | None = None
    base_ejection_time: Duration | None = None
    max_ejection_percent: int | None = Field(default=None, ge=0, le=100)
    min_health_percent: int | None = Field(default=None, ge=0, le=100)

    @model_validator(mode="after")
    def _local(self) -> "OutlierDetection":
        if self.consecutive_local_origin_failures is not None and not self.split_external_local_origin_errors:
            raise ValueError("consecutiveLocalOriginFailures needs splitExternalLocalOriginErrors: true")
        return self


class HealthCheckHttp(Spec):
    """Mizzen extension: an HTTP active health check (Envoy http_health_check)."""
    path: str = "/"
    host: str | None = None
    expected_statuses: list[int] = Field(default_factory=list)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"path {v!r} must start with '/'")
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
    unhealthy_threshold: int = Field(default=3, ge=1)
    healthy_threshold: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _one(self) -> "HealthCheck":
        _one_of(self, ("http", "tcp", "grpc"), "healthCheck")
        return self


class RetryBudget(Spec):
    """Mizzen extension (trafficPolicy.retryBudget): active retries ≤ percent of active requests."""
    percent: float = Field(default=20.0, ge=0, le=100)
    min_retry_concurrency: int = Field(default=3, ge=0)


class PortTrafficPolicy(Spec):
    port: PortSelector | None = None
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    health_check: HealthCheck | None = None
    retry_budget: RetryBudget | None = None


class TrafficPolicy(Spec):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: list[PortTrafficPolicy] = Field(default_factory=list)
    tunnel: dict[str, Any] | None = None
    proxy_protocol: dict[str, Any] | None = None
    health_check: HealthCheck | None = None  # Mizzen extension
    retry_budget: RetryBudget | None = None  # Mizzen extension

    @model_validator(mode="after")
    def _ports(self) -> "TrafficPolicy":
        seen: set[int] = set()
        for pl in self.port_level_settings:
            if pl.port is None:
                raise ValueError("portLevelSettings: every entry needs port.number")
            if pl.port.number in seen:
                raise ValueError(f"portLevelSettings: port {pl.port.number} is listed twice")
            seen.add(pl.port.number)
        return self


class Subset(Spec):
    name: str = Field(min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = None


class DestinationRuleSpec(Spec):
    host: str = Field(min_length=1)
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list)
    workload_selector: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _unique(self) -> "DestinationRuleSpec":
        seen: set[str] = set()
        for s in self.subsets:
            if s.name in seen:
                raise ValueError(f"duplicate subset name {s.name!r}")
            seen.add(s.name)
        return self
