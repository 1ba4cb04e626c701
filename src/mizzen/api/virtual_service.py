"""Istio VirtualService (networking.istio.io): HTTP route models (matches, destinations, headers, timeouts,
retries, fault injection, mirroring, rewrites, redirects, direct responses), TCP routes and the spec.

Shared pieces (apiVersions, PortSelector) are in networking.py; see docs/api.md for what each field does today.
"""
from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import Spec
from .duration import check_duration, duration_seconds
from .networking import PortSelector


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

def _route_duration(v: str | None, minimum: float = 0.0, what: str = "duration") -> str | None:
    return check_duration(v, minimum_ns=int(minimum * 1e9), what=what)


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
    # Istio: a oneof with `port`. FROM_REQUEST_PORT = the port the request came in on (the route's port);
    # FROM_PROTOCOL_DEFAULT = no explicit port (Envoy's default behaviour).
    derive_port: Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] | None = None
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
        if self.port is not None and self.derive_port is not None:
            raise ValueError("only one of port and derivePort may be set")
        if all(x is None for x in (self.uri, self.authority, self.port, self.scheme, self.derive_port)):
            raise ValueError("a redirect needs at least one of uri, authority, port, derivePort, scheme")
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


# ---------------------------------------------------------------- CORS

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 7230 token (header names)


class CorsPolicy(Spec):
    """Istio CorsPolicy → Envoy's CORS filter (see translate/filters/cors.py)."""
    allow_origins: list[StringMatch] = Field(default_factory=list)
    allow_origin: list[str] = Field(default_factory=list)  # deprecated in Istio (exact origins), still accepted
    allow_methods: list[str] = Field(default_factory=list)
    allow_headers: list[str] = Field(default_factory=list)
    expose_headers: list[str] = Field(default_factory=list)
    max_age: str | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: Literal["UNSPECIFIED", "FORWARD", "IGNORE"] | None = None

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, v: list[StringMatch]) -> list[StringMatch]:
        for i, m in enumerate(v):
            if m.empty:
                raise ValueError(f"allowOrigins[{i}]: one of exact, prefix, regex must be set")
        return v

    @field_validator("allow_methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        for i, m in enumerate(v):
            if m not in HTTP_METHODS:
                raise ValueError(f"allowMethods[{i}]: {m!r} is not an HTTP method "
                                 f"({', '.join(sorted(HTTP_METHODS))}; upper case)")
        return v

    @field_validator("allow_headers", "expose_headers")
    @classmethod
    def _headers(cls, v: list[str], info) -> list[str]:
        what = "allowHeaders" if info.field_name == "allow_headers" else "exposeHeaders"
        for i, h in enumerate(v):
            if not _TOKEN.match(h or ""):
                raise ValueError(f"{what}[{i}]: {h!r} is not a valid header name")
        return v

    @field_validator("max_age")
    @classmethod
    def _max_age(cls, v: str | None) -> str | None:
        if v is None:
            return v
        s = duration_seconds(v)
        if s != int(s):
            raise ValueError(f"maxAge {v!r}: CORS max age has a precision of whole seconds")
        return v

    @property
    def origins(self) -> list[StringMatch]:
        return [*self.allow_origins, *(StringMatch(exact=o) for o in self.allow_origin)]


class Delegate(Spec):
    """`http[].delegate`: the hostless VirtualService whose http routes replace this route."""
    name: str = Field(min_length=1)
    namespace: str | None = None  # default: the root VirtualService's namespace


class HTTPRoute(Spec):
    name: str | None = None
    match: list[HTTPMatchRequest] = Field(default_factory=list)
    route: list[HTTPRouteDestination] = Field(default_factory=list)
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    delegate: Delegate | None = None
    rewrite: HTTPRewrite | None = None
    timeout: str | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirrors: list[HTTPMirrorPolicy] = Field(default_factory=list)
    mirror_percentage: Percent | None = None
    mirror_percent: int | None = Field(default=None, ge=0, le=100)
    cors_policy: CorsPolicy | None = None
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

    @model_validator(mode="after")
    def _delegate(self) -> "VirtualServiceSpec":
        if self.hosts:
            return self
        # no hosts: a delegate VirtualService (Istio); only http routes, one level of delegation
        for i, r in enumerate(self.http):
            if r.delegate is not None:
                raise ValueError(f"http[{i}].delegate: a delegate VirtualService (one without hosts) may not "
                                 f"delegate again; only one level of delegation is supported")
        if self.gateways:
            raise ValueError("gateways: a delegate VirtualService (one without hosts) may not name gateways; "
                             "the root VirtualService's gateways apply")
        if self.tcp or self.tls:
            raise ValueError("a delegate VirtualService (one without hosts) may only have http routes")
        return self

    @property
    def is_delegate(self) -> bool:
        return not self.hosts
