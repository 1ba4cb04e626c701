"""A VirtualService's HTTP routes (networking.istio.io HTTPRoute and its parts): matches, destinations, header
operations, retries, fault injection, mirroring, rewrites, redirects, direct responses, CORS, delegation —
with Istio's validation rules (validateHTTPRoute and friends) and the limits of the Envoy values they become.

virtual_service.py re-exports everything here, so `from mizzen.api.virtual_service import HTTPRoute` works.
"""
from __future__ import annotations

import base64
import binascii
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Spec
from .duration import MsDuration, duration_ns, duration_seconds  # noqa: F401  (duration_seconds re-exported)
from .fields import (MAX_U32, At, NonNegInt32, Number, check_gateway_names, check_header_add_name,
                     check_header_match_name, check_header_op_name, check_header_value, check_labels,
                     check_percentage, check_regex, check_wildcard_domain, is_dns1123_label, is_header_name, show)
from .networking import PortSelector

MAX_HEADER_VALUE = 16384  # Envoy's HeaderValue limits
MAX_DIRECT_RESPONSE_BODY = 1024 * 1024  # Istio: "must be less than 1MB"
_NO_CTL = re.compile(r"[\x00\r\n]")


def _no_ctl(v: str | None, what: str) -> str | None:
    """Values Envoy takes as header-like strings (paths, authorities): no NUL, CR or LF."""
    if v is not None and _NO_CTL.search(v):
        raise ValueError(f"{what} {show(v)} must not contain NUL, CR or LF")
    return v


# ---------------------------------------------------------------- matches

class StringMatch(Spec):
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    @field_validator("regex")
    @classmethod
    def _re(cls, v: str | None) -> str | None:
        return None if v is None else check_regex(v)

    @field_validator("exact", "prefix")
    @classmethod
    def _ctl(cls, v: str | None) -> str | None:
        return _no_ctl(v, "match value")

    @model_validator(mode="after")
    def _one(self) -> "StringMatch":
        n = sum(x is not None for x in (self.exact, self.prefix, self.regex))
        if n > 1:
            raise ValueError("only one of exact, prefix, regex may be set")
        return self

    @property
    def empty(self) -> bool:
        return self.exact is None and self.prefix is None and self.regex is None


def _check_nonempty_prefix(m: StringMatch | None, where: str) -> None:
    """Istio's validateStringMatch: a prefix match (of a header, method, ...) may not be empty; a uri's may."""
    if m is not None and m.prefix == "":
        raise At(where, f"{where}: prefix string match should not be empty")


