"""`mizzen.dev/v1 RateLimit`: local and global rate limits, their algorithms, strategies and priority classes.

A RateLimit targets either the callee (`workloadSelector`: enforced at the selected workloads' inbound
sidecars, protecting a service) or a dependency (`host`: enforced at the callers' outbound sidecars),
optionally narrowed by `port` and per limit by an Istio `HTTPMatchRequest`. `mode: local` is enforced by each
sidecar alone with Envoy's `local_ratelimit` filter (a token bucket: other algorithms, the delay strategy and
priority classes need `mode: global`, the rate-limit service `mizzen ratelimit`). See docs/ratelimit.md.

Mode-dependent rules are checked on the whole spec and reported per field (spec.limits[i].algorithm ...), all
problems at once.
"""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from .base import Spec
from .networking import WorkloadSelector
from .virtual_service import HTTPMatchRequest, duration_seconds

UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
ALGORITHMS = ("fixed_window", "sliding_window", "sliding_log", "token_bucket", "leaky_bucket", "gcra")
LOCAL_ALGORITHMS = ("token_bucket",)
DELAY_ALGORITHMS = ("token_bucket", "leaky_bucket", "gcra")
BURST_ALGORITHMS = ("token_bucket", "leaky_bucket", "gcra")
KEY_NAMES = ("sourceWorkload", "sourceNamespace", "sourcePrincipal", "sourceIp", "path")
KEY_FORMS = ("header", "query", "value")
PRIORITY_SOURCES = ("workload", "namespace", "principal")
# The statuses Envoy's filters can answer with (envoy.type.v3.StatusCode, 4xx and 5xx).
REJECT_STATUSES = frozenset({400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416,
                             417, 421, 422, 423, 424, 426, 428, 429, 431, 500, 501, 502, 503, 504, 505, 506, 507,
                             508, 510, 511})

_LIMIT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$")
_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


class PriorityClasses(Spec):
    """Callers are classified by a request header or by their source identity; each class keeps a reserved
    share (percent) of the limit under pressure, and unused shares are borrowed."""

    header: str | None = None
    source: Literal["workload", "namespace", "principal"] | None = None
    classes: dict[str, int] = Field(min_length=1)

    @field_validator("header")
    @classmethod
    def _header(cls, v: str | None) -> str | None:
        if v is not None and not _HEADER.match(v):
            raise ValueError(f"invalid header name {v!r}")
        return None if v is None else v.lower()

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: dict[str, int]) -> dict[str, int]:
        for name, pct in v.items():
            if not name:
                raise ValueError("a class needs a non-empty name")
            if not isinstance(pct, int) or isinstance(pct, bool) or not 1 <= pct <= 100:
                raise ValueError(f"share of class {name!r} must be a whole percent 1..100, got {pct!r}")
        if sum(v.values()) > 100:
            raise ValueError(f"class shares sum to {sum(v.values())}%, at most 100% can be reserved")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> "PriorityClasses":
        if (self.header is None) == (self.source is None):
            raise ValueError("set exactly one of header (a request header) or source (workload, namespace, "
                             "principal) to classify callers")
        return self


class RejectResponse(Spec):
    status: int = Field(default=429, ge=400, le=599)
    body: str | None = Field(default=None, max_length=4096)

    @field_validator("status")
    @classmethod
    def _status(cls, v: int) -> int:
        if v not in REJECT_STATUSES:
            raise ValueError(f"status {v} is not one Envoy can answer with; use a standard 4xx/5xx code such as "
                             "429 or 503")
        return v


