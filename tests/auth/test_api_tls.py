"""The control plane's TCP API listener is TLS with a certificate from the mesh CA (real control plane, real
TLS handshakes): the client trusts the mesh root and checks the name `mizzen-controlplane`; plaintext and a
client trusting another CA get nothing; a renewed certificate is served to new connections."""
from __future__ import annotations

import asyncio
import datetime as dt
import socket
import os
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mizzen.ca.authority import CaMaterial, CertificateAuthority, make_intermediate, make_root
from mizzen.client import ApiClient, Unavailable
from mizzen.local.procs import free_ports
from mizzen.server.auth_tls import ServerTls
from mizzen.server.controlplane import ControlPlane, Settings


def peer_serial(port: int, cafile: str) -> int:
    ctx = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="mizzen-controlplane") as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def test_tcp_api_is_tls_from_the_mesh_ca(tmp_path):
    state = tmp_path / "state"
    port = free_ports(1)[0]

    async def main() -> None:
        cp = ControlPlane(Settings(state, api_tcp=("127.0.0.1", port)))
        await cp.start()
        try:
            root = str(state / "ca" / "root-cert.pem")
            token = (state / "admin.token").read_text().strip()
            api = ApiClient(addresses=[f"https://127.0.0.1:{port}"], token=token, ca_file=root, timeout=5)
            me = await asyncio.to_thread(api.request, "GET", "/api/v1/whoami")
            assert me["role"] == "admin"
            # the CLI's way: the state dir's root and credential by default, the TCP address given
            via_dir = ApiClient(str(state), addresses=[f"https://localhost:{port}"], timeout=5)
            assert (await asyncio.to_thread(via_dir.healthz))["ready"] is True
            assert stat.S_IMODE(os.stat(state / "api.sock").st_mode) == 0o660

            # plaintext HTTP on the TLS port: no answer
            plain = ApiClient(addresses=[f"127.0.0.1:{port}"], token=token, timeout=3)
            with pytest.raises(Unavailable):
                await asyncio.to_thread(plain.healthz)
            # a client that trusts another CA refuses the handshake before sending its token
            now = dt.datetime.now(dt.timezone.utc)
            other_root, _ = make_root(now)
            (tmp_path / "other.pem").write_bytes(other_root.public_bytes(Encoding.PEM))
            stranger = ApiClient(addresses=[f"https://127.0.0.1:{port}"], token=token,
                                 ca_file=str(tmp_path / "other.pem"), timeout=3)
            with pytest.raises(Unavailable, match="TLS: CERTIFICATE_VERIFY_FAILED"):
                await asyncio.to_thread(stranger.healthz)
            # renewal: new handshakes get the new certificate, no restart
            tls = cp.api_security.tls
            before = await asyncio.to_thread(peer_serial, port, root)
            assert before == tls.serial
            tls.renew_at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
            cp.api_security.periodic()
            after = await asyncio.to_thread(peer_serial, port, root)
            assert after == tls.serial != before
            assert (await asyncio.to_thread(api.request, "GET", "/api/v1/whoami"))["role"] == "admin"
        finally:
            await cp.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_server_certificate_names_and_renewal_time():
    now = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    root, rkey = make_root(now)
    ca, ckey = make_intermediate(root, rkey, now)
    authority = CertificateAuthority(CaMaterial(ca, ckey, (ca,), root))
    clock = [now]
    tls = ServerTls(lambda: authority, extra_names=("cp.example.com", "10.0.0.7"), ttl=dt.timedelta(hours=2),
                    clock=lambda: clock[0])
    assert tls.renew_at is not None and dt.timedelta(minutes=50) < tls.renew_at - now <= dt.timedelta(hours=1)
    assert tls.renew_if_due() is False
    first = tls.serial
    clock[0] = tls.renew_at
    assert tls.renew_if_due() is True and tls.serial != first
