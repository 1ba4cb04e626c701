"""Istio ServiceEntry (networking.istio.io): every field of Istio's schema and Istio's validation rules
(ValidateServiceEntry and the CRD's own rules): hosts, addresses, ports, resolution with its endpoint rules,
`unix://` endpoints, exportTo.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import Spec
from .fields import (MAX_U32, At, Port, UInt32, check_export_to, check_fqdn, check_ip_subnet, check_labels,
                     check_wildcard_domain, is_ip, show, split_at)
from .networking import (HTTP_PROTOCOLS, TLS_PROTOCOLS, WorkloadSelector, check_port_name, check_protocol,
                         parse_protocol)

UNIX_PREFIX = "unix://"
MAX_UNIX_PATH = 107  # sockaddr_un.sun_path (108) less its NUL; abstract names (`@`) alike


def check_unix_address(path: str) -> None:
    """Istio's ValidateUnixAddress: an absolute path to a file, or an abstract socket (`@name`)."""
    if not path:
        raise ValueError("unix address must not be empty")
    if len(path.encode()) > MAX_UNIX_PATH:  # the kernel's sun_path; Envoy refuses a longer one
        raise ValueError(f"unix socket path {show(path)} is longer than {MAX_UNIX_PATH} bytes")
    if path.startswith("@"):
        return
    if not path.startswith("/") or path.endswith("/") or "\0" in path:
        raise ValueError(f"{show(path)} is not an absolute path to a file")


class ServicePort(Spec):
    number: Port
    protocol: str | None = Field(default=None, max_length=256)
    name: str = Field(max_length=256)
    target_port: Port | None = None

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, v: str | None) -> str | None:
        check_protocol(v)
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        check_port_name(v)
        return v


class WorkloadEntry(Spec):
    address: str | None = Field(default=None, max_length=256)
    ports: dict[str, Port] = Field(default_factory=dict, max_length=128)
    labels: dict[str, str] = Field(default_factory=dict, max_length=256)
    network: str | None = Field(default=None, max_length=2048)
    locality: str | None = Field(default=None, max_length=2048)
    weight: UInt32 | None = None
    service_account: str | None = Field(default=None, max_length=253)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        check_labels(v)
        return v

    @field_validator("ports")
    @classmethod
    def _ports(cls, v: dict[str, int]) -> dict[str, int]:
        for name in v:
            try:
                check_port_name(name)
            except ValueError as e:
                raise At(f"[{show(name, 60)}]", str(e)) from None
        return v

    @model_validator(mode="after")
    def _address(self) -> "WorkloadEntry":
        if not self.address and not self.network:
            raise ValueError("address is required")
        if self.address and self.address.startswith(UNIX_PREFIX):
            try:
                check_unix_address(self.address[len(UNIX_PREFIX):])
            except ValueError as e:
                raise At("address", str(e)) from None
            if self.ports:
                raise At("ports", f"unix endpoint {show(self.address)} must not include ports")
        return self

    @property
    def is_unix(self) -> bool:
        return bool(self.address and self.address.startswith(UNIX_PREFIX))


Resolution = Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"]


