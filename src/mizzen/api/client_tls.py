"""Istio `ClientTLSSettings`: a DestinationRule's `trafficPolicy.tls` (and its portLevelSettings' and subsets').

    tls:
      mode: ISTIO_MUTUAL          # DISABLE | SIMPLE | MUTUAL | ISTIO_MUTUAL
      sni: reviews.example        # optional
      subjectAltNames: [spiffe://cluster.local/ns/shop/sa/reviews]
      caCertificates: /etc/certs/ca.pem           # SIMPLE/MUTUAL: trust anchors (default: the system bundle)
      clientCertificate: /etc/certs/client.pem    # MUTUAL
      privateKey: /etc/certs/client-key.pem       # MUTUAL
      insecureSkipVerify: false

Validation is Istio's: MUTUAL needs a client certificate and a key; ISTIO_MUTUAL takes the mesh's certificate
and roots, so it refuses certificate files. Files are read by the caller's Envoy (paths inside its pod, so
absolute). `credentialName` names a Kubernetes secret, which a Mizzen mesh has no store for: refused with the
alternative.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Spec

TlsMode = Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]


class ClientTLSSettings(Spec):
    mode: TlsMode = "DISABLE"
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    credential_name: str | None = None
    subject_alt_names: list[str] = Field(default_factory=list)
    sni: str | None = None
    insecure_skip_verify: bool | None = None
    ca_crl: str | None = None

    @field_validator("client_certificate", "private_key", "ca_certificates", "ca_crl")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(f"{v!r} must be an absolute path (the caller's Envoy reads it in its pod)")
        return v

    @field_validator("sni")
    @classmethod
    def _sni(cls, v: str | None) -> str | None:
        if v is not None and (not v or len(v) > 255 or any(c.isspace() for c in v)):
            raise ValueError(f"sni {v!r} is not a server name")
        return v

    @model_validator(mode="after")
    def _mode_fields(self) -> "ClientTLSSettings":
        if self.credential_name is not None:
            raise ValueError("credentialName is not supported (a Mizzen mesh has no Kubernetes secret store): "
                             "give clientCertificate, privateKey and caCertificates as files")
        files = [n for n, v in (("clientCertificate", self.client_certificate), ("privateKey", self.private_key),
                                ("caCertificates", self.ca_certificates)) if v]
        if self.mode == "ISTIO_MUTUAL" and files:
            raise ValueError(f"ISTIO_MUTUAL uses the mesh's certificates: remove {', '.join(files)} (or use "
                             f"mode MUTUAL)")
        if self.mode == "MUTUAL" and not (self.client_certificate and self.private_key):
            raise ValueError("MUTUAL needs clientCertificate and privateKey")
        return self
