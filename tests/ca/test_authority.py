"""The CA's certificates: the global-root layout, workload certificates named by the caller's identity only,
TTLs, and refusals of bad CSRs."""
from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from mizzen.ca.authority import (CaMaterial, CertificateAuthority, CsrError, issued_by, make_intermediate,
                                 make_root, spiffe_ids)
from mizzen.ca.identity import InvalidIdentity, PodIdentity, SpiffeId

NOW = dt.datetime(2030, 1, 15, 12, 0, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def material() -> CaMaterial:
    root, root_key = make_root(NOW)
    ca, ca_key = make_intermediate(root, root_key, NOW, mesh="test")
    return CaMaterial(ca, ca_key, (ca,), root)


def csr_for(key, san: str | None = None) -> bytes:
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(san)]), critical=True)
    algo = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return b.sign(key, algo).public_bytes(serialization.Encoding.PEM)


def ext(cert: x509.Certificate, cls):
    return cert.extensions.get_extension_for_class(cls)


def test_global_root_layout(material: CaMaterial) -> None:
    root, ca = material.root, material.ca_cert
    assert issued_by(root, root) and issued_by(ca, root)
    assert ext(root, x509.BasicConstraints).value.ca and ext(root, x509.BasicConstraints).critical
    assert ext(ca, x509.BasicConstraints).value.path_length == 0  # an intermediate signs only workloads
    assert ext(ca, x509.KeyUsage).value.key_cert_sign
    assert (root.not_valid_after_utc - NOW).days in (3649, 3650)
    assert (ca.not_valid_after_utc - NOW).days in (364, 365)
    for c in (root, ca):
        assert isinstance(c.public_key(), ec.EllipticCurvePublicKey) and c.public_key().curve.name == "secp256r1"
        assert c.not_valid_before_utc <= NOW  # valid at once, even on a host whose clock is a little behind
    material.validate(NOW)


def test_intermediate_never_outlives_its_root() -> None:
    root, root_key = make_root(NOW, ttl=dt.timedelta(days=100))
    ca, _ = make_intermediate(root, root_key, NOW)
    assert ca.not_valid_after_utc == root.not_valid_after_utc


def test_workload_cert_takes_the_identity_from_the_caller_not_the_csr(material: CaMaterial) -> None:
    authority = CertificateAuthority(material)
    key = ec.generate_private_key(ec.SECP256R1())
    me = SpiffeId("cluster.local", "shop", "cart")
    issued = authority.sign_csr(csr_for(key, "spiffe://cluster.local/ns/istio-system/sa/admin"), me, NOW)
    leaf = issued.cert
    assert spiffe_ids(leaf) == ["spiffe://cluster.local/ns/shop/sa/cart"]
    san = ext(leaf, x509.SubjectAlternativeName)
    assert san.critical and san.value.get_values_for_type(x509.DNSName) == []
    assert leaf.subject == x509.Name([])
    assert not ext(leaf, x509.BasicConstraints).value.ca
    assert set(ext(leaf, x509.ExtendedKeyUsage).value) == {ExtendedKeyUsageOID.SERVER_AUTH,
                                                           ExtendedKeyUsageOID.CLIENT_AUTH}
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    assert issued_by(leaf, material.ca_cert)
    # Istio's cert_chain order: leaf, intermediate, root
    assert issued.chain == (leaf, material.ca_cert, material.root)
    assert leaf.not_valid_after_utc - NOW == dt.timedelta(hours=24)
    assert NOW - leaf.not_valid_before_utc == dt.timedelta(seconds=60)


def test_ttl_default_requested_and_maximum(material: CaMaterial) -> None:
    authority = CertificateAuthority(material, default_ttl=dt.timedelta(hours=2), max_ttl=dt.timedelta(hours=10))
    assert authority.ttl_for(0) == dt.timedelta(hours=2)
    assert authority.ttl_for(5) == dt.timedelta(seconds=5)
    with pytest.raises(CsrError, match="longer than the maximum 36000s"):
        authority.ttl_for(36001)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = authority.sign_csr(csr_for(key), SpiffeId("cluster.local", "a", "b"), NOW, dt.timedelta(seconds=5)).cert
    assert leaf.not_valid_after_utc - NOW == dt.timedelta(seconds=5)
    assert leaf.not_valid_before_utc == NOW  # short certificates are not back-dated (a tenth of 5 s rounds to 0)