class HTTPMatchRequest(Spec):
    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] = Field(default_factory=dict)
    port: int | None = Field(default=None, ge=0, le=65535)
    source_labels: dict[str, str] = Field(default_factory=dict)
    gateways: list[str] = Field(default_factory=list)
    query_params: dict[str, StringMatch] = Field(default_factory=dict)
    ignore_uri_case: bool = False
    without_headers: dict[str, StringMatch] = Field(default_factory=dict)
    source_namespace: str | None = None
    stat_prefix: str | None = None

    @field_validator("port")
    @classmethod
    def _port(cls, v: int | None) -> int | None:
        return None if v == 0 else v  # 0: any port, as unset

    @field_validator("source_labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        check_labels(v)
        return v

    @field_validator("gateways")
    @classmethod
    def _gateways(cls, v: list[str]) -> list[str]:
        check_gateway_names(v)
        return v

    @field_validator("source_namespace")
    @classmethod
    def _ns(cls, v: str | None) -> str | None:
        if v is not None and not is_dns1123_label(v):
            raise ValueError(f"sourceNamespace match {show(v)} is invalid")
        return v

    @model_validator(mode="after")
    def _rules(self) -> "HTTPMatchRequest":
        for name in ("uri", "scheme", "method", "authority"):
            m = getattr(self, name)
            if m is not None and m.empty:
                raise At(name, "one of exact, prefix, regex must be set")
            if name != "uri":  # a uri prefix may be empty (Envoy's prefix ""), a header's may not
                _check_nonempty_prefix(m, name)
        for field, items in (("headers", self.headers), ("withoutHeaders", self.without_headers)):
            for k, m in items.items():
                try:
                    check_header_match_name(k)
                except ValueError as e:
                    raise At(f"{field}[{k!r}]" if len(k) < 100 else field, str(e)) from None
                _check_nonempty_prefix(m, f"{field}[{k!r}]")
        for k, m in self.query_params.items():
            if not k or _NO_CTL.search(k):
                raise At("queryParams", f"query parameter name {show(k)} is invalid")
            _check_nonempty_prefix(m, f"queryParams[{k!r}]")
        return self

    @property
    def jwt_claim_headers(self) -> list[str]:
        return [k for k in (*self.headers, *self.without_headers) if k.startswith("@request.auth.claims")]


# ---------------------------------------------------------------- destinations and headers

class Destination(Spec):
    host: str = Field(min_length=1)
    subset: str | None = None
    port: PortSelector | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if v == "*":
            raise ValueError("invalid destination host *")
        check_wildcard_domain(v)
        return v

    @field_validator("subset")
    @classmethod
    def _subset(cls, v: str | None) -> str | None:
        if v is not None and (len(v) > 253 or not all(is_dns1123_label(p) for p in v.split("."))):
            raise ValueError(f"subset name {show(v)} is invalid")
        return v


def _check_values(d: dict[str, str]) -> None:
    for k, v in d.items():
        if len(v) > MAX_HEADER_VALUE:
            raise At(f"[{k!r}]", f"header value is too long ({len(v)} bytes; at most {MAX_HEADER_VALUE})")
        try:
            check_header_value(v)
        except ValueError as e:
            raise At(f"[{k!r}]", str(e)) from None


class HeaderOperations(Spec):
    set: dict[str, str] = Field(default_factory=dict)
    add: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


class Headers(Spec):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None

    @model_validator(mode="after")
    def _rules(self) -> "Headers":
        if self.request is not None:
            for op in ("set", "add"):
                items = getattr(self.request, op)
                for k in items:
                    try:
                        check_header_add_name(k)
                    except ValueError as e:
                        raise At(f"request.{op}", str(e)) from None
                    if k.lower() in (":authority", "host"):
                        raise At(f"request.{op}", f"setting {show(k)} through headers is not supported by Mizzen; "
                                                  "use rewrite.authority")
                try:
                    _check_values(items)
                except ValueError as e:
                    raise At(f"request.{op}", str(e)) from None
            for i, k in enumerate(self.request.remove):
                try:
                    check_header_op_name(k)
                except ValueError as e:
                    raise At(f"request.remove[{i}]", str(e)) from None
        if self.response is not None:
            for op in ("set", "add"):
                items = getattr(self.response, op)
                for k in items:
                    try:
                        check_header_op_name(k)
                    except ValueError as e:
                        raise At(f"response.{op}", str(e)) from None
                try:
                    _check_values(items)
                except ValueError as e:
                    raise At(f"response.{op}", str(e)) from None
            for i, k in enumerate(self.response.remove):
                try:
                    check_header_op_name(k)
                except ValueError as e:
                    raise At(f"response.remove[{i}]", str(e)) from None
        return self


class HTTPRouteDestination(Spec):
    destination: Destination
    weight: NonNegInt32 = 0
    headers: Headers | None = None


class Percent(Spec):
    value: Number = Field(ge=0, le=100)

    @field_validator("value")
    @classmethod
    def _v(cls, v: float) -> float:
        return check_percentage(v)


# ---------------------------------------------------------------- retries, fault injection

# Envoy retry conditions (router filter: x-envoy-retry-on and x-envoy-retry-grpc-on); both go to retry_on.
HTTP_RETRY_ON = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited",
    "retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers",
    "http3-post-connect-failure"})
