"""Kubernetes `v1 Secret`: what a gateway's `credentialName` names (type `kubernetes.io/tls`: `tls.crt`,
`tls.key`, optionally `ca.crt` for MUTUAL servers), as Kubernetes writes it: base64 `data` and/or plain
`stringData` beside `metadata` (Mizzen also reads them under `spec`, and stores and serves them there).

A TLS secret is checked at apply as far as a gateway needs it: both keys present, PEM that parses, and a
private key that belongs to the certificate — so a broken credential is refused with its field named, instead
of being found by the gateway's Envoy later. The agent of a gateway reads it (`SecretSpec.tls_material`).
"""
from __future__ import annotations

import base64
import binascii

from pydantic import Field, model_validator

from .base import Spec
from .fields import At, show

TOP_LEVEL_FIELDS = ("type", "data", "stringData", "immutable")
TLS_TYPE = "kubernetes.io/tls"
CERT_KEY, KEY_KEY, CA_KEY = "tls.crt", "tls.key", "ca.crt"
MAX_SECRET_BYTES = 1024 * 1024  # Kubernetes' limit on a Secret's data


class SecretSpec(Spec):
    type: str = "Opaque"
    data: dict[str, str] = Field(default_factory=dict)
    string_data: dict[str, str] = Field(default_factory=dict)
    immutable: bool | None = None

    @model_validator(mode="after")
    def _rules(self) -> "SecretSpec":
        size = 0
        for k, v in self.data.items():
            _check_key(k, "data")
            try:
                size += len(base64.b64decode(v, validate=True))
            except (binascii.Error, ValueError):
                raise At(f"data.{k}", f"{show(k)} is not valid base64") from None
        for k, v in self.string_data.items():
            _check_key(k, "stringData")
            size += len(v.encode())
        if size > MAX_SECRET_BYTES:
            raise ValueError(f"a secret's data may hold at most {MAX_SECRET_BYTES} bytes, not {size}")
        if self.type == TLS_TYPE:
            values = self.values()
            for k in (CERT_KEY, KEY_KEY):
                if k not in values:
                    raise At("data", f"a {TLS_TYPE} secret needs {show(k)} (in data or stringData)")
            _check_tls(values[CERT_KEY], values[KEY_KEY], values.get(CA_KEY))
        return self

    def values(self) -> dict[str, bytes]:
        """Every key's bytes: `data` decoded, `stringData` over it (Kubernetes merges them so)."""
        out = {k: base64.b64decode(v) for k, v in self.data.items()}
        out.update({k: v.encode() for k, v in self.string_data.items()})
        return out

    def tls_material(self) -> tuple[bytes, bytes, bytes | None]:
        """(certificate chain PEM, private key PEM, CA bundle PEM or None) of a kubernetes.io/tls secret."""
        v = self.values()
        return v[CERT_KEY], v[KEY_KEY], v.get(CA_KEY)


def _check_key(k: str, where: str) -> None:
    if not k or len(k) > 253 or not all(c.isalnum() or c in "-._" for c in k):
        raise At(f"{where}.{k}", f"invalid key {show(k)}: letters, digits, '-', '_' and '.'")


def _check_tls(cert_pem: bytes, key_pem: bytes, ca_pem: bytes | None) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as e:
        raise At(f"data.{CERT_KEY}", f"not a PEM certificate chain: {e}") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise At(f"data.{KEY_KEY}", f"not an unencrypted PEM private key: {e}") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if certs[0].public_key().public_bytes(enc, pub) != key.public_key().public_bytes(enc, pub):
        raise At(f"data.{KEY_KEY}", f"the private key does not belong to the first certificate of {CERT_KEY}")
    if ca_pem is not None:
        try:
            x509.load_pem_x509_certificates(ca_pem)
        except ValueError as e:
            raise At(f"data.{CA_KEY}", f"not a PEM certificate bundle: {e}") from None