class ServiceEntrySpec(Spec):
    hosts: list[str] = Field(min_length=1, max_length=256)
    addresses: list[str] = Field(default_factory=list, max_length=256)
    ports: list[ServicePort] = Field(default_factory=list, max_length=256)
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] = "MESH_EXTERNAL"
    resolution: Resolution = "NONE"
    endpoints: list[WorkloadEntry] = Field(default_factory=list, max_length=4096)
    workload_selector: WorkloadSelector | None = None
    export_to: list[str] = Field(default_factory=list)
    subject_alt_names: list[str] = Field(default_factory=list)

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        for i, h in enumerate(v):
            if h == "*":
                raise At(f"[{i}]", "invalid host *: a ServiceEntry cannot be for every host")
            try:
                check_wildcard_domain(h)
            except ValueError as e:
                raise At(f"[{i}]", str(e)) from None
        return v

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for i, a in enumerate(v):
            if len(a) > 64:
                raise At(f"[{i}]", f"address {show(a)} is too long")
            try:
                check_ip_subnet(a)
            except ValueError as e:
                raise At(f"[{i}]", str(e)) from None
        return v

    @field_validator("ports")
    @classmethod
    def _ports(cls, v: list[ServicePort]) -> list[ServicePort]:
        names: set[str] = set()
        numbers: set[int] = set()
        for i, p in enumerate(v):
            if p.name in names:
                raise At(f"[{i}].name", f"service entry port name {show(p.name)} already defined")
            if p.number in numbers:
                raise At(f"[{i}].number", f"service entry port {p.number} already defined")
            names.add(p.name)
            numbers.add(p.number)
        return v

    @model_validator(mode="after")
    def _resolution(self) -> "ServiceEntrySpec":
        if self.workload_selector is not None and self.endpoints:
            raise ValueError("only one of workloadSelector or endpoints is allowed in a ServiceEntry")
        if any("/" in a for a in self.addresses) and self.resolution not in ("NONE", "STATIC"):
            raise At("addresses", "CIDR addresses are allowed only for NONE/STATIC resolution types")
        port_names = {p.name for p in self.ports}
        res = self.resolution
        if res == "NONE" and self.endpoints:
            raise At("endpoints", "no endpoints should be provided for resolution type NONE")
        if res == "STATIC":
            for i, e in enumerate(self.endpoints):
                if e.address and not e.is_unix and not is_ip(e.address):
                    raise At(f"endpoints[{i}].address", f"endpoint address {show(e.address)} is not a valid IP "
                                                        "address (resolution STATIC; use DNS for host names)")
                if e.is_unix and len(self.ports) != 1:
                    raise At(f"endpoints[{i}].address", "exactly 1 service port required for unix endpoints")
                self._endpoint_ports(i, e, port_names)
        if res in ("DNS", "DNS_ROUND_ROBIN"):
            if not self.endpoints:
                for i, h in enumerate(self.hosts):
                    try:
                        check_fqdn(h)
                    except ValueError as e:
                        raise At(f"hosts[{i}]", f"hosts must be FQDN or contain only prefix wildcards if no "
                                                f"endpoints are provided for resolution mode {res}: {e}") from None
            if res == "DNS_ROUND_ROBIN" and len(self.endpoints) > 1:
                raise At("endpoints", f"there must only be 0 or 1 endpoint for resolution mode {res}")
            for i, e in enumerate(self.endpoints):
                if e.address and not is_ip(e.address):
                    try:
                        check_fqdn(e.address)
                    except ValueError:
                        raise At(f"endpoints[{i}].address", f"endpoint address {show(e.address)} is not a valid "
                                                            "FQDN or an IP address") from None
                self._endpoint_ports(i, e, port_names)
        if res == "DYNAMIC_DNS":
            for i, h in enumerate(self.hosts):
                if not h.startswith("*"):
                    raise At(f"hosts[{i}]", f"host must be wildcarded for resolution mode {res}")
            if self.addresses:
                raise At("addresses", f"addresses cannot be set for resolution type {res}")
            if self.endpoints:
                raise At("endpoints", f"endpoints cannot be set for resolution type {res}")
            for i, p in enumerate(self.ports):
                if parse_protocol(p.protocol) not in ("HTTP", "TLS", "GRPC", "HTTP2"):
                    raise At(f"ports[{i}].protocol", f"only HTTP, TLS, GRPC, and HTTP2 protocols are supported "
                                                     f"for resolution type {res}")
        if res != "NONE" and len(self.hosts) > 1:
            for i, p in enumerate(self.ports):
                proto = parse_protocol(p.protocol)
                if proto not in HTTP_PROTOCOLS and proto not in TLS_PROTOCOLS:
                    raise At(f"ports[{i}].protocol", "multiple hosts provided with non-HTTP, non-TLS ports")
        total = sum(e.weight or 0 for e in self.endpoints)
        if total > MAX_U32:
            raise At("endpoints", f"the endpoints' weights sum to {total}, more than Envoy allows ({MAX_U32})")
        return self

    @staticmethod
    def _endpoint_ports(i: int, e: WorkloadEntry, port_names: set[str]) -> None:
        for name in e.ports:
            if name not in port_names:
                raise At(f"endpoints[{i}].ports", f"endpoint port {show(name)} is not defined by the service entry")


def resource_checks(r: Any) -> list[tuple[str, str]]:
    """Rules that need the namespace: exportTo."""
    try:
        check_export_to(r.spec.export_to, r.namespace, service_entry=True)
    except ValueError as e:
        sub, msg = split_at(str(e))
        return [("exportTo" + sub, msg)]
    return []
