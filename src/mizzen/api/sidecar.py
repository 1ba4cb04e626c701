"""Istio Sidecar (networking.istio.io): ingress and egress listeners, outbound traffic policy and inbound
connection pool typed all the way down, with Istio's validation rules (ValidateSidecar). Mizzen uses the
workloadSelector and egress hosts (what a proxy sees); the other fields are reported by `mizzen analyze` as
having no effect (api/effects.py)."""
from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, model_validator

from .base import Spec
from .destination_rule import ConnectionPoolSettings
from .fields import At, UInt32, check_fqdn, check_namespace_slash_host, is_ip, show
from .gateway import ServerTLSSettings
from .networking import TLS_PROTOCOLS, PortSelector, WorkloadSelector, check_port_name, check_protocol, parse_protocol
from .service_entry import UNIX_PREFIX, check_unix_address

CaptureMode = Literal["DEFAULT", "IPTABLES", "NONE"]


class SidecarPort(Spec):
    number: UInt32 = 0
    protocol: str | None = None
    name: str | None = None
    target_port: UInt32 | None = None

    @model_validator(mode="after")
    def _rules(self) -> "SidecarPort":
        if self.name:
            try:
                check_port_name(self.name)
            except ValueError as e:
                raise At("name", str(e)) from None
        try:
            check_protocol(self.protocol)
        except ValueError as e:
            raise At("protocol", str(e)) from None
        if self.target_port:
            raise At("targetPort", "targetPort has no impact on Sidecars")
        return self


def _check_pool(pool: ConnectionPoolSettings | None, where: str) -> None:
    if pool is not None and pool.tcp is None and pool.http is None:
        raise At(where, "connection pool must have at least one field")


class IstioIngressListener(Spec):
    port: SidecarPort
    bind: str | None = None
    capture_mode: CaptureMode | None = None
    default_endpoint: str | None = None
    tls: ServerTLSSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None

    @model_validator(mode="after")
    def _rules(self) -> "IstioIngressListener":
        if not 1 <= self.port.number <= 65535:
            raise At("port.number", f"port number {self.port.number} must be in the range 1..65535")
        if self.bind and not is_ip(self.bind):
            raise At("bind", f"{show(self.bind)} is not a valid IP")
        ep = self.default_endpoint
        if ep:
            if ep.startswith(UNIX_PREFIX):
                try:
                    check_unix_address(ep[len(UNIX_PREFIX):])
                except ValueError as e:
                    raise At("defaultEndpoint", str(e)) from None
            else:
                host, sep, port = ep.rpartition(":")
                host = host.strip("[]")
                if not sep or host not in ("", "127.0.0.1", "0.0.0.0", "::1", "::"):
                    raise At("defaultEndpoint", "defaultEndpoint must be of form 127.0.0.1:<port>, 0.0.0.0:<port>, "
                                                "[::1]:<port>, [::]:<port>, unix://<path> or unset")
                if not port.isdigit() or not 1 <= int(port) <= 65535:
                    raise At("defaultEndpoint", f"defaultEndpoint port {show(port)} must be a number in 1..65535")
        if self.tls is not None:
            t = self.tls
            if t.subject_alt_names:
                raise At("tls.subjectAltNames", "subjectAltNames is not supported in ingress tls")
            if t.https_redirect:
                raise At("tls.httpsRedirect", "httpsRedirect is not supported")
            if t.credential_name or t.credential_names:
                raise At("tls", "credentialName(s) is not currently supported in a Sidecar")
            if t.tls_certificates:
                raise At("tls.tlsCertificates", "tlsCertificates is not currently supported in a Sidecar")
            if t.mode in ("ISTIO_MUTUAL", "AUTO_PASSTHROUGH"):
                raise At("tls.mode", f"cannot set mode to {t.mode} in sidecar ingress tls")
            if parse_protocol(self.port.protocol) not in TLS_PROTOCOLS:
                raise At("tls", "server cannot have TLS settings for non HTTPS/TLS ports")
        _check_pool(self.connection_pool, "connectionPool")
        return self