GRPC_RETRY_ON = frozenset({"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"})
# the status codes Go's net/http knows (Istio accepts a retryOn code when http.StatusText has it)
HTTP_STATUS_CODES = frozenset([100, 101, 102, 103, *range(200, 209), 226, *range(300, 309), *range(400, 419),
                               *range(421, 427), 428, 429, 431, 451, *range(500, 509), 510, 511])

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
        if tok.isdigit() and len(tok) <= 3:
            code = int(tok)
            if code not in HTTP_STATUS_CODES:
                raise ValueError(f"retryOn status code {code} is not an HTTP status code")
            codes.append(code)
        elif tok in HTTP_RETRY_ON or tok in GRPC_RETRY_ON:
            conds.append(tok)
        else:
            raise ValueError(f"{show(tok)} is not a valid retryOn policy; known: "
                             f"{', '.join(sorted(HTTP_RETRY_ON | GRPC_RETRY_ON))} or an HTTP status code")
    return conds, codes


class RetryBackOff(Spec):
    """Mizzen extension `retries.retryBackOff` (Envoy's retry_back_off): base and maximum interval. Istio's own
    `retries.backoff` is a duration: the base interval."""
    base_interval: MsDuration
    max_interval: MsDuration | None = None

    @model_validator(mode="after")
    def _order(self) -> "RetryBackOff":
        if self.max_interval is not None and duration_ns(self.max_interval) < duration_ns(self.base_interval):
            raise ValueError("maxInterval must not be smaller than baseInterval")
        return self


class HTTPRetry(Spec):
    attempts: NonNegInt32 = 0
    per_try_timeout: MsDuration | None = None
    retry_on: str | None = None
    retry_remote_localities: bool | None = None  # accepted, ignored (single locality)
    retry_ignore_previous_hosts: bool | None = None
    backoff: MsDuration | None = None  # Istio: the base interval between retries
    retry_back_off: RetryBackOff | None = Field(default=None, alias="retryBackOff")  # Mizzen extension

    @field_validator("retry_on")
    @classmethod
    def _on(cls, v: str | None) -> str | None:
        if v is not None:
            split_retry_on(v)
        return v

    @model_validator(mode="after")
    def _rules(self) -> "HTTPRetry":
        if self.attempts == 0 and (self.per_try_timeout is not None or self.retry_on or
                                   self.retry_remote_localities is not None):
            raise ValueError("http retry policy configured when attempts are set to 0 (disabled)")
        if self.backoff is not None and self.retry_back_off is not None:
            raise ValueError("only one of backoff (Istio) and retryBackOff (Mizzen) may be set")
        return self

    @property
    def back_off(self) -> tuple[str, str | None] | None:
        """(base interval, max interval or None): Istio's backoff or Mizzen's retryBackOff."""
        if self.retry_back_off is not None:
            return self.retry_back_off.base_interval, self.retry_back_off.max_interval
        if self.backoff is not None:
            return self.backoff, None
        return None


class FaultDelay(Spec):
    fixed_delay: MsDuration | None = None
    exponential_delay: MsDuration | None = None
    percentage: Percent | None = None
    percent: int | None = Field(default=None, ge=0, le=100)  # deprecated in Istio, still accepted

    @model_validator(mode="after")
    def _one(self) -> "FaultDelay":
        if self.exponential_delay is not None:
            raise ValueError("exponentialDelay not supported yet (by Istio either); use fixedDelay")
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
        if v is not None and v not in GRPC_CODES:
            raise ValueError(f"gRPC status {show(v)} is not supported; use a gRPC code name such as NOT_FOUND")
        return v

    @model_validator(mode="after")
    def _one(self) -> "FaultAbort":
        if self.http2_error is not None:
            raise ValueError("HTTP/2 abort fault injection not supported yet (by Istio either); use httpStatus")
        n = sum(x is not None for x in (self.http_status, self.grpc_status))
        if n != 1:
            raise ValueError("an abort needs exactly one of httpStatus or grpcStatus")
        return self

    @property
    def grpc_code(self) -> int | None:
        return None if self.grpc_status is None else GRPC_CODES[self.grpc_status]


