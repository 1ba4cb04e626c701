"""Istio networking.istio.io kinds: the shared pieces (apiVersions, PortSelector) and ServiceEntry, Sidecar,
Gateway. VirtualService is in virtual_service.py, DestinationRule in destination_rule.py.

Fields follow Istio's reference. Fields Mizzen does not translate yet are still typed where cheap
(so a typo is caught) and otherwise accepted as free-form mappings; see docs/api.md for what each
field does today.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import Spec

ISTIO_NETWORKING_VERSIONS = (
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
)


class PortSelector(Spec):  # a VirtualService destination's port, a DestinationRule's portLevelSettings
    number: int = Field(ge=1, le=65535)


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


class OutboundTrafficPolicy(Spec):
    # Istio's enum default (0) is REGISTRY_ONLY: `outboundTrafficPolicy: {}` means REGISTRY_ONLY
    mode: Literal["REGISTRY_ONLY", "ALLOW_ANY"] = "REGISTRY_ONLY"
    egress_proxy: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _proxy(self) -> "OutboundTrafficPolicy":
        if self.egress_proxy is not None:
            raise ValueError("egressProxy is not supported: traffic outside the registry is passed through "
                             "(ALLOW_ANY) or refused (REGISTRY_ONLY)")
        return self


class SidecarSpec(Spec):
    workload_selector: WorkloadSelector | None = None
    ingress: list[dict[str, Any]] = Field(default_factory=list)
    egress: list[IstioEgressListener] = Field(default_factory=list)
    outbound_traffic_policy: OutboundTrafficPolicy | None = None
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
