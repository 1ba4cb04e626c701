"""Istio Gateway (networking.istio.io): servers, ports, hosts and TLS settings typed all the way down, with
Istio's validation rules (ValidateGateway, validateServer, validateTLSOptions). Stored, analyzed; gateways are
not run by Mizzen yet. ServerTLSSettings is shared with the Sidecar's ingress listeners."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import Spec
from .fields import At, UInt32, check_labels, check_namespace_slash_host, is_dns1123_label, is_ip, show
from .networking import HTTP_PROTOCOLS, TLS_PROTOCOLS, check_port_name, parse_protocol
from .service_entry import UNIX_PREFIX, check_unix_address

TlsVersion = Literal["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"]


class TLSCertificate(Spec):
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None


class ServerTLSSettings(Spec):
    https_redirect: bool = False
    mode: Literal["PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"] = \
        "PASSTHROUGH"
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    ca_crl: str | None = None
    credential_name: str | None = None
    credential_names: list[str] | None = Field(default=None, min_length=1, max_length=2)
    tls_certificates: list[TLSCertificate] | None = Field(default=None, min_length=1, max_length=2)
    ca_cert_credential_name: str | None = None
    subject_alt_names: list[str] = Field(default_factory=list)
    verify_certificate_spki: list[str] = Field(default_factory=list)
    verify_certificate_hash: list[str] = Field(default_factory=list)
    min_protocol_version: TlsVersion | None = None
    max_protocol_version: TlsVersion | None = None
    cipher_suites: list[str] = Field(default_factory=list)
    ecdh_curves: list[str] = Field(default_factory=list)
    insecure_skip_verify: bool | None = None

    @model_validator(mode="after")
    def _rules(self) -> "ServerTLSSettings":  # Istio's validateTLSOptions
        certs = self.tls_certificates or []
        if self.mode == "ISTIO_MUTUAL":
            for name, v in (("serverCertificate", self.server_certificate), ("privateKey", self.private_key),
                            ("caCertificates", self.ca_certificates), ("tlsCertificates", certs),
                            ("credentialName", self.credential_name), ("credentialNames", self.credential_names)):
                if v:
                    raise At(name, f"ISTIO_MUTUAL TLS cannot have an associated {name}")
            return self
        sources = sum(bool(x) for x in (self.server_certificate and self.private_key, self.credential_name,
                                        self.credential_names, certs))
        if sources > 1:
            raise ValueError("only one of credentialName, credentialNames, serverCertificate/privateKey, "
                             "tlsCertificates should be specified")
        if self.mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"):
            if not (self.credential_name or self.credential_names):
                label = "SIMPLE TLS" if self.mode == "SIMPLE" else "MUTUAL TLS"
                if self.mode != "SIMPLE" and not self.ca_certificates:
                    raise At("caCertificates", f"{label} requires a client CA bundle")
                for c in certs or [TLSCertificate(server_certificate=self.server_certificate,
                                                  private_key=self.private_key)]:
                    if not c.server_certificate:
                        raise ValueError(f"{label} requires a server certificate")
                    if not c.private_key:
                        raise ValueError(f"{label} requires a private key")
        if self.ca_crl:
            if self.credential_name:
                raise At("caCrl", "CRL is not supported with credentialName. CRL has to be specified in the "
                                  "credential")
            if self.mode == "SIMPLE":
                raise At("caCrl", "CRL is not supported with SIMPLE TLS")
        return self


class GatewayPort(Spec):
    number: UInt32
    protocol: str
    name: str
    target_port: UInt32 | None = None

    @model_validator(mode="after")
    def _rules(self) -> "GatewayPort":
        if parse_protocol(self.protocol) is None:
            raise At("protocol", f"invalid protocol {show(self.protocol)}, supported protocols are HTTP, HTTP2, "
                                 "GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP")
        if self.target_port:
            raise At("targetPort", "targetPort has no impact on Gateways")
        if not self.name:
            raise At("name", "port name must be set")
        check_port_name(self.name)
        return self


class Server(Spec):
    port: GatewayPort
    bind: str | None = None
    hosts: list[str] = Field(min_length=1)
    tls: ServerTLSSettings | None = None
    default_endpoint: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _rules(self) -> "Server":
        for i, h in enumerate(self.hosts):
            try:
                check_namespace_slash_host(h, gateway=True)
            except ValueError as e:
                raise At(f"hosts[{i}]", str(e)) from None
        bind = self.bind or ""
        if bind.startswith(UNIX_PREFIX):
            try:
                check_unix_address(bind[len(UNIX_PREFIX):])
            except ValueError as e:
                raise At("bind", str(e)) from None
            if self.port.number != 0:
                raise At("port.number", "port number must be 0 for a unix domain socket bind")
        else:
            if not 1 <= self.port.number <= 65535:
                raise At("port.number", f"port number {self.port.number} must be in the range 1..65535")
            if bind and not is_ip(bind):
                raise At("bind", f"{show(bind)} is not a valid IP")
        proto = parse_protocol(self.port.protocol)
        if proto in TLS_PROTOCOLS and self.tls is None:
            raise At("tls", "server must have TLS settings for HTTPS/TLS protocols")
        if proto not in TLS_PROTOCOLS and self.tls is not None:
            t = self.tls
            if proto not in HTTP_PROTOCOLS:
                raise At("tls", "server cannot have TLS settings for non HTTPS/TLS ports")
            # a plain HTTP server may only carry httpsRedirect
            if t.mode not in ("PASSTHROUGH", "AUTO_PASSTHROUGH") or t.ca_certificates or t.private_key or \
                    t.server_certificate:
                raise At("tls", "server cannot have TLS settings for plain text HTTP ports")
        return self


class GatewaySpec(Spec):
    servers: list[Server]
    selector: dict[str, str] = Field(default_factory=dict)

    @field_validator("selector")
    @classmethod
    def _selector(cls, v: dict[str, str]) -> dict[str, str]:
        check_labels(v)
        return v

    @field_validator("servers")
    @classmethod
    def _servers(cls, v: list[Server]) -> list[Server]:
        if not v:
            raise ValueError("gateway must have at least one server")
        names: set[str] = set()
        for i, s in enumerate(v):
            if s.port.name in names:
                raise At(f"[{i}].port.name",
                         f"port names in servers must be unique: duplicate name {show(s.port.name)}")
            names.add(s.port.name)
        return v


def resource_checks(r: Any) -> list[tuple[str, str]]:
    """Istio: a Gateway's name is a DNS label (no dots): VirtualServices refer to it as namespace/name."""
    if not is_dns1123_label(r.name):
        return [("", f"invalid gateway name: {show(r.name)} (a DNS label, no dots)")]
    return []