class IstioEgressListener(Spec):
    port: SidecarPort | None = None
    bind: str | None = None
    capture_mode: CaptureMode | None = None
    hosts: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _rules(self) -> "IstioEgressListener":
        for i, h in enumerate(self.hosts):
            try:
                check_namespace_slash_host(h)
            except ValueError as e:
                raise At(f"hosts[{i}]", str(e)) from None
        if self.port is None:
            return self
        bind = self.bind or ""
        if self.port.number == 0:
            if not bind.startswith(UNIX_PREFIX):
                raise At("bind", "ports with 0 value must have a unix domain socket bind address")
            try:
                check_unix_address(bind[len(UNIX_PREFIX):])
            except ValueError as e:
                raise At("bind", str(e)) from None
            if self.capture_mode not in (None, "DEFAULT", "NONE"):
                raise At("captureMode", "captureMode must be DEFAULT/NONE for unix domain socket listeners")
        else:
            if self.port.number > 65535:
                raise At("port.number", f"port number {self.port.number} must be in the range 1..65535")
            if bind:
                try:
                    ipaddress.ip_address(bind)
                except ValueError:
                    raise At("bind", f"{show(bind)} is not a valid IP") from None
        return self


class OutboundTrafficPolicy(Spec):
    mode: Literal["REGISTRY_ONLY", "ALLOW_ANY"] = "REGISTRY_ONLY"
    egress_proxy: "EgressProxy | None" = None

    @model_validator(mode="after")
    def _rules(self) -> "OutboundTrafficPolicy":
        if self.egress_proxy is not None and self.mode != "ALLOW_ANY":
            raise At("egressProxy", "egressProxy must be set only with ALLOW_ANY outboundTrafficPolicy mode")
        return self


class EgressProxy(Spec):
    host: str
    subset: str | None = None
    port: PortSelector | None = None

    @model_validator(mode="after")
    def _rules(self) -> "EgressProxy":
        try:
            check_fqdn(self.host)
        except ValueError as e:
            raise At("host", str(e)) from None
        if self.port is None:
            raise At("port", "egressProxy port must be set")
        return self


OutboundTrafficPolicy.model_rebuild()


class SidecarSpec(Spec):
    workload_selector: WorkloadSelector | None = None
    ingress: list[IstioIngressListener] = Field(default_factory=list)
    egress: list[IstioEgressListener] = Field(default_factory=list)
    outbound_traffic_policy: OutboundTrafficPolicy | None = None
    inbound_connection_pool: ConnectionPoolSettings | None = None

    @model_validator(mode="after")
    def _rules(self) -> "SidecarSpec":
        if not (self.egress or self.ingress or self.outbound_traffic_policy or self.inbound_connection_pool):
            raise ValueError("sidecar: empty configuration provided")
        _check_pool(self.inbound_connection_pool, "inboundConnectionPool")
        ports: set[int] = set()
        for i, ing in enumerate(self.ingress):
            if ing.port.number in ports:
                raise At(f"ingress[{i}].port.number", "ports on IP bound listeners must be unique")
            ports.add(ing.port.number)
        ports, sockets = set(), set()
        for i, eg in enumerate(self.egress):
            if eg.port is None:
                if i != len(self.egress) - 1:
                    raise At(f"egress[{i}]", "the egress listener with empty port should be the last listener in "
                                             "the list" if all(e.port is not None for e in self.egress[i + 1:])
                             else "egress can have only one listener with empty port")
                continue
            if eg.port.number == 0:
                if eg.bind in sockets:
                    raise At(f"egress[{i}].bind", "unix domain socket values for listeners must be unique")
                sockets.add(eg.bind)
            elif eg.port.number in ports:
                raise At(f"egress[{i}].port.number", "ports on IP bound listeners must be unique")
            else:
                ports.add(eg.port.number)
        return self