class HTTPFaultInjection(Spec):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None

    @model_validator(mode="after")
    def _some(self) -> "HTTPFaultInjection":
        if self.delay is None and self.abort is None:
            raise ValueError("HTTP fault injection must have an abort and/or a delay")
        return self


# ---------------------------------------------------------------- rewrite, redirect, direct response, mirror

class RegexRewrite(Spec):
    match: str
    rewrite: str

    @model_validator(mode="after")
    def _rules(self) -> "RegexRewrite":
        if not self.match or not self.rewrite:
            raise ValueError("uriRegexRewrite requires both rewrite and match fields to be specified")
        try:
            check_regex(self.match, "match")
        except ValueError as e:
            raise At("match", str(e)) from None
        _no_ctl(self.rewrite, "rewrite")
        return self


class HTTPRewrite(Spec):
    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None

    @model_validator(mode="after")
    def _one(self) -> "HTTPRewrite":
        if self.uri and self.uri_regex_rewrite is not None:
            raise ValueError("rewrite may only contain one of uri or uriRegexRewrite")
        if not self.uri and self.uri_regex_rewrite is None and not self.authority:
            raise ValueError("rewrite must specify at least one of uri, uriRegexRewrite, or authority")
        _no_ctl(self.uri, "uri")
        _no_ctl(self.authority, "authority")
        return self


REDIRECT_CODES = (301, 302, 303, 307, 308)  # the ones Envoy has (Istio drops the route for others)


class HTTPRedirect(Spec):
    uri: str | None = None
    prefix_rewrite: str | None = None
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
        if v == 0:
            return 301
        if not 300 <= v <= 399:
            raise ValueError(f"{v} is not a valid redirect code, must be 3xx")
        if v not in REDIRECT_CODES:
            raise ValueError(f"redirectCode {v} is not one Envoy can send ({', '.join(map(str, REDIRECT_CODES))})")
        return v

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is not None and v not in ("http", "https"):
            raise ValueError('invalid redirect scheme, must be "http" or "https"')
        return v

    @model_validator(mode="after")
    def _some(self) -> "HTTPRedirect":
        if self.uri and self.prefix_rewrite:
            raise ValueError("redirect may only specify one of uri or prefixRewrite")
        if self.port is not None and self.derive_port is not None:
            raise ValueError("only one of port and derivePort may be set")
        if not any((self.uri, self.prefix_rewrite, self.authority, self.port is not None, self.scheme,
                    self.derive_port)):
            raise ValueError("redirect must specify uri, prefixRewrite, authority, scheme, or port")
        for name in ("uri", "prefix_rewrite", "authority"):
            _no_ctl(getattr(self, name), name)
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
        size = len((self.string or "").encode("utf-8", "surrogatepass")) + len(self.bytes_ or "") * 3 // 4
        if size > MAX_DIRECT_RESPONSE_BODY:
            raise ValueError("large direct responses may impact control plane performance, must be less than 1MB")
        return self


class HTTPDirectResponse(Spec):
    status: int = Field(ge=200, le=599)
    body: HTTPBody | None = None


class HTTPMirrorPolicy(Spec):
    destination: Destination
    percentage: Percent | None = None


# ---------------------------------------------------------------- CORS

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})


