"""Istio EnvoyFilter (networking.istio.io/v1alpha3), accepted unchanged, with Istio's validation rules
(pkg/config/validation/envoyfilter and the CRD's). Mizzen applies it through the same machinery as its own
EnvoyPatch (translate/envoyfilter.py), and the control plane checks the patched config with the real Envoy
before accepting it. The WAYPOINT context has no proxy to act on in Mizzen (GATEWAY acts on gateway pods);
EXTENSION_CONFIG and BOOTSTRAP patches are accepted but have no effect (Mizzen has no ECDS and writes bootstraps itself): apply
warns and `mizzen analyze` reports them, as it does for operations that do nothing on their object."""
from __future__ import annotations

from typing import Any, Literal

import re

from pydantic import Field, model_validator

from .base import Spec
from .fields import At, Int32, UInt32, check_selector_labels, show
from .networking import WorkloadSelector
from .telemetry import PolicyTargetReference

ApplyTo = Literal["INVALID", "LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER", "ROUTE_CONFIGURATION",
                  "VIRTUAL_HOST", "HTTP_ROUTE", "CLUSTER", "EXTENSION_CONFIG", "BOOTSTRAP", "LISTENER_FILTER"]
Operation = Literal["INVALID", "MERGE", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "REPLACE",
                    "MERGE_AND_REPLACE_LIST"]
HCM_NAMES = ("envoy.filters.network.http_connection_manager", "envoy.http_connection_manager")
UNSUPPORTED_APPLY_TO = {"EXTENSION_CONFIG": "Mizzen has no extension config discovery (ECDS)",
                        "BOOTSTRAP": "Mizzen writes each proxy's bootstrap itself (use ProxyConfig or the agent)"}
# which operations make sense for which object (Istio applies the others as no-ops)
OPERATIONS = {
    "LISTENER": {"MERGE", "ADD", "REMOVE"},
    "FILTER_CHAIN": {"MERGE", "ADD", "REMOVE", "INSERT_FIRST", "INSERT_BEFORE", "INSERT_AFTER"},
    "NETWORK_FILTER": {"MERGE", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "REPLACE"},
    "HTTP_FILTER": {"MERGE", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "REPLACE"},
    "LISTENER_FILTER": {"MERGE", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "REPLACE"},
    "ROUTE_CONFIGURATION": {"MERGE", "ADD", "REMOVE", "MERGE_AND_REPLACE_LIST"},
    "VIRTUAL_HOST": {"MERGE", "ADD", "REMOVE", "MERGE_AND_REPLACE_LIST"},
    "HTTP_ROUTE": {"MERGE", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST",
                   "MERGE_AND_REPLACE_LIST"},
    "CLUSTER": {"MERGE", "ADD", "REMOVE", "MERGE_AND_REPLACE_LIST"},
}


class ProxyMatch(Spec):
    proxy_version: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _version(self) -> "ProxyMatch":
        if self.proxy_version and len(self.proxy_version) <= 1024:
            try:
                re.compile(self.proxy_version)
            except re.error as e:
                raise At("proxyVersion", f"invalid regex for proxy version: {e}") from None
        return self


class SubFilterMatch(Spec):
    name: str | None = None


class FilterMatch(Spec):
    name: str | None = None
    sub_filter: SubFilterMatch | None = None


class FilterChainMatch(Spec):
    name: str | None = None
    sni: str | None = None
    transport_protocol: str | None = None
    application_protocols: str | None = None
    filter: FilterMatch | None = None
    destination_port: UInt32 | None = None
    transport_socket: str | None = None


class ListenerMatch(Spec):
    port_number: UInt32 | None = None
    port_name: str | None = None
    filter_chain: FilterChainMatch | None = None
    listener_filter: str | None = None
    name: str | None = None


class RouteMatch(Spec):
    name: str | None = None
    action: Literal["ANY", "ROUTE", "REDIRECT", "DIRECT_RESPONSE"] = "ANY"


class VirtualHostMatch(Spec):
    name: str | None = None
    route: RouteMatch | None = None
    domain_name: str | None = None


class RouteConfigurationMatch(Spec):
    port_number: UInt32 | None = None
    port_name: str | None = None
    gateway: str | None = None
    vhost: VirtualHostMatch | None = None
    name: str | None = None


class ClusterMatch(Spec):
    port_number: UInt32 | None = None
    service: str | None = None
    subset: str | None = None
    name: str | None = None