def test_workload_cert_is_capped_at_the_intermediates_expiry(material: CaMaterial) -> None:
    authority = CertificateAuthority(material, max_ttl=dt.timedelta(days=400))
    late = material.ca_cert.not_valid_after_utc - dt.timedelta(hours=1)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = authority.sign_csr(csr_for(key), SpiffeId("cluster.local", "a", "b"), late).cert
    assert leaf.not_valid_after_utc == material.ca_cert.not_valid_after_utc
    with pytest.raises(CsrError, match="has expired; renew the mesh's intermediate"):
        authority.sign_csr(csr_for(key), SpiffeId("cluster.local", "a", "b"), material.ca_cert.not_valid_after_utc)


@pytest.mark.parametrize("make, problem", [
    (lambda: ed25519.Ed25519PrivateKey.generate(), "Ed25519 keys are not supported"),
    (lambda: rsa.generate_private_key(65537, 1024), "RSA key of 1024 bits is too short"),
    (lambda: ec.generate_private_key(ec.SECP521R1()), "curve secp521r1 is not supported"),
])
def test_unsupported_keys_are_refused(material: CaMaterial, make, problem: str) -> None:
    with pytest.raises(CsrError, match=problem):
        CertificateAuthority(material).sign_csr(csr_for(make()), SpiffeId("cluster.local", "a", "b"), NOW)


def test_rsa_2048_is_accepted(material: CaMaterial) -> None:
    key = rsa.generate_private_key(65537, 2048)
    leaf = CertificateAuthority(material).sign_csr(csr_for(key), SpiffeId("cluster.local", "a", "b"), NOW).cert
    assert ext(leaf, x509.KeyUsage).value.key_encipherment


def test_malformed_and_forged_csrs_are_refused(material: CaMaterial) -> None:
    authority = CertificateAuthority(material)
    me = SpiffeId("cluster.local", "a", "b")
    with pytest.raises(CsrError, match="not a PEM certificate signing request"):
        authority.sign_csr(b"hello", me, NOW)
    # A CSR whose signature does not match its public key (no proof of possession): flip a signature byte.
    pem = csr_for(ec.generate_private_key(ec.SECP256R1()))
    der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01
    forged = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CsrError, match="signature does not verify"):
        authority.sign_csr(forged, me, NOW)


def test_spiffe_ids() -> None:
    sid = SpiffeId.parse("spiffe://cluster.local/ns/default/sa/bookinfo-reviews")
    assert (sid.trust_domain, sid.namespace, sid.service_account) == ("cluster.local", "default", "bookinfo-reviews")
    assert sid.principal == "cluster.local/ns/default/sa/bookinfo-reviews"
    assert str(SpiffeId("corp.example", "a", "b")) == "spiffe://corp.example/ns/a/sa/b"
    assert PodIdentity("shop.cart-0", "shop", "cart").spiffe_id("td").uri == "spiffe://td/ns/shop/sa/cart"
    for bad in ("http://x/ns/a/sa/b", "spiffe://cluster.local/ns/a", "spiffe://cluster.local/sa/b/ns/a",
                "spiffe://Cluster.Local/ns/a/sa/b", "spiffe://cluster.local/ns/A_b/sa/b",
                "spiffe://cluster.local/ns/a/sa/b/extra"):
        with pytest.raises(InvalidIdentity):
            SpiffeId.parse(bad)
    with pytest.raises(InvalidIdentity, match="trust domain 'bad domain'"):
        SpiffeId("bad domain", "a", "b")


def test_serials_print_as_envoy_prints_them() -> None:
    from mizzen.ca.authority import serial_hex
    assert serial_hex(0x0A78CE) == "0a78ce" and serial_hex(0x100) == "0100" and serial_hex(0) == "00"
