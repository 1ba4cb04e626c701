"""`--store etcds://...` with `--etcd-ca/--etcd-cert/--etcd-key`: a real etcd member serving TLS and requiring
client certificates (certificates made here with `cryptography`), and a real control plane on it."""
from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mizzen.server.backends import store_url_with_tls
from mizzen.server.commands import resolve_store_url
from mizzen.server.controlplane import ControlPlane, Settings
from tests.etcd.fixtures import needs_etcd
from tests.xds.test_controlplane_push import SERVICES

pytestmark = [needs_etcd]


def _cert(name: str, key, issuer_name, issuer_key, *, ca: bool = False, server: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
         .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
    if not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                   else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(d: Path, name: str, cert: x509.Certificate, key=None) -> tuple[str, str | None]:
    (d / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is None:
        return str(d / f"{name}.pem"), None
    (d / f"{name}-key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return str(d / f"{name}.pem"), str(d / f"{name}-key.pem")


@pytest.fixture
def tls_etcd(tmp_path: Path):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test etcd CA")])
    ca = _cert("test etcd CA", ca_key, ca_name, ca_key, ca=True)
    srv_key, cli_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_pem, _ = _write(tmp_path, "ca", ca)
    srv, srv_k = _write(tmp_path, "server", _cert("etcd", srv_key, ca_name, ca_key, server=True), srv_key)
    cli, cli_k = _write(tmp_path, "client", _cert("mizzen", cli_key, ca_name, ca_key), cli_key)
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    url = f"https://127.0.0.1:{ports[0]}"
    p = subprocess.Popen([shutil.which("etcd") or "etcd", "--name", "tls", "--data-dir", str(tmp_path / "data"),
                          "--listen-client-urls", url, "--advertise-client-urls", url,
                          "--listen-peer-urls", f"http://127.0.0.1:{ports[1]}",
                          "--initial-advertise-peer-urls", f"http://127.0.0.1:{ports[1]}",
                          "--initial-cluster", f"tls=http://127.0.0.1:{ports[1]}",
                          "--cert-file", srv, "--key-file", srv_k, "--trusted-ca-file", ca_pem,
                          "--client-cert-auth"],
                         stdout=subprocess.DEVNULL, stderr=open(tmp_path / "etcd.log", "wb"))
    try:
        yield f"127.0.0.1:{ports[0]}", ca_pem, cli, cli_k
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_control_plane_on_an_etcd_that_requires_client_certificates(tmp_path: Path, tls_etcd) -> None:
    endpoint, ca, cert, key = tls_etcd
    url = resolve_store_url(f"etcds://{endpoint}/tls/", ca, cert, key)
    assert url.startswith(f"etcds://{endpoint}/tls/?ca=")

    async def main() -> None:
        deadline = time.monotonic() + 30
        while True:  # the member may still be starting
            cp = ControlPlane(Settings(tmp_path / "state", store_url=url))
            if cp.backends is not None or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        assert cp.backends is not None, cp.store_error
        await cp.start()
        try:
            out = await cp.core.apply_async([("svc.yaml", SERVICES)])
            assert [a["name"] for a in out["applied"]] == ["svc-1", "svc-2"]
            assert cp.health()["backend"] == "etcd" and cp.health()["url"] == f"etcds://{endpoint}/tls/"
        finally:
            await cp.stop()
        # without the client certificate, the member refuses: the store is unavailable, nothing loads
        nocert = ControlPlane(Settings(tmp_path / "state2", store_url=resolve_store_url(f"etcds://{endpoint}/tls/",
                                                                                         ca, None, None)))
        assert nocert.backends is None and "store unavailable" in nocert.store_error

    asyncio.run(main())
    with pytest.raises(ValueError, match="go together"):
        store_url_with_tls(f"etcds://{endpoint}/", ca, cert, None)
