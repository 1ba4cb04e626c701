"""The certificate authority: roots, per-mesh intermediates and workload certificates (library `cryptography`).

The "global root" layout: one root (10 years) signs one intermediate per mesh (1 year); the intermediate signs
workload certificates (24 hours by default). Every key is ECDSA P-256 (Envoy rejects Ed25519 peers); a plugged-in
root or intermediate may also be P-384 or RSA >= 2048.

No files and no clock here: callers pass `now` (an aware UTC datetime) and PEM bytes; `ca.files` reads and
writes the state dir. Workload certificates take their identity from the caller's authenticated identity, never
from the CSR: only the CSR's public key is used.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import Sequence, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .identity import SpiffeId

ROOT_TTL = dt.timedelta(days=3650)
INTERMEDIATE_TTL = dt.timedelta(days=365)
WORKLOAD_TTL = dt.timedelta(hours=24)
MAX_WORKLOAD_TTL = dt.timedelta(days=90)  # Istio's default cap on a requested workload TTL
MAX_CLOCK_SKEW = dt.timedelta(seconds=60)  # workload certs are back-dated this much (at most a tenth of the TTL)
ORGANIZATION = "Mizzen"

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]


class CaError(ValueError):
    """Bad CA material. `source` names the file (or input) at fault; str() says what is wrong with it."""

    def __init__(self, source: str, problem: str):
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class CsrError(ValueError):
    """A certificate signing request that cannot be signed (malformed, bad signature, unsupported key)."""


# ------------------------------------------------------------------------------------------------ keys & PEM
def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def chain_pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(cert_pem(c) for c in certs)


def _spki(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    return _spki(cert.public_key()) == _spki(key.public_key())


def key_problem(key: object) -> str | None:
    """Why a key may not be used for CA or workload certificates, or None."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        if key.curve.name not in ("secp256r1", "secp384r1"):
            return f"elliptic curve {key.curve.name} is not supported (use P-256 or P-384)"
        return None
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return None if key.key_size >= 2048 else f"RSA key of {key.key_size} bits is too short (at least 2048)"
    kind = type(key).__name__.removeprefix("_").replace("PrivateKey", "").replace("PublicKey", "")
    return f"{kind} keys are not supported (Envoy rejects Ed25519 peers; use ECDSA P-256)"


def _hash_for(key: PrivateKey) -> hashes.HashAlgorithm:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1":
        return hashes.SHA384()
    return hashes.SHA256()


def _whole_seconds(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is None:
        raise ValueError("now must be an aware datetime (UTC)")
    return t.astimezone(dt.timezone.utc).replace(microsecond=0)


def _ca_extensions(builder: x509.CertificateBuilder, public_key: object, issuer: x509.Certificate | None,
                   path_length: int | None) -> x509.CertificateBuilder:
    builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
    builder = builder.add_extension(x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
        critical=True)
    builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
    if issuer is not None:
        builder = builder.add_extension(_aki(issuer), critical=False)
    return builder


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ roots
def make_root(now: dt.datetime, *, ttl: dt.timedelta = ROOT_TTL, common_name: str = "Mizzen Root CA",
              key: PrivateKey | None = None) -> tuple[x509.Certificate, PrivateKey]:
    """A self-signed root CA certificate and its key."""
    key = key or new_key()
    start = _whole_seconds(now) - MAX_CLOCK_SKEW  # valid at once on hosts whose clock is a little behind
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(start + ttl))
    b = _ca_extensions(b, key.public_key(), None, None)
    return b.sign(key, _hash_for(key)), key


def make_intermediate(root: x509.Certificate, root_key: PrivateKey, now: dt.datetime, *,
                      ttl: dt.timedelta = INTERMEDIATE_TTL, mesh: str = "mesh",
                      key: PrivateKey | None = None) -> tuple[x509.Certificate, PrivateKey]:
    """An intermediate CA for one mesh, signed by `root` (its life ends no later than the root's)."""
    key = key or new_key()
    start = max(_whole_seconds(now) - MAX_CLOCK_SKEW, root.not_valid_before_utc)
    end = min(start + ttl, root.not_valid_after_utc)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"Mizzen Intermediate CA {mesh}"[:64])])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(root.subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end))
    b = _ca_extensions(b, key.public_key(), root, 0)
    return b.sign(root_key, _hash_for(root_key)), key


# ------------------------------------------------------------------------------------------------ checks
def describe(cert: x509.Certificate) -> str:
    """Subject and serial: two roots made by the same tool often share a subject."""
    serial = f"serial {cert.serial_number:x}"
    subject = cert.subject.rfc4514_string()
    return f"{subject} ({serial})" if subject else serial


