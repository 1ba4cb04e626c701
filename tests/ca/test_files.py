"""The CA's files: created on first start with 0600 keys, `ca init --root-out/--from` (two meshes sharing a root,
proved with real TLS handshakes), and bad input refused with the file named and nothing written."""
from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mizzen.ca.authority import (CaError, CertificateAuthority, cert_pem, issued_by, key_pem, make_intermediate,
                                 make_root, new_key)
from mizzen.ca.files import (CA_CERT, CA_KEY, CERT_CHAIN, INTERMEDIATE_FILES, ROOT_CERT, ROOT_KEY, ensure_mesh_ca,
                             init_from, load_ca_dir, mesh_ca_dir, utcnow, write_root)
from mizzen.ca.identity import SpiffeId
from mizzen.ca.commands import ca as ca_command




def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()} if d.exists() else {}


def test_created_on_first_start_and_reused(tmp_path: Path) -> None:
    m1 = ensure_mesh_ca(tmp_path, utcnow(), mesh="m1")
    d = mesh_ca_dir(tmp_path)
    assert sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) == sorted(
        [*INTERMEDIATE_FILES, "root"])
    assert mode(d) == 0o700
    assert mode(d / CA_KEY) == 0o600 and mode(d / "root" / ROOT_KEY) == 0o600
    assert mode(d / CA_CERT) == 0o644
    chain = (d / CERT_CHAIN).read_bytes()
    assert chain == cert_pem(m1.ca_cert) + cert_pem(m1.root)
    m2 = ensure_mesh_ca(tmp_path, utcnow())
    assert m2.ca_cert == m1.ca_cert and m2.root == m1.root


def test_a_partial_ca_dir_is_an_error_not_a_new_ca(tmp_path: Path) -> None:
    ensure_mesh_ca(tmp_path, utcnow())
    d = mesh_ca_dir(tmp_path)
    (d / ROOT_CERT).unlink()
    before = snapshot(d)
    with pytest.raises(CaError) as e:
        ensure_mesh_ca(tmp_path, utcnow())
    assert e.value.source == str(d / ROOT_CERT) and "missing" in str(e.value)
    assert snapshot(d) == before


def tls_pair(server_ca: CertificateAuthority, client_ca: CertificateAuthority, server_trust: bytes,
             client_trust: bytes, tmp: Path) -> tuple[str, str]:
    """One mTLS handshake over loopback: server cert from server_ca, client cert from client_ca, each side
    trusting the given root(s). Returns the SPIFFE IDs each side saw."""
    def files(ca: CertificateAuthority, name: str, sa: str) -> tuple[str, str]:
        key = new_key()
        issued = ca.issue(key.public_key(), SpiffeId("cluster.local", "default", sa), utcnow())
        c, k = tmp / f"{name}.pem", tmp / f"{name}-key.pem"
        c.write_bytes(b"".join(cert_pem(x) for x in issued.chain[:-1]))
        k.write_bytes(key_pem(key))
        return str(c), str(k)

    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(*files(server_ca, "server", "server"))
    sctx.verify_mode = ssl.CERT_REQUIRED
    sctx.load_verify_locations(cadata=server_trust.decode())
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.load_cert_chain(*files(client_ca, "client", "client"))
    cctx.load_verify_locations(cadata=client_trust.decode())
    seen: dict[str, str] = {}
    lsock = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = lsock.accept()
        try:
            with sctx.wrap_socket(conn, server_side=True) as s:
                seen["server saw"] = dict(s.getpeercert()["subjectAltName"])["URI"]
                s.sendall(b"ok")
        except (ssl.SSLError, OSError) as e:
            seen["server error"] = str(e)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with socket.create_connection(lsock.getsockname()) as raw, cctx.wrap_socket(raw) as c:
            seen["client saw"] = dict(c.getpeercert()["subjectAltName"])["URI"]
            assert c.recv(2) == b"ok"
    finally:
        t.join(5)
        lsock.close()
    return seen["server saw"], seen["client saw"]


