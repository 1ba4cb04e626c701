"""Istio's kinds for workloads outside the mesh's runners (VMs, bare-metal processes), accepted unchanged:
`WorkloadEntry` (one such workload: address, labels, ports, locality, weight, service account) and
`WorkloadGroup` (the template VMs of one kind share, with their readiness probe).

A WorkloadEntry is an endpoint like a registered instance: a v1 Service (or a ServiceEntry's
workloadSelector) whose selector matches its labels in its namespace routes to it (model/workloadentries.py).
Mizzen sends it plain traffic unless it is labelled `security.istio.io/tlsMode: istio` (it has a sidecar).
Its `address` is an IP address, a unix domain socket (`unix:///path` or abstract `unix://@name`: an Envoy
pipe endpoint, without ports, as Istio), or — accepted as Istio accepts it — a host name, or nothing with a
`network` set (a workload behind another network's gateway). Mizzen's endpoints are addresses and it has one
network, so the last two are stored but are no endpoints; `mizzen analyze` reports them (MZ0110).
A WorkloadGroup is validated and stored: auto-registration of VMs against it (istiod creates their
WorkloadEntries) is not done — write the WorkloadEntries, or register the VM's instances through the REST or
Consul API.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import Spec
from .fields import check_fqdn, show
from .service_entry import check_unix_address


UNIX_PREFIX = "unix://"
_PORT_NAME = re.compile(r"[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?")  # Istio's CRD rule (a DNS-1123-like label)
_PROBE_HEADER = re.compile(r"[-_A-Za-z0-9]+")


def _check_ports(v: dict[str, int]) -> dict[str, int]:
    for name, port in v.items():
        if not name:
            raise ValueError("ports: a port needs a name")
        if len(name) >= 63 or not _PORT_NAME.fullmatch(name):
            raise ValueError(f"ports: port name {name!r} must be valid: letters, digits and '-', starting and "
                             "ending with a letter or digit, shorter than 63 characters")
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"ports.{name}: {port!r} is not a port number (1-65535)")
    return v


def address_kind(address: str) -> str:
    """'' (none), 'ip', 'unix' or 'fqdn' — what a valid WorkloadEntry address is."""
    if not address:
        return ""
    if address.startswith(UNIX_PREFIX):
        return "unix"
    try:
        ipaddress.ip_address(address)
        return "ip"
    except ValueError:
        return "fqdn"


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
        if len(v) > 256:
            raise ValueError("address may not be longer than 256 characters")
        kind = address_kind(v)
        if kind == "unix":
            path = v[len(UNIX_PREFIX):]
            if not path.startswith(("/", "@")):
                raise ValueError(f"address {v!r}: UDS must be an absolute path or abstract socket "
                                 "(unix:///path or unix://@name)")
            if v.endswith("/") or path == "@":
                raise ValueError(f"address {v!r}: UDS may not be a dir")
            check_unix_address(path)  # NUL, the kernel's length limit
        elif kind == "fqdn":
            if v.rsplit(".", 1)[-1].isdigit():  # `999.1.1.1`: no IP, and a host name's last label is no number
                raise ValueError(f"endpoint address {show(v)} is not a valid IP address")
            try:
                check_fqdn(v)
            except ValueError:
                raise ValueError(f"endpoint address {show(v)} is not a valid FQDN or an IP address") from None
        return v

    @model_validator(mode="after")
    def _unix_ports(self) -> "WorkloadEntrySpec":
        if self.address.startswith(UNIX_PREFIX) and self.ports:
            raise ValueError(f"UDS may not include ports: unix endpoint {self.address} must not include ports")
        return self


class WorkloadEntryStandalone(WorkloadEntrySpec):
    @model_validator(mode="after")
    def _needs_address(self) -> "WorkloadEntryStandalone":
        if not self.address and not self.network:
            raise ValueError("Address is required: set address (or network, for a workload behind another "
                             "network's gateway)")
        return self


class GroupMetadata(Spec):
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class HTTPHeader(Spec):
    name: str = ""
    value: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _PROBE_HEADER.fullmatch(v):
            raise ValueError(f"invalid header name {show(v)}: letters, digits, '-' and '_'")
        return v


class HTTPGet(Spec):
    path: str = "/"
    port: int = Field(ge=1, le=65535)
    host: str | None = None
    scheme: Literal["HTTP", "HTTPS", ""] | None = None
    http_headers: list[HTTPHeader] = Field(default_factory=list)


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
