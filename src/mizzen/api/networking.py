"""Istio networking.istio.io kinds: VirtualService, DestinationRule, ServiceEntry, Sidecar, Gateway.

Fields follow Istio's reference. Fields Mizzen does not translate yet are still typed where cheap
(so a typo is caught) and otherwise accepted as free-form mappings; see docs/api.md for what each
field does today.
"""
from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from .base import Spec

ISTIO_NETWORKING_VERSIONS = (
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
)


def _check_regex(v: str) -> str:
    # Envoy uses RE2; Python's re is close enough to catch the common mistakes (unbalanced
    # parentheses, bad escapes). RE2-only rejections (backreferences, lookarounds) are checked too.
    try:
        re.compile(v)
    except re.error as e:
        raise ValueError(f"invalid regex {v!r}: {e}") from None
    if re.search(r"\(\?[=!<]|\\[1-9]", v):
        raise ValueError(f"invalid regex {v!r}: lookarounds and backreferences are not supported by RE2")
    return v


class StringMatch(Spec):
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    @field_validator("regex")
    @classmethod
    def _re(cls, v: str | None) -> str | None:
        return None if v is None else _check_regex(v)

    @model_validator(mode="after")
    def _one(self) -> "StringMatch":
        n = sum(x is not None for x in (self.exact, self.prefix, self.regex))
        if n > 1:
            raise ValueError("only one of exact, prefix, regex may be set")
        return self

    @property
    def empty(self) -> bool:
        return self.exact is None and self.prefix is None and self.regex is None


class HTTPMatchRequest(Spec):
    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] = Field(default_factory=dict)
    port: int | None = Field(default=None, ge=1, le=65535)
    source_labels: dict[str, str] = Field(default_factory=dict)
    gateways: list[str] = Field(default_factory=list)
    query_params: dict[str, StringMatch] = Field(default_factory=dict)
    ignore_uri_case: bool = False
    without_headers: dict[str, StringMatch] = Field(default_factory=dict)
    source_namespace: str | None = None
    stat_prefix: str | None = None

    @model_validator(mode="after")
    def _non_empty(self) -> "HTTPMatchRequest":
        for name in ("uri", "scheme", "method", "authority"):
            m = getattr(self, name)
            if m is not None and m.empty:
                raise ValueError(f"{name}: one of exact, prefix, regex must be set")
        return self


class PortSelector(Spec):
    number: int = Field(ge=1, le=65535)


class Destination(Spec):
    host: str = Field(min_length=1)
    subset: str | None = None
    port: PortSelector | None = None


class HeaderOperations(Spec):
    set: dict[str, str] = Field(default_factory=dict)
    add: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


class Headers(Spec):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class HTTPRouteDestination(Spec):
    destination: Destination
    weight: int = Field(default=0, ge=0, le=100)
    headers: Headers | None = None


class Percent(Spec):
    value: float = Field(ge=0, le=100)


# ---------------------------------------------------------------- HTTPRoute features
# timeouts, retries, fault injection, mirroring, rewrite, redirect, direct response

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(text: str) -> float:
    """An Istio/Go duration ('1.5s', '100ms', '1m30s', '1h') in seconds; ValueError otherwise."""
    t = text.strip() if isinstance(text, str) else ""
    pos, total = 0, 0.0
    while pos < len(t):
        m = _DURATION_PART.match(t, pos)
        if m is None:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not t or pos != len(t):
        raise ValueError(f"invalid duration {text!r}: use a number with a unit, e.g. 500ms, 1.5s, 2m, 1h")
    return total


def _route_duration(v: str | None, minimum: float = 0.0, what: str = "duration") -> str | None:
    if v is None:
        return v
    s = duration_seconds(v)
    if s < minimum:
        raise ValueError(f"{what} {v!r} must be at least {minimum * 1000:g}ms")
    return v


# Envoy retry conditions (router filter: x-envoy-retry-on and x-envoy-retry-grpc-on); both go to retry_on.
HTTP_RETRY_ON = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited",
    "retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers",
    "http3-post-connect-failure"})
GRPC_RETRY_ON = frozenset({"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"})

GRPC_CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
    "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
    "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}