def test_two_meshes_share_one_root(tmp_path: Path) -> None:
    root_dir = tmp_path / "root"
    result = CliRunner().invoke(ca_command, ["init", "--root-out", str(root_dir)])
    assert result.exit_code == 0, result.output
    assert mode(root_dir / ROOT_KEY) == 0o600 and mode(root_dir) == 0o700
    a, b = tmp_path / "mesh-a", tmp_path / "mesh-b"
    for state in (a, b):
        result = CliRunner().invoke(ca_command, ["init", "--from", str(root_dir), "--state-dir", str(state)])
        assert result.exit_code == 0, result.output
        assert "a new intermediate signed by the root" in result.output
        assert not (mesh_ca_dir(state) / ROOT_KEY).exists() and not (mesh_ca_dir(state) / "root").exists()
    ma, mb = load_ca_dir(mesh_ca_dir(a), utcnow()), load_ca_dir(mesh_ca_dir(b), utcnow())
    assert ma.root == mb.root and ma.ca_cert != mb.ca_cert
    assert issued_by(ma.ca_cert, ma.root) and issued_by(mb.ca_cert, mb.root)
    # A workload of mesh A and one of mesh B authenticate each other with nothing but their own mesh's root.
    ca_a, ca_b = CertificateAuthority(ma), CertificateAuthority(mb)
    server_saw, client_saw = tls_pair(ca_a, ca_b, ca_a.root_pem, ca_b.root_pem, tmp_path)
    assert server_saw == "spiffe://cluster.local/ns/default/sa/client"
    assert client_saw == "spiffe://cluster.local/ns/default/sa/server"
    # ... and a mesh with a root of its own is not trusted by them.
    own = CertificateAuthority(ensure_mesh_ca(tmp_path / "mesh-c", utcnow()))
    with pytest.raises((ssl.SSLError, ConnectionError, KeyError)):
        tls_pair(ca_a, own, ca_a.root_pem, own.root_pem, tmp_path)


def test_plug_in_an_intermediate_as_is(tmp_path: Path) -> None:
    src = mesh_ca_dir(tmp_path / "a")
    ma = ensure_mesh_ca(tmp_path / "a", utcnow())
    plug = tmp_path / "plug"
    plug.mkdir()
    for n in INTERMEDIATE_FILES:
        shutil.copy(src / n, plug / n)
    material, kind = init_from(plug, tmp_path / "b", utcnow())
    assert kind == "intermediate" and material.ca_cert == ma.ca_cert
    assert mode(mesh_ca_dir(tmp_path / "b") / CA_KEY) == 0o600


def test_plug_in_a_two_level_intermediate_chain(tmp_path: Path) -> None:
    root, root_key = make_root(utcnow())
    mid, mid_key = make_intermediate(root, root_key, utcnow(), mesh="region")
    # "region" must allow one more CA level below it (make_intermediate gives path length 0)
    region = (x509.CertificateBuilder().subject_name(mid.subject).issuer_name(root.subject)
              .public_key(mid_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(mid.not_valid_before_utc).not_valid_after(mid.not_valid_after_utc)
              .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
              .sign(root_key, hashes.SHA256()))
    leaf_ca, leaf_key = make_intermediate(region, mid_key, utcnow(), mesh="cluster1")
    plug = tmp_path / "plug"
    plug.mkdir()
    (plug / CA_CERT).write_bytes(cert_pem(leaf_ca))
    (plug / CA_KEY).write_bytes(key_pem(leaf_key))
    (plug / ROOT_CERT).write_bytes(cert_pem(root))
    (plug / CERT_CHAIN).write_bytes(cert_pem(leaf_ca) + cert_pem(region) + cert_pem(root))
    material, kind = init_from(plug, tmp_path / "st", utcnow())
    assert kind == "intermediate" and material.chain == (leaf_ca, region)
    issued = CertificateAuthority(material).issue(new_key().public_key(), SpiffeId("cluster.local", "a", "b"), utcnow())
    assert issued.chain[1:] == (leaf_ca, region, root)


def test_existing_ca_is_kept_unless_forced(tmp_path: Path) -> None:
    old = ensure_mesh_ca(tmp_path / "st", utcnow())
    write_root(tmp_path / "root", utcnow())
    with pytest.raises(CaError, match="already has a CA.*--force"):
        init_from(tmp_path / "root", tmp_path / "st", utcnow())
    assert load_ca_dir(mesh_ca_dir(tmp_path / "st"), utcnow()).ca_cert == old.ca_cert
    new, _ = init_from(tmp_path / "root", tmp_path / "st", utcnow(), force=True)
    assert new.root != old.root
    assert not (mesh_ca_dir(tmp_path / "st") / "root").exists()  # the replaced root's key does not linger
    with pytest.raises(CaError, match="already holds a root"):
        write_root(tmp_path / "root", utcnow())


# ------------------------------------------------------------------------------------------------ bad input
def _intermediate_dir(tmp: Path) -> Path:
    d = tmp / "plug"
    if d.exists():
        shutil.rmtree(d)
    ensure_mesh_ca(tmp / "src", utcnow())
    shutil.copytree(mesh_ca_dir(tmp / "src"), d, ignore=shutil.ignore_patterns("root", ".lock"))
    return d


def _expired_root(d: Path) -> None:
    cert, key = make_root(utcnow() - dt.timedelta(days=30), ttl=dt.timedelta(days=1))
    (d / ROOT_CERT).write_bytes(cert_pem(cert))
    (d / ROOT_KEY).write_bytes(key_pem(key))


def _non_ca(d: Path) -> None:
    ca = CertificateAuthority(load_ca_dir(d, utcnow()))
    key = new_key()
    leaf = ca.issue(key.public_key(), SpiffeId("cluster.local", "a", "b"), utcnow()).cert
    (d / CA_CERT).write_bytes(cert_pem(leaf))
    (d / CA_KEY).write_bytes(key_pem(key))
    (d / CERT_CHAIN).write_bytes(cert_pem(leaf) + (d / ROOT_CERT).read_bytes())


def _only_expired_root(d: Path) -> None:
    for n in INTERMEDIATE_FILES:
        (d / n).unlink()
    _expired_root(d)


def _encrypted_key(d: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (d / CA_KEY).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.BestAvailableEncryption(b"pw")))


