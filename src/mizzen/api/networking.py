"""Istio networking.istio.io kinds: VirtualService, DestinationRule, ServiceEntry, Sidecar, Gateway.

Fields follow Istio's reference. Fields Mizzen does not translate yet are still typed where cheap
(so a typo is caught) and otherwise accepted as free-form mappings; see docs/api.md for what each
field does today.
"""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

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


class HTTPRoute(Spec):
    name: str | None = None
    match: list[HTTPMatchRequest] = Field(default_factory=list)
    route: list[HTTPRouteDestination] = Field(default_factory=list)
    redirect: dict[str, Any] | None = None
    direct_response: dict[str, Any] | None = None
    delegate: dict[str, Any] | None = None
    rewrite: dict[str, Any] | None = None
    timeout: str | None = None
    retries: dict[str, Any] | None = None
    fault: dict[str, Any] | None = None
    mirror: Destination | None = None
    mirrors: list[dict[str, Any]] = Field(default_factory=list)
    mirror_percentage: Percent | None = None
    mirror_percent: int | None = None
    cors_policy: dict[str, Any] | None = None
    headers: Headers | None = None

    @model_validator(mode="after")
    def _weights(self) -> "HTTPRoute":
        if len(self.route) > 1:
            total = sum(d.weight for d in self.route)
            if total != 100:
                raise ValueError(
                    f"route weights sum to {total}, must be 100 when a route has several destinations"
                )
        if not self.route and self.redirect is None and self.direct_response is None and self.delegate is None:
            raise ValueError("an http route needs one of route, redirect, directResponse or delegate")
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


class LoadBalancerSettings(Spec):
    simple: LbSimple | None = None
    consistent_hash: dict[str, Any] | None = None
    locality_lb_setting: dict[str, Any] | None = None
    warmup_duration_secs: str | None = None


class PortTrafficPolicy(Spec):
    port: PortSelector | None = None
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: dict[str, Any] | None = None
    outlier_detection: dict[str, Any] | None = None
    tls: dict[str, Any] | None = None


class TrafficPolicy(Spec):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: dict[str, Any] | None = None
    outlier_detection: dict[str, Any] | None = None
    tls: dict[str, Any] | None = None
    port_level_settings: list[PortTrafficPolicy] = Field(default_factory=list)
    tunnel: dict[str, Any] | None = None
    proxy_protocol: dict[str, Any] | None = None


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