def split_retry_on(text: str) -> tuple[list[str], list[int]]:
    """'5xx,503,unavailable' → (conditions, retriable status codes); ValueError on unknown entries."""
    conds: list[str] = []
    codes: list[int] = []
    for tok in (t.strip() for t in text.split(",")):
        if not tok:
            continue
        if tok.isdigit():
            code = int(tok)
            if not 100 <= code <= 599:
                raise ValueError(f"retryOn status code {code} is not an HTTP status (100-599)")
            codes.append(code)
        elif tok in HTTP_RETRY_ON or tok in GRPC_RETRY_ON:
            conds.append(tok)
        else:
            raise ValueError(f"unknown retryOn condition {tok!r}; known: "
                             f"{', '.join(sorted(HTTP_RETRY_ON | GRPC_RETRY_ON))} or an HTTP status code")
    return conds, codes


class RetryBackoff(Spec):
    """Mizzen extension (not in Istio's HTTPRetry): Envoy's retry back-off, see docs/translation.md."""
    base_interval: str
    max_interval: str | None = None

    @field_validator("base_interval", "max_interval")
    @classmethod
    def _d(cls, v: str | None) -> str | None:
        return _route_duration(v, 0.001, "back-off interval")

    @model_validator(mode="after")
    def _order(self) -> "RetryBackoff":
        if self.max_interval is not None and duration_seconds(self.max_interval) < duration_seconds(self.base_interval):
            raise ValueError("maxInterval must not be smaller than baseInterval")
        return self


class HTTPRetry(Spec):
    attempts: int = Field(default=0, ge=0)
    per_try_timeout: str | None = None
    retry_on: str | None = None
    retry_remote_localities: bool | None = None  # accepted, ignored (single locality)
    backoff: RetryBackoff | None = None  # Mizzen extension

    @field_validator("per_try_timeout")
    @classmethod
    def _ptt(cls, v: str | None) -> str | None:
        return _route_duration(v, 0.001, "perTryTimeout")

    @field_validator("retry_on")
    @classmethod
    def _on(cls, v: str | None) -> str | None:
        if v is not None:
            split_retry_on(v)
        return v


class FaultDelay(Spec):
    fixed_delay: str | None = None
    exponential_delay: str | None = None
    percentage: Percent | None = None
    percent: int | None = Field(default=None, ge=0, le=100)  # deprecated in Istio, still accepted

    @field_validator("fixed_delay")
    @classmethod
    def _fd(cls, v: str | None) -> str | None:
        return _route_duration(v, 0.001, "fixedDelay")

    @model_validator(mode="after")
    def _one(self) -> "FaultDelay":
        if self.exponential_delay is not None:
            raise ValueError("exponentialDelay is not supported (Istio does not implement it either); use fixedDelay")
        if self.fixed_delay is None:
            raise ValueError("a delay needs fixedDelay")
        return self


class FaultAbort(Spec):
    http_status: int | None = Field(default=None, ge=200, le=599)
    grpc_status: str | None = None
    http2_error: str | None = None
    percentage: Percent | None = None
    percent: int | None = Field(default=None, ge=0, le=100)  # deprecated in Istio, still accepted

    @field_validator("grpc_status")
    @classmethod
    def _grpc(cls, v: str | None) -> str | None:
        if v is not None and v.upper() not in GRPC_CODES and not (v.isdigit() and int(v) in GRPC_CODES.values()):
            raise ValueError(f"unknown grpcStatus {v!r}; use a gRPC code name such as UNAVAILABLE")
        return v

    @model_validator(mode="after")
    def _one(self) -> "FaultAbort":
        if self.http2_error is not None:
            raise ValueError("http2Error is not supported (Istio does not implement it either); use httpStatus")
        n = sum(x is not None for x in (self.http_status, self.grpc_status))
        if n != 1:
            raise ValueError("an abort needs exactly one of httpStatus or grpcStatus")
        return self

    @property
    def grpc_code(self) -> int | None:
        if self.grpc_status is None:
            return None
        return int(self.grpc_status) if self.grpc_status.isdigit() else GRPC_CODES[self.grpc_status.upper()]


class HTTPFaultInjection(Spec):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None

    @model_validator(mode="after")
    def _some(self) -> "HTTPFaultInjection":
        if self.delay is None and self.abort is None:
            raise ValueError("fault needs delay or abort")
        return self


