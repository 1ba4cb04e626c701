"""Kubernetes Gateway API (`gateway.networking.k8s.io`): Gateway, HTTPRoute and ReferenceGrant, typed with the
API's documented rules for the core features. `model/gateway_api.py` converts them into the Istio Gateway and
VirtualService shapes the one gateway translator serves (as Istio does).

A Gateway API `Gateway` is kept under the internal kind name `KubeGateway` (Istio's `Gateway` has the same
kind name in another group); its apiVersion tells them apart in files, and `to_dict` writes `kind: Gateway`.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Spec
from .fields import At, check_labels, check_regex, is_dns1123_label, show

GROUP = "gateway.networking.k8s.io"
VERSIONS = (f"{GROUP}/v1", f"{GROUP}/v1beta1")
GRANT_VERSIONS = (f"{GROUP}/v1beta1", f"{GROUP}/v1")
KUBE_GATEWAY = "KubeGateway"


def _hostname(h: str, where: str) -> None:
    name = h[2:] if h.startswith("*.") else h
    if not name or not all(is_dns1123_label(p) for p in name.split(".")):
        raise At(where, f"invalid hostname {show(h)}: a DNS name, optionally with a leading '*.'")


# ------------------------------------------------------------------------------------------ Gateway
class SecretObjectReference(Spec):
    name: str
    namespace: str | None = None
    kind: Literal["Secret"] = "Secret"
    group: Literal[""] = ""


class GatewayTLSConfig(Spec):
    mode: Literal["Terminate", "Passthrough"] = "Terminate"
    certificate_refs: list[SecretObjectReference] = Field(default_factory=list, max_length=64)
    options: dict[str, str] = Field(default_factory=dict)


class LabelSelector(Spec):
    match_labels: dict[str, str] = Field(default_factory=dict)


class RouteNamespaces(Spec):
    from_: Literal["All", "Same", "Selector"] = Field(default="Same", alias="from")
    selector: LabelSelector | None = None


class RouteGroupKind(Spec):
    kind: str
    group: str | None = None


class AllowedRoutes(Spec):
    namespaces: RouteNamespaces = Field(default_factory=RouteNamespaces)
    kinds: list[RouteGroupKind] = Field(default_factory=list)


class Listener(Spec):
    name: str
    hostname: str | None = None
    port: int = Field(ge=1, le=65535)
    protocol: Literal["HTTP", "HTTPS", "TLS", "TCP"]
    tls: GatewayTLSConfig | None = None
    allowed_routes: AllowedRoutes = Field(default_factory=AllowedRoutes)

    @model_validator(mode="after")
    def _rules(self) -> "Listener":
        if not is_dns1123_label(self.name):
            raise At("name", f"invalid listener name {show(self.name)}: a DNS label")
        if self.hostname is not None:
            _hostname(self.hostname, "hostname")
        if self.protocol in ("HTTPS", "TLS") and self.tls is None:
            raise At("tls", f"a {self.protocol} listener needs tls")
        if self.protocol in ("HTTP", "TCP") and self.tls is not None:
            raise At("tls", f"a {self.protocol} listener has no tls")
        if self.tls is not None:
            if self.protocol == "HTTPS" and self.tls.mode != "Terminate":
                raise At("tls.mode", "an HTTPS listener terminates TLS (mode Terminate)")
            if self.tls.mode == "Terminate" and not self.tls.certificate_refs:
                raise At("tls.certificateRefs", "TLS mode Terminate needs a certificateRef")
        sel = self.allowed_routes.namespaces
        if sel.from_ == "Selector" and sel.selector is None:
            raise At("allowedRoutes.namespaces.selector", "from: Selector needs a selector")
        if sel.selector is not None:
            check_labels(sel.selector.match_labels)
        return self


class GatewayAddress(Spec):
    type: str | None = None
    value: str


class KubeGatewaySpec(Spec):
    gateway_class_name: str
    listeners: list[Listener] = Field(min_length=1, max_length=64)
    addresses: list[GatewayAddress] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> "KubeGatewaySpec":
        names: set[str] = set()
        for i, lst in enumerate(self.listeners):
            if lst.name in names:
                raise At(f"listeners[{i}].name", f"listener name {show(lst.name)} must be unique")
            names.add(lst.name)
        return self


# ------------------------------------------------------------------------------------------ HTTPRoute
class ParentReference(Spec):
    name: str
    namespace: str | None = None
    group: str | None = None  # default gateway.networking.k8s.io; "" (core) with kind Service: GAMMA
    kind: str | None = None  # default Gateway
    section_name: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)

    @property
    def is_service(self) -> bool:
        return self.kind == "Service" and (self.group or "") == ""

    @model_validator(mode="after")
    def _rules(self) -> "ParentReference":
        if self.is_service:
            return self
        if (self.group or GROUP) != GROUP or (self.kind or "Gateway") != "Gateway":
            raise ValueError(f"parentRef kind {show(self.kind)} (group {show(self.group)}): a Gateway "
                             f"({GROUP}) or a Service (group \"\")")
        return self


class PathMatch(Spec):
    type: Literal["Exact", "PathPrefix", "RegularExpression"] = "PathPrefix"
    value: str = "/"

    @model_validator(mode="after")
    def _rules(self) -> "PathMatch":
        if self.type == "RegularExpression":
            check_regex(self.value)
        elif not self.value.startswith("/"):
            raise At("value", f"path {show(self.value)} must start with '/'")
        return self


class HeaderMatch(Spec):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: str
    value: str

    @model_validator(mode="after")
    def _rules(self) -> "HeaderMatch":
        if self.type == "RegularExpression":
            check_regex(self.value)
        return self


class HTTPRouteMatch(Spec):
    path: PathMatch | None = None
    headers: list[HeaderMatch] = Field(default_factory=list, max_length=16)
    query_params: list[HeaderMatch] = Field(default_factory=list, max_length=16)
    method: Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"] | None = None


class HeaderValue(Spec):
    name: str
    value: str


class HeaderFilter(Spec):
    set: list[HeaderValue] = Field(default_factory=list)
    add: list[HeaderValue] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)


class PathModifier(Spec):
    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    replace_full_path: str | None = None
    replace_prefix_match: str | None = None

    @model_validator(mode="after")
    def _rules(self) -> "PathModifier":
        want = self.replace_full_path if self.type == "ReplaceFullPath" else self.replace_prefix_match
        if want is None:
            raise ValueError(f"type {self.type} needs {self.type[0].lower() + self.type[1:]}")
        return self


class RequestRedirect(Spec):
    scheme: Literal["http", "https"] | None = None
    hostname: str | None = None
    path: PathModifier | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    status_code: Literal[301, 302] = 302


class URLRewrite(Spec):
    hostname: str | None = None
    path: PathModifier | None = None


class BackendObjectReference(Spec):
    name: str
    namespace: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    group: Literal[""] = ""
    kind: Literal["Service"] = "Service"


class RequestMirror(Spec):
    backend_ref: BackendObjectReference


class HTTPRouteFilter(Spec):
    type: Literal["RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite",
                  "RequestMirror"]
    request_header_modifier: HeaderFilter | None = None
    response_header_modifier: HeaderFilter | None = None
    request_redirect: RequestRedirect | None = None
    url_rewrite: URLRewrite | None = None
    request_mirror: RequestMirror | None = None

    @model_validator(mode="after")
    def _rules(self) -> "HTTPRouteFilter":
        field = self.type[0].lower() + self.type[1:]
        attr = {"URLRewrite": "url_rewrite"}.get(self.type) or \
            "".join("_" + c.lower() if c.isupper() else c for c in field)
        if getattr(self, attr) is None:
            raise ValueError(f"filter type {self.type} needs {field if self.type != 'URLRewrite' else 'urlRewrite'}")
        return self


class HTTPBackendRef(BackendObjectReference):
    weight: int = Field(default=1, ge=0, le=1000000)
    filters: list[HTTPRouteFilter] = Field(default_factory=list)


class HTTPRouteTimeouts(Spec):
    request: str | None = None
    backend_request: str | None = None


class HTTPRouteRule(Spec):
    name: str | None = None
    matches: list[HTTPRouteMatch] = Field(default_factory=list, max_length=64)
    filters: list[HTTPRouteFilter] = Field(default_factory=list, max_length=16)
    backend_refs: list[HTTPBackendRef] = Field(default_factory=list, max_length=16)
    timeouts: HTTPRouteTimeouts | None = None

    @model_validator(mode="after")
    def _rules(self) -> "HTTPRouteRule":
        kinds = [f.type for f in self.filters]
        if "RequestRedirect" in kinds and "URLRewrite" in kinds:
            raise At("filters", "RequestRedirect and URLRewrite cannot be used together")
        if "RequestRedirect" in kinds and self.backend_refs:
            raise At("backendRefs", "a rule with a RequestRedirect filter has no backendRefs")
        for i, f in enumerate(self.filters):
            p = (f.request_redirect or f.url_rewrite).path if f.type in ("RequestRedirect", "URLRewrite") else None
            if p is not None and p.type == "ReplacePrefixMatch" and any(
                    m.path is not None and m.path.type != "PathPrefix" for m in self.matches):
                raise At(f"filters[{i}]", "ReplacePrefixMatch needs PathPrefix matches")
        for i, b in enumerate(self.backend_refs):
            if b.port is None:
                raise At(f"backendRefs[{i}].port", "a Service backendRef needs a port")
            if b.filters:
                raise At(f"backendRefs[{i}].filters", "backendRef filters are not supported (use the rule's)")
        if self.timeouts is not None and self.timeouts.request is not None:
            from .duration import duration_seconds
            try:
                duration_seconds(self.timeouts.request)
            except ValueError as e:
                raise At("timeouts.request", str(e)) from None
        return self


class HTTPRouteSpec(Spec):
    parent_refs: list[ParentReference] = Field(default_factory=list, max_length=32)
    hostnames: list[str] = Field(default_factory=list, max_length=16)
    rules: list[HTTPRouteRule] = Field(default_factory=lambda: [HTTPRouteRule()], max_length=16)

    @model_validator(mode="after")
    def _rules(self) -> "HTTPRouteSpec":
        for i, h in enumerate(self.hostnames):
            _hostname(h, f"hostnames[{i}]")
        return self


# ------------------------------------------------------------------------------------------ GRPCRoute
class GRPCMethodMatch(Spec):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    service: str | None = None
    method: str | None = None

    @model_validator(mode="after")
    def _rules(self) -> "GRPCMethodMatch":
        if not self.service and not self.method:
            raise ValueError("a method match needs service or method (or both)")
        for f in ("service", "method"):
            v = getattr(self, f)
            if v is None:
                continue
            if self.type == "RegularExpression":
                check_regex(v)
            elif "/" in v or not v:
                raise At(f, f"{f} {show(v)} may not contain '/'")
        return self


class GRPCRouteMatch(Spec):
    method: GRPCMethodMatch | None = None
    headers: list[HeaderMatch] = Field(default_factory=list, max_length=16)


class GRPCRouteFilter(Spec):
    type: Literal["RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror"]
    request_header_modifier: HeaderFilter | None = None
    response_header_modifier: HeaderFilter | None = None
    request_mirror: RequestMirror | None = None

    @model_validator(mode="after")
    def _rules(self) -> "GRPCRouteFilter":
        attr = "".join("_" + c.lower() if c.isupper() else c for c in self.type[0].lower() + self.type[1:])
        if getattr(self, attr) is None:
            raise ValueError(f"filter type {self.type} needs {self.type[0].lower() + self.type[1:]}")
        return self


class GRPCRouteRule(Spec):
    name: str | None = None
    matches: list[GRPCRouteMatch] = Field(default_factory=list, max_length=64)
    filters: list[GRPCRouteFilter] = Field(default_factory=list, max_length=16)
    backend_refs: list[HTTPBackendRef] = Field(default_factory=list, max_length=16)

    @model_validator(mode="after")
    def _rules(self) -> "GRPCRouteRule":
        for i, b in enumerate(self.backend_refs):
            if b.port is None:
                raise At(f"backendRefs[{i}].port", "a Service backendRef needs a port")
            if b.filters:
                raise At(f"backendRefs[{i}].filters", "backendRef filters are not supported (use the rule's)")
        return self


class GRPCRouteSpec(Spec):
    parent_refs: list[ParentReference] = Field(default_factory=list, max_length=32)
    hostnames: list[str] = Field(default_factory=list, max_length=16)
    rules: list[GRPCRouteRule] = Field(default_factory=lambda: [GRPCRouteRule()], max_length=16)

    @model_validator(mode="after")
    def _rules(self) -> "GRPCRouteSpec":
        for i, h in enumerate(self.hostnames):
            _hostname(h, f"hostnames[{i}]")
        return self


# ------------------------------------------------------------------------------------------ ReferenceGrant
class GrantFrom(Spec):
    group: str
    kind: str
    namespace: str


class GrantTo(Spec):
    group: str
    kind: str
    name: str | None = None


class ReferenceGrantSpec(Spec):
    from_: list[GrantFrom] = Field(alias="from", min_length=1)
    to: list[GrantTo] = Field(min_length=1)