class Limit(Spec):
    name: str
    match: HTTPMatchRequest | None = None
    key: list[Any] = Field(default_factory=list)
    requests_per_unit: int | None = Field(default=None, gt=0)
    unit: Literal["second", "minute", "hour", "day"] | None = None
    rate: float | None = Field(default=None, gt=0)  # requests per second (an alternative to requestsPerUnit+unit)
    burst: int | None = Field(default=None, ge=1)
    algorithm: Literal["fixed_window", "sliding_window", "sliding_log", "token_bucket", "leaky_bucket",
                       "gcra"] = "token_bucket"
    strategy: Literal["reject", "delay"] = "reject"
    max_delay: str | None = None
    priority: PriorityClasses | None = None
    shadow: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _LIMIT_NAME.match(v) or len(v) > 63:
            raise ValueError(f"invalid limit name {v!r}: lower-case letters, digits, '-' and '_'")
        return v

    @field_validator("key")
    @classmethod
    def _key(cls, v: list[Any]) -> list[Any]:
        errors = []
        seen: set[tuple[str, str]] = set()
        for i, part in enumerate(v):
            try:
                norm = key_part(part)
            except ValueError as e:
                errors.append(InitErrorDetails(type=PydanticCustomError("key", str(e)), loc=(i,), input=part))
                continue
            if norm in seen:
                errors.append(InitErrorDetails(type=PydanticCustomError("key", "listed twice in key"), loc=(i,),
                                               input=part))
            seen.add(norm)
        if errors:
            raise ValidationError.from_exception_data("key", errors)
        return v

    @field_validator("max_delay")
    @classmethod
    def _max_delay(cls, v: str | None) -> str | None:
        if v is not None:
            s = duration_seconds(v)
            if not 0.001 <= s <= 60:
                raise ValueError(f"maxDelay {v!r} must be between 1ms and 60s")
        return v

    @model_validator(mode="after")
    def _rate(self) -> "Limit":
        errors: list[tuple[tuple[Any, ...], str]] = []
        if self.rate is not None and (self.requests_per_unit is not None or self.unit is not None):
            errors.append((("rate",), "give either requestsPerUnit with unit, or rate (per second), not both"))
        elif self.rate is None:
            if self.requests_per_unit is None:
                errors.append((("requestsPerUnit",), "a limit needs requestsPerUnit with unit, or rate"))
            if self.unit is None:
                errors.append((("unit",), "requestsPerUnit needs a unit: second, minute, hour or day"))
        if self.burst is not None and self.algorithm not in BURST_ALGORITHMS:
            errors.append((("burst",), f"burst has no meaning for {self.algorithm} (a window counts requests per "
                                       f"window); it applies to {', '.join(BURST_ALGORITHMS)}"))
        if self.strategy == "delay":
            if self.algorithm not in DELAY_ALGORITHMS:
                errors.append((("strategy",), f"{self.algorithm} cannot compute a fair wait; strategy delay needs "
                                              f"one of {', '.join(DELAY_ALGORITHMS)}"))
            if self.max_delay is None:
                errors.append((("maxDelay",), "strategy delay needs maxDelay (longer waits are rejected)"))
            if self.priority is not None:
                errors.append((("priority",), "priority classes work with strategy reject only"))
        elif self.max_delay is not None:
            errors.append((("maxDelay",), "maxDelay applies to strategy delay only"))
        _raise(errors)
        return self

    def key_parts(self) -> tuple[tuple[str, str], ...]:
        """The key as (form, argument) pairs: ('sourceWorkload', ''), ('header', 'x-user'), ('value', 'c')."""
        return tuple(key_part(p) for p in self.key)

    def per_second(self) -> float:
        if self.rate is not None:
            return self.rate
        return (self.requests_per_unit or 0) / UNITS[self.unit or "second"]


def key_part(part: Any) -> tuple[str, str]:
    """Validate and normalize one key element."""
    if isinstance(part, str):
        if part not in KEY_NAMES:
            raise ValueError(f"unknown key {part!r}: use one of {', '.join(KEY_NAMES)}, or "
                             "{header: NAME}, {query: NAME}, {value: CONSTANT}")
        return part, ""
    if isinstance(part, dict) and len(part) == 1:
        (form, arg), = part.items()
        if form not in KEY_FORMS:
            raise ValueError(f"unknown key form {form!r}: use header, query or value")
        if not isinstance(arg, str) or not arg:
            raise ValueError(f"{form} needs a non-empty string")
        if form == "header":
            if not _HEADER.match(arg):
                raise ValueError(f"invalid header name {arg!r}")
            arg = arg.lower()
        return form, arg
    raise ValueError("a key element is a name (sourceWorkload, sourceNamespace, sourcePrincipal, sourceIp, path) "
                     "or a one-entry mapping {header|query|value: STRING}")


