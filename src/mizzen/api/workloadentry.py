"""Istio's kinds for workloads outside the mesh's runners (VMs, bare-metal processes), accepted unchanged:
`WorkloadEntry` (one such workload: address, labels, ports, locality, weight, service account) and
`WorkloadGroup` (the template VMs of one kind share, with their readiness probe).

A WorkloadEntry is an endpoint like a registered instance: a v1 Service (or a ServiceEntry's
workloadSelector) whose selector matches its labels in its namespace routes to it (model/workloadentries.py).
Mizzen sends it plain traffic unless it is labelled `security.istio.io/tlsMode: istio` (it has a sidecar).
A WorkloadGroup is validated and stored: auto-registration of VMs against it (istiod creates their
WorkloadEntries) is not done — write the WorkloadEntries, or register the VM's instances through the REST or
Consul API.
"""
from __future__ import annotations

import ipaddress
from typing import Any

from pydantic import Field, field_validator, model_validator

from .base import Spec


def _check_ports(v: dict[str, int]) -> dict[str, int]:
    for name, port in v.items():
        if not name:
            raise ValueError("ports: a port needs a name")
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"ports.{name}: {port!r} is not a port number (1-65535)")
    return v


class WorkloadEntrySpec(Spec):
    address: str = ""
    ports: dict[str, int] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    network: str | None = None
    locality: str | None = None
    weight: int | None = Field(default=None, ge=0, le=2 ** 32 - 1)
    service_account: str | None = None

    _ports = field_validator("ports")(classmethod(lambda cls, v: _check_ports(v)))

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if v.startswith("unix://"):
            raise ValueError(f"address {v!r}: unix domain socket endpoints are not supported")
        if v:
            try:
                ipaddress.ip_address(v)
            except ValueError:
                raise ValueError(f"address {v!r} must be an IP address (host names are not resolved for "
                                 f"WorkloadEntries)") from None
        return v


class WorkloadEntryStandalone(WorkloadEntrySpec):
    @model_validator(mode="after")
    def _needs_address(self) -> "WorkloadEntryStandalone":
        if not self.address:
            raise ValueError("address: a WorkloadEntry needs the IP address its workload is reached at")
        return self


class GroupMetadata(Spec):
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class HTTPGet(Spec):
    path: str = "/"
    port: int = Field(ge=1, le=65535)
    host: str | None = None
    scheme: str | None = None
    http_headers: list[dict[str, str]] = Field(default_factory=list)


class TCPSocket(Spec):
    port: int = Field(ge=1, le=65535)
    host: str | None = None


class ReadinessProbe(Spec):
    initial_delay_seconds: int = Field(default=0, ge=0)
    timeout_seconds: int = Field(default=1, ge=0)
    period_seconds: int = Field(default=10, ge=0)
    success_threshold: int = Field(default=1, ge=0)
    failure_threshold: int = Field(default=3, ge=0)
    http_get: HTTPGet | None = None
    tcp_socket: TCPSocket | None = None
    exec: dict[str, Any] | None = None
    grpc: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one(self) -> "ReadinessProbe":
        if sum(x is not None for x in (self.http_get, self.tcp_socket, self.exec, self.grpc)) > 1:
            raise ValueError("a probe has one of httpGet, tcpSocket, exec, grpc")
        return self


class WorkloadGroupSpec(Spec):
    metadata: GroupMetadata = Field(default_factory=GroupMetadata)
    template: WorkloadEntrySpec
    probe: ReadinessProbe | None = None

    @model_validator(mode="after")
    def _template(self) -> "WorkloadGroupSpec":
        if self.template.address:
            raise ValueError("template.address: a WorkloadGroup's template has no address (each VM has its own)")
        return self