class CorsPolicy(Spec):
    """Istio CorsPolicy → Envoy's CORS filter (see translate/filters/cors.py)."""
    allow_origins: list[StringMatch] = Field(default_factory=list)
    allow_origin: list[str] = Field(default_factory=list)  # deprecated in Istio (exact origins), still accepted
    allow_methods: list[str] = Field(default_factory=list)
    allow_headers: list[str] = Field(default_factory=list)
    expose_headers: list[str] = Field(default_factory=list)
    max_age: MsDuration | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: Literal["UNSPECIFIED", "FORWARD", "IGNORE"] | None = None

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, v: list[StringMatch]) -> list[StringMatch]:
        for i, m in enumerate(v):
            if m.empty or (m.exact or m.prefix or m.regex) == "":
                raise At(f"[{i}]", "not a valid match type for CORS allow origins: one of exact, prefix, regex "
                                   "must be set and not empty")
        return v

    @field_validator("allow_methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        for i, m in enumerate(v):
            if m not in HTTP_METHODS and m != "*":
                raise At(f"[{i}]", f"{show(m)} is not a supported HTTP method "
                                   f"({', '.join(sorted(HTTP_METHODS))} or *; upper case)")
        return v

    @field_validator("allow_headers", "expose_headers")
    @classmethod
    def _headers(cls, v: list[str]) -> list[str]:
        for i, h in enumerate(v):
            if h != "*" and not is_header_name(h):
                raise At(f"[{i}]", f"{show(h)} is not a valid header name")
        return v

    @field_validator("max_age")
    @classmethod
    def _max_age(cls, v: str | None) -> str | None:
        if v is not None and duration_ns(v) % 10**9:
            raise ValueError(f"maxAge {show(v)}: CORS max age is accurate only to seconds precision")
        return v

    @property
    def origins(self) -> list[StringMatch]:
        return [*self.allow_origins, *(StringMatch(exact=o) for o in self.allow_origin)]


# ---------------------------------------------------------------- the route

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
    timeout: MsDuration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirrors: list[HTTPMirrorPolicy] = Field(default_factory=list)
    mirror_percentage: Percent | None = None
    mirror_percent: int | None = Field(default=None, ge=0, le=100)
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None
    # removed from Istio's API (older configs still carry it): Mizzen's HTTP listeners always upgrade
    # websockets, so it is accepted and `mizzen analyze` reports it (IST0002)
    websocket_upgrade: bool | None = None

    @model_validator(mode="after")
    def _rules(self) -> "HTTPRoute":
        if self.delegate is not None:
            if self.redirect is not None:
                raise At("redirect", f"root HTTP route {show(self.name or '')} must not specify redirect")
            if self.route:
                raise At("route", f"root HTTP route {show(self.name or '')} must not specify route")
            if self.direct_response is not None:
                raise At("directResponse", "a delegating route may not have a directResponse")
        elif self.redirect is not None:
            for other, name in ((self.route, "route"), (self.fault, "fault"), (self.rewrite, "rewrite"),
                                (self.direct_response, "directResponse")):
                if other:
                    raise At(name, f"HTTP route cannot contain both {name} and redirect")
        elif self.direct_response is not None:
            for other, name in ((self.route, "route"), (self.fault, "fault"), (self.rewrite, "rewrite")):
                if other:
                    raise At(name, f"HTTP route cannot contain both {name} and directResponse")
        elif not self.route:
            raise ValueError("HTTP route, redirect or directResponse is required")
        if self.mirror is not None and self.mirrors:
            raise ValueError("HTTP route cannot contain both mirror and mirrors")
        if len(self.route) > 1:
            total = sum(d.weight for d in self.route)
            if total == 0:
                raise At("route", "total destination weight = 0")
            if total > MAX_U32:
                raise At("route", f"total destination weight {total} is more than Envoy allows ({MAX_U32})")
        if self.redirect is not None and self.redirect.prefix_rewrite:
            for i, m in enumerate(self.match):
                if m.uri is not None and m.uri.prefix is None:
                    raise At(f"match[{i}].uri", "redirect prefixRewrite requires all URI matches to use prefix "
                                                "match type")
        self._authority_once()
        return self

    def _authority_once(self) -> None:
        current = self.rewrite.authority if self.rewrite else None
        req = self.headers.request if self.headers else None
        for ops in ((req.set, req.add) if req else ()):
            for k, v in ops.items():
                if k.lower() in (":authority", "host"):
                    if current:
                        raise At("headers", f"authority header cannot be set multiple times: have {show(current)}, "
                                            f"attempting to set {show(v)}")
                    current = v


def route_problems(r: HTTPRoute, delegate: bool) -> list[tuple[str, str]]:
    """Rules that depend on the VirtualService a route is in: (path below the route, message)."""
    out: list[tuple[str, str]] = []
    if delegate and r.delegate is not None:
        out.append(("delegate", "delegate HTTP route cannot contain delegate (one level of delegation)"))
    return out