class RegexRewrite(Spec):
    match: str
    rewrite: str

    @field_validator("match")
    @classmethod
    def _re(cls, v: str) -> str:
        return _check_regex(v)


class HTTPRewrite(Spec):
    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None

    @model_validator(mode="after")
    def _one(self) -> "HTTPRewrite":
        if self.uri is not None and self.uri_regex_rewrite is not None:
            raise ValueError("only one of uri and uriRegexRewrite may be set")
        if self.uri is not None and not self.uri.startswith("/"):
            raise ValueError(f"uri {self.uri!r} must start with '/'")
        return self


REDIRECT_CODES = (301, 302, 303, 307, 308)


class HTTPRedirect(Spec):
    uri: str | None = None
    authority: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    scheme: str | None = None
    redirect_code: int = 301

    @field_validator("redirect_code")
    @classmethod
    def _code(cls, v: int) -> int:
        if v not in REDIRECT_CODES:
            raise ValueError(f"redirectCode {v} is not one of {', '.join(map(str, REDIRECT_CODES))}")
        return v

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", v):
            raise ValueError(f"invalid scheme {v!r}")
        return v

    @model_validator(mode="after")
    def _some(self) -> "HTTPRedirect":
        if self.uri is not None and not self.uri.startswith("/"):
            raise ValueError(f"uri {self.uri!r} must start with '/'")
        if all(x is None for x in (self.uri, self.authority, self.port, self.scheme)):
            raise ValueError("a redirect needs at least one of uri, authority, port, scheme")
        return self


class HTTPBody(Spec):
    string: str | None = None
    bytes_: str | None = Field(default=None, alias="bytes")

    @field_validator("bytes_")
    @classmethod
    def _b64(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("bytes must be base64") from None
        return v

    @model_validator(mode="after")
    def _one(self) -> "HTTPBody":
        if (self.string is None) == (self.bytes_ is None):
            raise ValueError("body needs exactly one of string or bytes")
        return self


class HTTPDirectResponse(Spec):
    status: int = Field(ge=200, le=599)
    body: HTTPBody | None = None


class HTTPMirrorPolicy(Spec):
    destination: Destination
    percentage: Percent | None = None


class HTTPRoute(Spec):
    name: str | None = None
    match: list[HTTPMatchRequest] = Field(default_factory=list)
    route: list[HTTPRouteDestination] = Field(default_factory=list)
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    delegate: dict[str, Any] | None = None
    rewrite: HTTPRewrite | None = None
    timeout: str | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirrors: list[HTTPMirrorPolicy] = Field(default_factory=list)
    mirror_percentage: Percent | None = None
    mirror_percent: int | None = Field(default=None, ge=0, le=100)
    cors_policy: dict[str, Any] | None = None
    headers: Headers | None = None

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: str | None) -> str | None:
        return _route_duration(v, 0.0, "timeout")

    @model_validator(mode="after")
    def _weights(self) -> "HTTPRoute":
        if len(self.route) > 1:
            total = sum(d.weight for d in self.route)
            if total != 100:
                raise ValueError(
                    f"route weights sum to {total}, must be 100 when a route has several destinations"
                )
        actions = [n for n, v in (("route", self.route), ("redirect", self.redirect),
                                  ("directResponse", self.direct_response), ("delegate", self.delegate)) if v]
        if not actions:
            raise ValueError("an http route needs one of route, redirect, directResponse or delegate")
        if len(actions) > 1:
            raise ValueError(f"an http route may have only one of route, redirect, directResponse, delegate "
                             f"(has {' and '.join(actions)})")
        if self.mirror is not None and self.mirrors:
            raise ValueError("only one of mirror and mirrors may be set")
        if (self.mirror_percentage is not None or self.mirror_percent is not None) and self.mirror is None:
            raise ValueError("mirrorPercentage needs mirror")
        if (self.redirect or self.direct_response) and (self.rewrite or self.mirror or self.mirrors or self.retries):
            raise ValueError("rewrite, retries and mirror need a route; they do nothing with redirect or directResponse")
        if self.redirect is not None and self.fault is not None:
            raise ValueError("fault needs route or directResponse, not redirect")
        return self


class L4MatchAttributes(Spec):
    destination_subnets: list[str] = Field(default_factory=list)
    port: int | None = None
    source_labels: dict[str, str] = Field(default_factory=dict)
    gateways: list[str] = Field(default_factory=list)
    source_namespace: str | None = None