def is_ca(cert: x509.Certificate) -> bool:
    try:
        if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
    except x509.ExtensionNotFound:
        return False
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    except x509.ExtensionNotFound:
        return True


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def check_ca_cert(source: str, cert: x509.Certificate, now: dt.datetime) -> None:
    """A usable CA certificate: a CA, currently valid, with a supported key."""
    if not is_ca(cert):
        raise CaError(source, f"{describe(cert)} is not a CA certificate (basicConstraints CA:TRUE and keyUsage "
                              f"keyCertSign are required)")
    check_validity(source, cert, now)
    problem = key_problem(cert.public_key())
    if problem:
        raise CaError(source, problem)


def check_validity(source: str, cert: x509.Certificate, now: dt.datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise CaError(source, f"{describe(cert)} is not valid before {cert.not_valid_before_utc.isoformat()}")
    if now >= cert.not_valid_after_utc:
        raise CaError(source, f"{describe(cert)} expired on {cert.not_valid_after_utc.isoformat()}")


def check_key(source: str, key_source: str, cert: x509.Certificate, key: PrivateKey) -> None:
    problem = key_problem(key)
    if problem:
        raise CaError(key_source, problem)
    if not key_matches(cert, key):
        raise CaError(key_source, f"this key does not match the certificate in {source} ({describe(cert)})")


# ------------------------------------------------------------------------------------------------ the CA
@dataclass(frozen=True)
class CaMaterial:
    """What signs workload certificates: the CA certificate and key, the chain up to the root, the root.

    `chain` starts with `ca_cert` and ends with the root's child (the root itself is not repeated), so a
    workload's chain is leaf + chain and its trust anchor is `root`."""

    ca_cert: x509.Certificate
    ca_key: PrivateKey
    chain: tuple[x509.Certificate, ...]
    root: x509.Certificate

    def validate(self, now: dt.datetime, names: dict[str, str] | None = None) -> None:
        """Raise CaError naming the file at fault (names: ca-cert.pem etc. -> the path to report)."""
        n = {k: k for k in ("ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem")}
        n.update(names or {})
        check_ca_cert(n["root-cert.pem"], self.root, now)
        if not issued_by(self.root, self.root):
            raise CaError(n["root-cert.pem"], f"{describe(self.root)} is not a self-signed root certificate")
        check_ca_cert(n["ca-cert.pem"], self.ca_cert, now)
        check_key(n["ca-cert.pem"], n["ca-key.pem"], self.ca_cert, self.ca_key)
        if not self.chain or self.chain[0] != self.ca_cert:
            raise CaError(n["cert-chain.pem"], f"must start with the certificate of ca-cert.pem "
                                               f"({describe(self.ca_cert)})")
        for i, (child, parent) in enumerate(zip(self.chain, self.chain[1:])):
            if not issued_by(child, parent):
                raise CaError(n["cert-chain.pem"], f"certificate {i + 1} ({describe(child)}) is not signed by "
                                                   f"certificate {i + 2} ({describe(parent)})")
            check_ca_cert(n["cert-chain.pem"], parent, now)
        last = self.chain[-1]
        if last != self.root and issued_by(last, last):
            raise CaError(n["cert-chain.pem"], f"ends with the root {describe(last)}, but root-cert.pem holds "
                                               f"another root, {describe(self.root)}: both must be the same root")
        if not issued_by(last, self.root):
            raise CaError(n["cert-chain.pem"], f"the chain does not lead to the root in root-cert.pem: "
                                               f"{describe(self.chain[-1])} is not signed by {describe(self.root)}")

    @classmethod
    def from_pems(cls, ca_cert: bytes, ca_key: bytes, root_cert: bytes, cert_chain: bytes,
                  names: dict[str, str] | None = None) -> "CaMaterial":
        """Parse the four PEM files (Istio's plug-in CA names); the root is dropped from the chain if present."""
        n = {k: k for k in ("ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem")}
        n.update(names or {})
        cert = parse_cert(n["ca-cert.pem"], ca_cert)
        key = parse_key(n["ca-key.pem"], ca_key)
        root = parse_cert(n["root-cert.pem"], root_cert)
        chain = parse_certs(n["cert-chain.pem"], cert_chain)
        if chain and chain[-1] == root and len(chain) > 1:
            chain = chain[:-1]
        return cls(cert, key, tuple(chain), root)

    def pems(self) -> dict[str, bytes]:
        """The four files, Istio's names: cert-chain.pem holds the CA cert, its parents and the root."""
        return {"ca-cert.pem": cert_pem(self.ca_cert), "ca-key.pem": key_pem(self.ca_key),
                "root-cert.pem": cert_pem(self.root), "cert-chain.pem": chain_pem(self.chain + (self.root,))}


def parse_cert(source: str, data: bytes) -> x509.Certificate:
    certs = parse_certs(source, data)
    if len(certs) != 1:
        raise CaError(source, f"holds {len(certs)} certificates; exactly one is expected")
    return certs[0]


def parse_certs(source: str, data: bytes) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        hint = " (it holds a private key: are the file names swapped?)" if b"PRIVATE KEY-----" in data else ""
        raise CaError(source, f"no PEM certificate (-----BEGIN CERTIFICATE-----) found{hint}")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise CaError(source, f"not a valid PEM certificate: {e}") from None


def parse_key(source: str, data: bytes) -> PrivateKey:
    if b"PRIVATE KEY-----" not in data:
        hint = " (it holds a certificate: are the file names swapped?)" if b"CERTIFICATE-----" in data else ""
        raise CaError(source, f"no PEM private key found{hint}")
    if b"ENCRYPTED" in data:
        raise CaError(source, "the private key is encrypted; store it unencrypted with mode 0600 "
                              "(openssl pkey -in KEY -out ca-key.pem)")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise CaError(source, f"not a valid PEM private key: {e}") from None
    problem = key_problem(key)
    if problem:
        raise CaError(source, problem)
    return key  # type: ignore[return-value]


@dataclass(frozen=True)
class Issued:
    """A signed workload certificate: `chain` is leaf first, root last (Istio's `cert_chain`)."""

    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]

    def chain_pems(self) -> list[str]:
        return [cert_pem(c).decode() for c in self.chain]