class WaypointMatch(Spec):
    filter: FilterMatch | None = None
    route: RouteMatch | None = None
    port_number: UInt32 | None = None

    @model_validator(mode="after")
    def _port(self) -> "WaypointMatch":
        if self.port_number is not None and not 0 < self.port_number <= 65535:
            raise At("portNumber", "port must be between 1-65535")
        return self


class EnvoyConfigObjectMatch(Spec):
    context: Literal["ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY", "WAYPOINT"] = "ANY"
    proxy: ProxyMatch | None = None
    listener: ListenerMatch | None = None
    route_configuration: RouteConfigurationMatch | None = None
    cluster: ClusterMatch | None = None
    waypoint: WaypointMatch | None = None

    @model_validator(mode="after")
    def _one(self) -> "EnvoyConfigObjectMatch":
        if sum(x is not None for x in (self.listener, self.route_configuration, self.cluster, self.waypoint)) > 1:
            raise ValueError("only one of listener, routeConfiguration, cluster, waypoint may be set")
        if (self.context == "WAYPOINT") != (self.waypoint is not None):
            raise ValueError("only support waypointMatch when context is WAYPOINT")
        return self


class Patch(Spec):
    operation: Operation = "INVALID"
    value: dict[str, Any] | None = None
    filter_class: Literal["UNSPECIFIED", "AUTHN", "AUTHZ", "STATS"] | None = None


class EnvoyConfigObjectPatch(Spec):
    apply_to: ApplyTo = "INVALID"
    match: EnvoyConfigObjectMatch | None = None
    patch: Patch | None = None

    @model_validator(mode="after")
    def _rules(self) -> "EnvoyConfigObjectPatch":  # Istio's validateEnvoyFilter, per patch
        if self.match is not None and self.match.context == "WAYPOINT":
            return self
        if self.apply_to == "INVALID":
            raise At("applyTo", "missing applyTo")
        if self.patch is None:
            raise At("patch", "missing patch")
        if self.patch.operation == "INVALID":
            raise At("patch.operation", "missing patch operation")
        if self.patch.operation != "REMOVE" and self.patch.value is None:
            raise At("patch.value", "missing patch value for non-remove operation")
        m = self.match
        has_object = m is not None and any(x is not None for x in (m.listener, m.route_configuration, m.cluster))
        if self.apply_to in ("LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER", "LISTENER_FILTER"):
            if has_object and m.listener is None:
                raise At("match", "applyTo for listener class objects cannot have non listener match")
            fm = m.listener.filter_chain.filter if m and m.listener and m.listener.filter_chain else None
            if fm is not None:
                if not fm.name:
                    raise At("match.listener.filterChain.filter.name", "filter match has no name to match on")
                if fm.sub_filter is not None:
                    if self.apply_to != "HTTP_FILTER":
                        raise At("match.listener.filterChain.filter.subFilter",
                                 "subfilter match can be used with applyTo HTTP_FILTER only")
                    if fm.name not in HCM_NAMES:
                        raise At("match.listener.filterChain.filter.subFilter",
                                 f"subfilter match requires filter match with {HCM_NAMES[0]}")
                    if not fm.sub_filter.name:
                        raise At("match.listener.filterChain.filter.subFilter.name",
                                 "subfilter match has no name to match on")
        elif self.apply_to in ("ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE"):
            if has_object and m.route_configuration is None:
                raise At("match", "applyTo for http route class objects cannot have non route configuration match")
        elif self.apply_to == "CLUSTER":
            if has_object and m.cluster is None:
                raise At("match", "applyTo for cluster class objects cannot have non cluster match")
        return self


class EnvoyFilterSpec(Spec):
    workload_selector: WorkloadSelector | None = None
    target_refs: list[PolicyTargetReference] = Field(default_factory=list, max_length=16)
    config_patches: list[EnvoyConfigObjectPatch] = Field(default_factory=list)
    priority: Int32 = 0

    @model_validator(mode="after")
    def _one(self) -> "EnvoyFilterSpec":
        if self.workload_selector is not None and self.target_refs:
            raise ValueError("only one of targetRefs or workloadSelector can be set")
        if self.workload_selector is not None:
            try:
                check_selector_labels(self.workload_selector.labels)
            except ValueError as e:
                raise At("workloadSelector.labels", str(e)) from None
        return self


def describe(p: EnvoyConfigObjectPatch) -> str:
    """A short description of a patch for messages: `HTTP_FILTER INSERT_BEFORE (SIDECAR_INBOUND)`."""
    ctx = p.match.context if p.match else "ANY"
    return f"{p.apply_to} {p.patch.operation if p.patch else '?'} ({ctx})" + (
        f" {show(p.match.cluster.name)}" if p.match and p.match.cluster and p.match.cluster.name else "")
