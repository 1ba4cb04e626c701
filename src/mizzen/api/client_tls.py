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
and roots, so it refuses certificate files. Files are read by the caller's Envoy (paths inside its pod).
`credentialName` names a Kubernetes secret, which a Mizzen mesh has no store for: it is accepted (valid Istio)
and `mizzen analyze` reports it as having no effect (MZ0110); give the files instead.
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

    @field_validator("sni")
    @classmethod
    def _sni(cls, v: str | None) -> str | None:
        if v is not None and (not v or len(v) > 255 or any(c.isspace() for c in v)):
            raise ValueError(f"sni {v!r} is not a server name")
        return v

    @model_validator(mode="after")
    def _mode_fields(self) -> "ClientTLSSettings":
        # Istio's ValidateTLS first (its wording), then what a Mizzen mesh cannot do
        if self.insecure_skip_verify:
            if self.mode == "SIMPLE" and (self.ca_certificates or self.credential_name or self.subject_alt_names):
                raise ValueError("cannot specify caCertificates or credentialName or subjectAltNames when "
                                 "insecureSkipVerify is set true")
            if self.mode == "MUTUAL" and (self.ca_certificates or self.subject_alt_names):
                raise ValueError("cannot specify caCertificates or subjectAltNames when insecureSkipVerify is set true")
        if self.mode in ("SIMPLE", "MUTUAL") and self.credential_name and \
                (self.client_certificate or self.ca_certificates or self.private_key or self.ca_crl):
            raise ValueError("cannot specify client certificates or CA certificate or CA CRL if credentialName is set")
        files = [n for n, v in (("clientCertificate", self.client_certificate), ("privateKey", self.private_key),
                                ("caCertificates", self.ca_certificates)) if v]
        if self.mode == "ISTIO_MUTUAL" and files:
            raise ValueError(f"ISTIO_MUTUAL uses the mesh's certificates: remove {', '.join(files)} (or use "
                             f"mode MUTUAL)")
        if self.mode == "MUTUAL" and not self.credential_name and not self.client_certificate:
            raise ValueError("client certificate required for mutual tls")
        if self.mode == "MUTUAL" and not self.credential_name and not self.private_key:
            raise ValueError("private key required for mutual tls")
        return self
