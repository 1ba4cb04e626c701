"""The CA wired into the control plane: created on first start and shared by replicas, credentials issued and
revoked over the REST API (through `mizzen.client`), certificates signed over ca.sock for the credential's
identity, a replaced CA picked up without a restart, a busy ca.sock refused."""
from __future__ import annotations

import asyncio
import os
import shutil
import stat
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from mizzen.agent.certs import make_csr
from mizzen.ca.authority import spiffe_ids
from mizzen.ca.client import CaClient, CaClientError
from mizzen.ca.files import init_from, utcnow, write_root
from mizzen.client import ApiClient
from mizzen.server.controlplane import ControlPlane, Settings
from mizzen.unixpath import SocketInUse
from tests.ca.harness import short_tmpdir


def settings(d: Path, replica: int = 0, **kw) -> Settings:
    return Settings(d, debounce_quiet=0.02, debounce_max_wait=0.2, replica=replica, refresh_interval=0.1, **kw)


async def sign(cp_dir: Path, token: str, root: bytes, sock: str = "ca.sock") -> x509.Certificate:
    client = CaClient([f"unix:{cp_dir / sock}"], lambda: (token, root), timeout=5)
    try:
        _key, csr = make_csr("spiffe://cluster.local/ns/istio-system/sa/istiod")  # a lie the CA ignores
        chain = await client.sign(csr)
    finally:
        await client.close()
    return x509.load_pem_x509_certificate(chain[0].encode())


@pytest.fixture
def short_dirs():
    """Short temp dirs (unix socket paths) made through `make()`, removed after the test."""
    made: list[Path] = []

    def make() -> Path:
        made.append(Path(short_tmpdir()))
        return made[-1]
    yield make
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


def test_credentials_and_signing_through_the_control_plane(short_dirs):
    d = short_dirs()

    async def main() -> None:
        a = ControlPlane(settings(d, trust_domain="example.org", workload_ttl_seconds=600))
        b = ControlPlane(settings(d, replica=1, trust_domain="example.org", workload_ttl_seconds=600))
        await a.start()
        await b.start()
        try:
            assert stat.S_IMODE(os.stat(d / "ca.sock").st_mode) == 0o600
            assert stat.S_IMODE(os.stat(d / "ca" / "ca-key.pem").st_mode) == 0o600
            assert a.mesh_ca.authority.material.root == b.mesh_ca.authority.material.root  # one CA
            api = ApiClient(str(d), replicas=2, timeout=10)
            info = await asyncio.to_thread(api.ca_info)
            assert info["trustDomain"] == "example.org" and "BEGIN CERTIFICATE" in info["rootCert"]
            token = await asyncio.to_thread(api.create_credential, "shop.cart-0", "shop", "cart", "cart")
            root = info["rootCert"].encode()
            for sock in ("ca.sock", "ca-1.sock"):  # either replica signs for it
                cert = await sign(d, token, root, sock)
                assert spiffe_ids(cert) == ["spiffe://example.org/ns/shop/sa/cart"]
                life = cert.not_valid_after_utc - cert.not_valid_before_utc
                assert 600 <= life.total_seconds() <= 660  # the default TTL (+ back-dating)
            items = await asyncio.to_thread(api.credentials)
            assert [(i["pod"], i["spiffeId"]) for i in items] == [("shop.cart-0", "spiffe://example.org/ns/shop/sa/cart")]
            assert "token" not in items[0]
            assert await asyncio.to_thread(api.revoke_credential, "shop.cart-0")
            with pytest.raises(CaClientError) as e:
                await sign(d, token, root)
            assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
            # a third replica on a busy ca.sock is refused, not silently taking it over
            c = ControlPlane(settings(d, api_socket=d / "api-x.sock", xds_socket=d / "xds-x.sock"))
            with pytest.raises(SocketInUse):
                await c.start()
            await c.stop()
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(main())


def test_a_ca_plugged_in_while_running_is_used_for_new_certificates(short_dirs):
    d, other = short_dirs(), short_dirs()

    async def main() -> None:
        cp = ControlPlane(settings(d))
        await cp.start()
        try:
            old_root = cp.mesh_ca.authority.material.root
            api = ApiClient(str(d), replicas=1, timeout=10)
            token = await asyncio.to_thread(api.create_credential, "default.a-0", "default", "a", "a")
            write_root(other, utcnow())
            init_from(other, d, utcnow(), force=True)  # `mizzen ca init --from DIR --force`
            for _ in range(50):
                if cp.mesh_ca.authority.material.root != old_root:
                    break
                await asyncio.sleep(0.1)
            new_root = cp.mesh_ca.authority.material.root
            assert new_root != old_root
            # the certificate service re-issued its TLS certificate from the new CA: a pod given the new root signs
            cert = await sign(d, token, (await asyncio.to_thread(api.ca_info))["rootCert"].encode())
            assert cert.issuer == cp.mesh_ca.authority.material.ca_cert.subject
        finally:
            await cp.stop()

    asyncio.run(main())
