"""Istio VirtualService (networking.istio.io): hosts, gateways, HTTP routes (http_route.py), TLS and TCP
routes, exportTo — with Istio's validation rules (ValidateVirtualService): host forms, duplicate hosts,
delegation, SNI hosts within the VirtualService's hosts, route destinations.

Everything in http_route.py is re-exported here (`from mizzen.api.virtual_service import HTTPRoute`).
"""
from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from .base import Spec
from .fields import (MAX_U32, At, NonNegInt32, check_export_to, check_gateway_names, check_ip_subnet, check_labels,
                     check_wildcard_domain, host_matches, host_subset_of, is_dns1123_label, is_ip, show, split_at)
from .http_route import *  # noqa: F401,F403  (the HTTP route models are part of this module's API)
from .http_route import Destination, HTTPRoute, route_problems
from .duration import duration_seconds  # noqa: F401  (kept importable from here)


class L4MatchAttributes(Spec):
    destination_subnets: list[str] = Field(default_factory=list)
    port: int | None = Field(default=None, ge=0, le=65535)
    source_labels: dict[str, str] = Field(default_factory=dict)
    gateways: list[str] = Field(default_factory=list)
    source_namespace: str | None = None
    source_subnet: str | None = None

    @model_validator(mode="after")
    def _rules(self) -> "L4MatchAttributes":
        for i, s in enumerate(self.destination_subnets):
            try:
                check_ip_subnet(s)
            except ValueError as e:
                raise At(f"destinationSubnets[{i}]", str(e)) from None
        if self.source_subnet:
            try:
                check_ip_subnet(self.source_subnet)
            except ValueError as e:
                raise At("sourceSubnet", str(e)) from None
        try:
            check_labels(self.source_labels)
        except ValueError as e:
            sub, msg = split_at(str(e))
            raise At("sourceLabels" + sub, msg) from None
        try:
            check_gateway_names(self.gateways)
        except ValueError as e:
            sub, msg = split_at(str(e))
            raise At("gateways" + sub, msg) from None
        if self.source_namespace is not None and not is_dns1123_label(self.source_namespace):
            raise At("sourceNamespace", f"sourceNamespace match {show(self.source_namespace)} is invalid")
        return self


class TLSMatchAttributes(L4MatchAttributes):
    sni_hosts: list[str] = Field(min_length=1)


class RouteDestination(Spec):
    destination: Destination
    weight: NonNegInt32 = 0


def _check_weights(route: list[RouteDestination]) -> None:
    if len(route) > 1:
        total = sum(d.weight for d in route)
        if total == 0:
            raise At("route", "total destination weight = 0")
        if total > MAX_U32:
            raise At("route", f"total destination weight {total} is more than Envoy allows ({MAX_U32})")


class TCPRoute(Spec):
    match: list[L4MatchAttributes] = Field(default_factory=list)
    route: list[RouteDestination] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rules(self) -> "TCPRoute":
        if not self.route:
            raise At("route", "TCP route is required")
        _check_weights(self.route)
        return self


class TLSRoute(Spec):
    match: list[TLSMatchAttributes] = Field(min_length=1)
    route: list[RouteDestination] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rules(self) -> "TLSRoute":
        if not self.route:
            raise At("route", "TLS route is required")
        _check_weights(self.route)
        return self


class VirtualServiceSpec(Spec):
    hosts: list[str] = Field(default_factory=list)
    gateways: list[str] = Field(default_factory=list)
    http: list[HTTPRoute] = Field(default_factory=list)
    tls: list[TLSRoute] = Field(default_factory=list)
    tcp: list[TCPRoute] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list)

    @field_validator("gateways")
    @classmethod
    def _gateways(cls, v: list[str]) -> list[str]:
        check_gateway_names(v)
        return v

    @property
    def applies_to_gateway(self) -> bool:
        return bool(self.gateways) and "mesh" not in self.gateways

    @property
    def applies_to_mesh(self) -> bool:
        return not self.gateways or "mesh" in self.gateways

    @model_validator(mode="after")
    def _rules(self) -> "VirtualServiceSpec":
        if not self.hosts:  # a delegate VirtualService (Istio): only http routes, one level of delegation
            if self.gateways:
                raise At("gateways", "a delegate VirtualService (one without hosts) must have no gateways; the "
                                     "root VirtualService's gateways apply")
            if self.tls:
                raise At("tls", "a delegate VirtualService (one without hosts) must have no tls route")
            if self.tcp:
                raise At("tcp", "a delegate VirtualService (one without hosts) must have no tcp route")
        if not self.http and not self.tcp and not self.tls:
            raise ValueError("http, tcp or tls must be provided in virtual service")
        for i, h in enumerate(self.hosts):
            try:
                check_wildcard_domain(h)
            except ValueError as e:
                if not is_ip(h):
                    raise At(f"hosts[{i}]", str(e)) from None
            if h == "*" and self.applies_to_mesh:
                raise At(f"hosts[{i}]", "wildcard host * is not allowed for virtual services bound to the mesh "
                                        "gateway")
        for i, a in enumerate(self.hosts):
            for b in self.hosts[i + 1:]:
                if host_matches(a, b):
                    raise At(f"hosts[{i}]", f"duplicate hosts in virtual service: {show(a)} & {show(b)}")
        if not self.applies_to_gateway:
            for i, r in enumerate(self.http):
                for j, m in enumerate(r.match):
                    if m.jwt_claim_headers:
                        raise At(f"http[{i}].match[{j}]", f"JWT claim based routing ({show(m.jwt_claim_headers[0])}) "
                                                          "is only supported for gateways")
        for i, r in enumerate(self.http):
            for path, msg in route_problems(r, delegate=not self.hosts):
                raise At(f"http[{i}].{path}", msg)
        for i, t in enumerate(self.tls):
            for j, m in enumerate(t.match):
                for k, sni in enumerate(m.sni_hosts):
                    self._check_sni(sni, f"tls[{i}].match[{j}].sniHosts[{k}]")
        return self

    def _check_sni(self, sni: str, where: str) -> None:
        try:
            check_wildcard_domain(sni)
        except ValueError as e:
            if is_ip(sni):
                return  # Istio: a warning (clients rarely send an IP as SNI)
            raise At(where, str(e)) from None
        if not any(host_subset_of(sni, h) for h in self.hosts):
            raise At(where, f"SNI host {show(sni)} is not a compatible subset of any of the virtual service hosts: "
                            f"[{', '.join(self.hosts)}]")

    @property
    def is_delegate(self) -> bool:
        return not self.hosts


def resource_checks(r: Any) -> list[tuple[str, str]]:
    """Rules that need the namespace: exportTo."""
    try:
        check_export_to(r.spec.export_to, r.namespace)
    except ValueError as e:
        sub, msg = split_at(str(e))
        return [("exportTo" + sub, msg)]
    return []