def _wrong_chain(d: Path) -> None:
    other, other_key = make_root(utcnow())
    (d / ROOT_CERT).write_bytes(cert_pem(other))


def _rename(d: Path, pairs: dict[str, str]) -> None:
    for a, b in pairs.items():
        (d / a).rename(d / b)


CASES = {
    "key does not match": (lambda d: (d / CA_KEY).write_bytes(key_pem(new_key()))),
    "swapped files": (lambda d: (_rename(d, {CA_KEY: "x"}), _rename(d, {CA_CERT: CA_KEY}), _rename(d, {"x": CA_CERT}))),
    "leaf as CA": _non_ca,
    "other root": _wrong_chain,
    "no chain file": (lambda d: (d / CERT_CHAIN).unlink()),
    "k8s names": (lambda d: _rename(d, {CA_CERT: "tls.crt", CA_KEY: "tls.key", ROOT_CERT: "ca.crt",
                                        CERT_CHAIN: "chain.pem"})),
    "expired root": _only_expired_root,
    "encrypted key": _encrypted_key,
    "garbage cert": (lambda d: (d / CA_CERT).write_bytes(
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")),
}
EXPECT = {
    "key does not match": (CA_KEY, "this key does not match the certificate in"),
    "swapped files": (CA_CERT, "it holds a private key: are the file names swapped?"),
    "leaf as CA": (CA_CERT, "is not a CA certificate"),
    "other root": (CERT_CHAIN, "root-cert.pem holds another root"),
    "no chain file": (CERT_CHAIN, "cat ca-cert.pem root-cert.pem > cert-chain.pem"),
    "k8s names": ("", "tls.crt (did you mean ca-cert.pem?)"),
    "expired root": (ROOT_CERT, "expired on"),
    "encrypted key": (CA_KEY, "the private key is encrypted"),
    "garbage cert": (CA_CERT, "not a valid PEM certificate"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_plug_in_input_names_the_file_and_changes_nothing(tmp_path: Path, case: str) -> None:
    plug = _intermediate_dir(tmp_path)
    CASES[case](plug)
    state = tmp_path / "st"
    before = ensure_mesh_ca(state, utcnow())
    files_before = snapshot(mesh_ca_dir(state))
    result = CliRunner().invoke(ca_command, ["init", "--from", str(plug), "--state-dir", str(state), "--force"])
    assert result.exit_code == 1, result.output
    name, text = EXPECT[case]
    assert f"Error: {plug / name if name else plug}: " in result.output, result.output
    assert text in result.output, result.output
    assert snapshot(mesh_ca_dir(state)) == files_before
    assert load_ca_dir(mesh_ca_dir(state), utcnow()).ca_cert == before.ca_cert


def test_ca_show(tmp_path: Path) -> None:
    result = CliRunner().invoke(ca_command, ["show", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1 and "mizzen ca init --state-dir" in result.output
    CliRunner().invoke(ca_command, ["init", "--state-dir", str(tmp_path)])
    result = CliRunner().invoke(ca_command, ["show", "--state-dir", str(tmp_path), "-o", "json"])
    assert result.exit_code == 0
    assert '"role": "root"' in result.output and '"subject": "CN=Mizzen Root CA,O=Mizzen"' in result.output


def test_the_mizzen_command_offers_ca(tmp_path: Path) -> None:
    mizzen = os.path.join(os.path.dirname(sys.executable), "mizzen")
    out = subprocess.run([mizzen, "ca", "init", "--state-dir", str(tmp_path)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"mesh CA in {tmp_path}/ca" in out.stdout


def test_key_files_are_never_world_readable_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        ensure_mesh_ca(tmp_path, utcnow())
        write_root(tmp_path / "r", utcnow())
    finally:
        os.umask(old)
    assert mode(mesh_ca_dir(tmp_path) / CA_KEY) == 0o600
    assert mode(tmp_path / "r" / ROOT_KEY) == 0o600