class CertificateAuthority:
    """Signs workload certificates with a mesh's intermediate (or any CA in `CaMaterial`)."""

    def __init__(self, material: CaMaterial, *, default_ttl: dt.timedelta = WORKLOAD_TTL,
                 max_ttl: dt.timedelta = MAX_WORKLOAD_TTL) -> None:
        if default_ttl <= dt.timedelta(0) or max_ttl < default_ttl:
            raise ValueError(f"bad workload TTLs: default {default_ttl}, max {max_ttl}")
        self.material = material
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl

    @property
    def root_pem(self) -> bytes:
        return cert_pem(self.material.root)

    def ttl_for(self, requested_seconds: int) -> dt.timedelta:
        """A requested validity (0 = the default), refused above the maximum as Istio does."""
        if requested_seconds < 0:
            raise CsrError(f"requested validity {requested_seconds}s is negative")
        if requested_seconds == 0:
            return self.default_ttl
        ttl = dt.timedelta(seconds=requested_seconds)
        if ttl > self.max_ttl:
            raise CsrError(f"requested validity {requested_seconds}s is longer than the maximum "
                           f"{int(self.max_ttl.total_seconds())}s")
        return ttl

    def sign_csr(self, csr_pem: bytes, identity: SpiffeId, now: dt.datetime,
                 ttl: dt.timedelta | None = None) -> Issued:
        """Sign the CSR's public key for `identity` (the authenticated caller's). Subject and SANs in the CSR
        are ignored; the CSR must be well formed and signed by the key it carries (proof of possession)."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as e:
            raise CsrError(f"not a PEM certificate signing request: {e}") from None
        if not csr.is_signature_valid:
            raise CsrError("the CSR's signature does not verify with the key it carries")
        public_key = csr.public_key()
        problem = key_problem(public_key)
        if problem:
            raise CsrError(problem)
        return self.issue(public_key, identity, now, ttl)  # type: ignore[arg-type]

    def issue(self, public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, identity: SpiffeId,
              now: dt.datetime, ttl: dt.timedelta | None = None, *, dns_names: Sequence[str] = (),
              ips: Sequence[str] = ()) -> Issued:
        ttl = ttl or self.default_ttl
        start = _whole_seconds(now)
        skew = min(MAX_CLOCK_SKEW, dt.timedelta(seconds=int(ttl.total_seconds() // 10)))
        ca = self.material.ca_cert
        not_after = min(start + ttl, ca.not_valid_after_utc)
        if not_after <= start:
            raise CsrError(f"the CA certificate ({describe(ca)}) has expired; renew the mesh's intermediate")
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
        sans += [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        b = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca.subject)
             .public_key(public_key).serial_number(x509.random_serial_number())
             .not_valid_before(start - skew).not_valid_after(not_after)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.KeyUsage(
                 digital_signature=True, content_commitment=False,
                 key_encipherment=isinstance(public_key, rsa.RSAPublicKey), data_encipherment=False,
                 key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False,
                 decipher_only=False), critical=True)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                   ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
             # An empty subject makes the SAN the only name: RFC 5280 wants it critical then.
             .add_extension(x509.SubjectAlternativeName(sans), critical=True)
             .add_extension(_aki(ca), critical=False))
        cert = b.sign(self.material.ca_key, _hash_for(self.material.ca_key))
        return Issued(cert, (cert,) + self.material.chain + (self.material.root,))


# ------------------------------------------------------------------------------------------------ reading certs
def serial_hex(cert_or_serial: x509.Certificate | int) -> str:
    """A serial number as Envoy prints it (`/certs`, %DOWNSTREAM_PEER_SERIAL%): lowercase hex, whole bytes."""
    n = cert_or_serial if isinstance(cert_or_serial, int) else cert_or_serial.serial_number
    return format(n, "0{}x".format(2 * max(1, (n.bit_length() + 7) // 8)))


def spiffe_ids(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith("spiffe://")]