class RouteDestination(Spec):
    destination: Destination
    weight: int = Field(default=0, ge=0, le=100)


class TCPRoute(Spec):
    match: list[L4MatchAttributes] = Field(default_factory=list)
    route: list[RouteDestination] = Field(default_factory=list)


class VirtualServiceSpec(Spec):
    hosts: list[str] = Field(default_factory=list)
    gateways: list[str] = Field(default_factory=list)
    http: list[HTTPRoute] = Field(default_factory=list)
    tls: list[dict[str, Any]] = Field(default_factory=list)
    tcp: list[TCPRoute] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list)

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        for h in v:
            if not h or " " in h:
                raise ValueError(f"invalid host {h!r}")
        return v


# ---------------------------------------------------------------- DestinationRule

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
    tls: dict[str, Any] | None = None
    health_check: HealthCheck | None = None
    retry_budget: RetryBudget | None = None


class TrafficPolicy(Spec):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: dict[str, Any] | None = None
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


# ---------------------------------------------------------------- ServiceEntry


class ServicePort(Spec):
    number: int = Field(ge=1, le=65535)
    protocol: str | None = None
    name: str = ""
    target_port: int | None = Field(default=None, ge=1, le=65535)


class WorkloadEntry(Spec):
    address: str | None = None
    ports: dict[str, int] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    network: str | None = None
    locality: str | None = None
    weight: int | None = None
    service_account: str | None = None


class ServiceEntrySpec(Spec):
    hosts: list[str] = Field(min_length=1)
    addresses: list[str] = Field(default_factory=list)
    ports: list[ServicePort] = Field(default_factory=list)
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] = "MESH_EXTERNAL"
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"] = "NONE"
    endpoints: list[WorkloadEntry] = Field(default_factory=list)
    workload_selector: dict[str, Any] | None = None
    export_to: list[str] = Field(default_factory=list)
    subject_alt_names: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _resolution(self) -> "ServiceEntrySpec":
        import ipaddress

        seen: set[int] = set()
        for p in self.ports:
            if p.number in seen:
                raise ValueError(f"ports: port {p.number} is listed twice")
            seen.add(p.number)
        if self.resolution == "STATIC":
            if not self.endpoints and not self.workload_selector:
                raise ValueError("STATIC resolution needs endpoints (or a workloadSelector)")
            for i, e in enumerate(self.endpoints):
                try:
                    ipaddress.ip_address(e.address or "")
                except ValueError:
                    raise ValueError(f"endpoints[{i}].address {e.address!r} must be an IP address with "
                                     f"resolution STATIC (use resolution DNS for host names)") from None
        if self.resolution in ("DNS", "DNS_ROUND_ROBIN") and not self.endpoints:
            for h in self.hosts:
                if h.startswith("*"):
                    raise ValueError(f"host {h!r}: a wildcard host cannot be resolved by DNS; list endpoints")
        return self


# ---------------------------------------------------------------- Sidecar


class IstioEgressListener(Spec):
    port: ServicePort | None = None
    bind: str | None = None
    capture_mode: str | None = None
    hosts: list[str] = Field(min_length=1)

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        for h in v:
            if "/" not in h:
                raise ValueError(f"egress host {h!r} must be namespace/host: '<ns>/<host>', './<host>' or '*/<host>'")
        return v


class WorkloadSelector(Spec):
    labels: dict[str, str] = Field(default_factory=dict)


class SidecarSpec(Spec):
    workload_selector: WorkloadSelector | None = None
    ingress: list[dict[str, Any]] = Field(default_factory=list)
    egress: list[IstioEgressListener] = Field(default_factory=list)
    outbound_traffic_policy: dict[str, Any] | None = None
    inbound_connection_pool: dict[str, Any] | None = None


# ---------------------------------------------------------------- Gateway (stored; translated later)


class Server(Spec):
    port: ServicePort
    hosts: list[str] = Field(min_length=1)
    tls: dict[str, Any] | None = None
    bind: str | None = None
    name: str | None = None
    default_endpoint: str | None = None


class GatewaySpec(Spec):
    servers: list[Server] = Field(default_factory=list)
    selector: dict[str, str] = Field(default_factory=dict)