class RateLimitSpec(Spec):
    workload_selector: WorkloadSelector | None = None
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    mode: Literal["local", "global"] = "local"
    # local only: `instance` (each selected sidecar admits the rate) or `service` (the rate is for all the
    # selected instances together: each enforces rate / N, re-divided when N changes; no network call)
    scope: Literal["instance", "service"] = "instance"
    failure_mode: Literal["allow", "deny"] | None = None
    response: RejectResponse | None = None
    limits: list[Limit] = Field(min_length=1)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is not None and (not v or "/" in v or v.startswith("*")):
            raise ValueError(f"invalid host {v!r}: a service name, e.g. reviews or reviews.shop.svc.cluster.local")
        return v

    @model_validator(mode="after")
    def _whole(self) -> "RateLimitSpec":
        errors: list[tuple[tuple[Any, ...], str]] = []
        if (self.workload_selector is None) == (self.host is None):
            errors.append(((), "set exactly one of workloadSelector (limit at the callee's inbound sidecars) or "
                               "host (limit at the callers' outbound sidecars)"))
        names: dict[str, int] = {}
        for i, lim in enumerate(self.limits):
            errors += _match_errors(self, i, lim)
            if lim.name in names:
                errors.append((("limits", i, "name"), f"limit name {lim.name!r} is used twice "
                                                       f"(also limits[{names[lim.name]}])"))
            names.setdefault(lim.name, i)
        if self.scope == "service":
            if self.mode != "local":
                errors.append((("scope",), "scope service divides a local limit among the instances; a global "
                                           "limit is shared by every instance already"))
            if self.workload_selector is None:
                errors.append((("scope",), "scope service needs workloadSelector (the instances that share the "
                                           "limit)"))
        if self.mode == "local":
            if self.response is not None and self.response.body is not None:
                errors.append((("response", "body"), "a response body needs mode: global (Envoy's local_ratelimit "
                                                     "answers with its own body)"))
            if self.failure_mode is not None:
                errors.append((("failureMode",), "failureMode applies to mode global only (a local limit makes "
                                                 "no network call that could fail)"))
            for i, lim in enumerate(self.limits):
                at = ("limits", i)
                if lim.algorithm not in LOCAL_ALGORITHMS:
                    errors.append(((*at, "algorithm"), f"{lim.algorithm} needs mode: global (Envoy's "
                                                       "local_ratelimit filter is a token bucket)"))
                if lim.strategy != "reject":
                    errors.append(((*at, "strategy"), "strategy delay needs mode: global (Envoy cannot queue "
                                                      "requests by itself)"))
                if lim.priority is not None:
                    errors.append(((*at, "priority"), "priority classes need mode: global"))
                if lim.per_second() * 86400 < 1:
                    errors.append(((*at, "rate"), "rate below one per day"))
        _raise(errors)
        return self


def _match_errors(spec: "RateLimitSpec", i: int, lim: Limit) -> list[tuple[tuple[Any, ...], str]]:
    """What a limit's Istio match may say here: the caller's labels/namespace are known only at the caller's own
    sidecar (a `host` target), gateways do not apply to sidecar limits, and a match port must be the target's."""
    m, at, out = lim.match, ("limits", i, "match"), []
    if m is None:
        return out
    if spec.workload_selector is not None:
        if m.source_labels:
            out.append(((*at, "sourceLabels"), "sourceLabels needs a host target (enforced at the callers' "
                                               "sidecars); at the callee use key or priority source instead"))
        if m.source_namespace:
            out.append(((*at, "sourceNamespace"), "sourceNamespace needs a host target (enforced at the callers' "
                                                  "sidecars); at the callee use key: [sourceNamespace] instead"))
    if m.gateways:
        out.append(((*at, "gateways"), "gateways do not apply: a RateLimit is enforced by sidecars"))
    if m.port is not None and spec.port is not None and m.port != spec.port:
        out.append(((*at, "port"), f"port {m.port} differs from spec.port {spec.port}: the limit could never "
                                   "match"))
    return out


def _raise(errors: list[tuple[tuple[Any, ...], str]]) -> None:
    if errors:
        raise ValidationError.from_exception_data("RateLimit", [
            InitErrorDetails(type=PydanticCustomError("ratelimit", msg), loc=loc, input=None)
            for loc, msg in errors])
