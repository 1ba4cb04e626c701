"""What a proxy holds, for `mizzen proxy-config secrets POD` (as `istioctl proxy-config secret`).

Pure functions over Envoy's admin JSON (the CLI fetches it; `now` is passed in):

    infos = secrets_from_config_dump(json.loads(admin("/config_dump?resource=dynamic_active_secrets")))
    # or the whole /config_dump; or, lacking a config dump, secrets_from_certs(json.loads(admin("/certs")))
    for row in secret_rows(infos, now): ...  # SECRET_COLUMNS, one row per secret
    [i.to_dict(now) for i in infos]          # -o json: every certificate of every chain

The config dump carries each secret's PEM (Envoy redacts private keys), so issuer, subject and the SPIFFE ID
are read from the certificates themselves; `/certs` has no issuer and no secret names (it lists what each
TLS context uses), so rows from it name the secret by its role.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable

from cryptography import x509

from .authority import serial_hex

SECRET_COLUMNS = ("RESOURCE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER", "NOT BEFORE",
                  "IDENTITY", "ISSUER")
SECRETS_DUMP_TYPE = "type.googleapis.com/envoy.admin.v3.SecretsConfigDump"
_DYNAMIC_SECRET_TYPE = SECRETS_DUMP_TYPE + ".DynamicSecret"
_STATIC_SECRET_TYPE = SECRETS_DUMP_TYPE + ".StaticSecret"
CERT_CHAIN, CA = "Cert Chain", "CA"


@dataclass(frozen=True)
class CertInfo:
    serial: str  # lowercase hex in whole bytes, as Envoy's /certs prints it
    not_before: dt.datetime | None
    not_after: dt.datetime | None
    identities: tuple[str, ...] = ()  # URI SANs (SPIFFE IDs)
    subject: str = ""
    issuer: str = ""

    def valid_at(self, now: dt.datetime) -> bool:
        return (self.not_before is None or self.not_before <= now) and \
            (self.not_after is not None and now < self.not_after)

    def to_dict(self, now: dt.datetime) -> dict[str, Any]:
        return {"serialNumber": self.serial, "notBefore": _iso(self.not_before), "notAfter": _iso(self.not_after),
                "identities": list(self.identities), "subject": self.subject, "issuer": self.issuer,
                "valid": self.valid_at(now)}


@dataclass(frozen=True)
class SecretInfo:
    name: str
    type: str  # "Cert Chain" or "CA"
    status: str  # ACTIVE, WARMING, STATIC
    certs: tuple[CertInfo, ...] = ()
    version: str = ""
    last_updated: str = ""
    source: str = ""  # "<inline>" or the file Envoy reads

    @property
    def leaf(self) -> CertInfo | None:
        return self.certs[0] if self.certs else None

    def to_dict(self, now: dt.datetime) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "status": self.status, "version": self.version,
                "lastUpdated": self.last_updated, "source": self.source,
                "certificates": [c.to_dict(now) for c in self.certs]}


def _iso(t: dt.datetime | None) -> str:
    return t.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z") if t else ""


def _cert_info(cert: x509.Certificate) -> CertInfo:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ids = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
    except x509.ExtensionNotFound:
        ids = ()
    return CertInfo(serial_hex(cert), cert.not_valid_before_utc, cert.not_valid_after_utc, ids,
                    cert.subject.rfc4514_string(), cert.issuer.rfc4514_string())


def _data_source(ds: dict[str, Any] | None) -> tuple[bytes | None, str]:
    if not ds:
        return None, ""
    if "inline_bytes" in ds:
        try:
            return base64.b64decode(ds["inline_bytes"]), "<inline>"
        except (binascii.Error, ValueError):
            return None, "<inline>"
    if "inline_string" in ds:
        return str(ds["inline_string"]).encode(), "<inline>"
    if "filename" in ds:
        return None, str(ds["filename"])
    return None, ""


def _certs_of(pem: bytes | None) -> tuple[CertInfo, ...]:
    if not pem:
        return ()
    try:
        return tuple(_cert_info(c) for c in x509.load_pem_x509_certificates(pem))
    except ValueError:
        return ()


def _secret_info(entry: dict[str, Any], status: str) -> SecretInfo:
    secret = entry.get("secret") or {}
    name = entry.get("name") or secret.get("name", "")
    common = dict(status=status, version=str(entry.get("version_info", "")),
                  last_updated=str(entry.get("last_updated", "")))
    if "tls_certificate" in secret:
        pem, source = _data_source(secret["tls_certificate"].get("certificate_chain"))
        return SecretInfo(name, CERT_CHAIN, certs=_certs_of(pem), source=source, **common)
    vc = secret.get("validation_context") or {}
    pem, source = _data_source(vc.get("trusted_ca"))
    return SecretInfo(name, CA, certs=_certs_of(pem), source=source, **common)


def secrets_from_config_dump(dump: dict[str, Any]) -> list[SecretInfo]:
    """From `/config_dump` (its SecretsConfigDump) or `/config_dump?resource=...secrets` (DynamicSecret /
    StaticSecret entries). Active before warming, then by name."""
    out: list[SecretInfo] = []
    for cfg in dump.get("configs", []):
        t = cfg.get("@type", "")
        if t == SECRETS_DUMP_TYPE:
            for key, status in (("static_secrets", "STATIC"), ("dynamic_active_secrets", "ACTIVE"),
                                ("dynamic_warming_secrets", "WARMING")):
                out += [_secret_info(e, status) for e in cfg.get(key, [])]
        elif t == _DYNAMIC_SECRET_TYPE:
            out.append(_secret_info(cfg, "ACTIVE"))  # ?resource=dynamic_warming_secrets: caller relabels
        elif t == _STATIC_SECRET_TYPE:
            out.append(_secret_info(cfg, "STATIC"))
    order = {"STATIC": 1, "ACTIVE": 0, "WARMING": 2}
    return sorted(out, key=lambda s: (order.get(s.status, 3), s.name))


def _parse_time(s: Any) -> dt.datetime | None:
    if not s:
        return None
    try:
        return dt.datetime.fromisoformat(str(s).replace("Z", "+00:00"))
    except ValueError:
        return None


def _certs_entry(d: dict[str, Any]) -> CertInfo:
    ids = tuple(s["uri"] for s in d.get("subject_alt_names", []) if "uri" in s)
    return CertInfo(str(d.get("serial_number", "")).lower(), _parse_time(d.get("valid_from")),
                    _parse_time(d.get("expiration_time")), ids)


def secrets_from_certs(certs: dict[str, Any]) -> list[SecretInfo]:
    """From `/certs`: each distinct certificate chain and CA bundle in use, deduplicated (every TLS context
    lists the ones it uses). Names are roles (`default` for the chain, `ROOTCA` for the CA) since /certs has
    none; a second distinct chain is `default#2` and so on."""
    chains: dict[tuple[str, ...], tuple[CertInfo, ...]] = {}
    cas: dict[tuple[str, ...], tuple[CertInfo, ...]] = {}
    sources: dict[tuple[str, ...], str] = {}
    for ctx in certs.get("certificates", []):
        for key, bucket in (("cert_chain", chains), ("ca_cert", cas)):
            infos = tuple(_certs_entry(c) for c in ctx.get(key) or [])
            if infos:
                ident = tuple(c.serial for c in infos)
                bucket.setdefault(ident, infos)
                sources.setdefault(ident, str((ctx.get(key) or [{}])[0].get("path", "")))
    out = []
    for base, kind, bucket in (("default", CERT_CHAIN, chains), ("ROOTCA", CA, cas)):
        for i, (ident, infos) in enumerate(bucket.items()):
            out.append(SecretInfo(base if i == 0 else f"{base}#{i + 1}", kind, "ACTIVE", infos,
                                  source=sources.get(ident, "")))
    return out


def secret_rows(infos: Iterable[SecretInfo], now: dt.datetime) -> list[list[str]]:
    """One table row per secret (SECRET_COLUMNS): the leaf of a chain, the first root of a CA bundle."""
    rows = []
    for s in infos:
        c = s.leaf
        if c is None:
            rows.append([s.name, s.type, s.status, "false", "", "", "", "", ""])
            continue
        rows.append([s.name, s.type, s.status, "true" if c.valid_at(now) else "false", c.serial,
                     _iso(c.not_after), _iso(c.not_before), ",".join(c.identities), c.issuer])
    return rows
