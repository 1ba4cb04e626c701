"""The certificate service over real TLS (unix socket and TCP) with the real gRPC client the agent uses:
authentication by pod credential, the identity from the credential only, refusals, failover, and the server's
own certificate renewed without a restart."""
from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import socket
import ssl
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from mizzen.agent.certs import make_csr
from mizzen.ca.authority import CertificateAuthority, spiffe_ids
from mizzen.ca.client import CaClient, CaClientError
from mizzen.ca.credentials import CredentialStore
from mizzen.ca.files import ensure_mesh_ca, utcnow
from mizzen.ca.identity import PodIdentity
from mizzen.ca.proto import CREATE_METHOD, IstioCertificateRequest, IstioCertificateResponse
from mizzen.server.ca_service import CaServer, CaService

from .harness import free_port, short_tmpdir

pytestmark = pytest.mark.timeout(60)


class Env:
    def __init__(self, trust_domain: str = "cluster.local", **ca_kw: Any) -> None:
        self.dir = Path(short_tmpdir())
        self.authority = CertificateAuthority(ensure_mesh_ca(self.dir, utcnow()), **ca_kw)
        self.creds = CredentialStore(self.dir / "credentials.db")
        self.service = CaService(self.authority, self.creds, trust_domain=trust_domain)
        self.token = self.creds.issue(PodIdentity("shop.cart-0", "shop", "cart", "cart"))

    def client(self, addresses: list[str], token: str | None = None, root: bytes | None = None) -> CaClient:
        tok = self.token if token is None else token
        return CaClient(addresses, lambda: (tok, root or self.authority.root_pem), timeout=5)

    def close(self) -> None:
        self.creds.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def env():
    e = Env()
    yield e
    e.close()


def leaf(chain: list[str]) -> x509.Certificate:
    return x509.load_pem_x509_certificate(chain[0].encode())


def test_signs_over_tls_on_unix_and_tcp_with_the_credentials_identity(env: Env) -> None:
    async def main() -> None:
        server = CaServer(env.service)
        addrs = await server.start([f"unix:{env.dir}/ca.sock", "127.0.0.1:0"])
        try:
            for addr in addrs:
                client = env.client([addr])
                # the CSR asks for somebody else's identity: ignored
                key, csr = make_csr("spiffe://cluster.local/ns/istio-system/sa/istiod")
                chain = await client.sign(csr, ttl_seconds=120)
                await client.close()
                cert = leaf(chain)
                assert spiffe_ids(cert) == ["spiffe://cluster.local/ns/shop/sa/cart"]
                assert cert.public_key().public_numbers() == key.public_key().public_numbers()
                assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(seconds=132)
                assert len(chain) == 3 and x509.load_pem_x509_certificate(chain[-1].encode()) == \
                    env.authority.material.root
        finally:
            await server.stop(0)
        assert env.service.stats["issued"] == 2
    asyncio.run(main())


def test_trust_domain_is_configurable(env: Env) -> None:
    service = CaService(env.authority, env.creds, trust_domain="corp.example")

    async def main() -> None:
        server = CaServer(service)
        addrs = await server.start([f"unix:{env.dir}/ca2.sock"])
        try:
            client = env.client(addrs)
            chain = await client.sign(make_csr()[1])
            await client.close()
        finally:
            await server.stop(0)
        assert spiffe_ids(leaf(chain)) == ["spiffe://corp.example/ns/shop/sa/cart"]
        assert leaf(chain).not_valid_after_utc - utcnow() > dt.timedelta(hours=23)  # the 24 h default
    asyncio.run(main())


def test_refusals(env: Env) -> None:
    async def main() -> None:
        server = CaServer(env.service)
        addrs = await server.start([f"unix:{env.dir}/ca.sock"])
        csr = make_csr()[1]
        try:
            async def refused(client: CaClient, **kw: Any) -> CaClientError:
                with pytest.raises(CaClientError) as e:
                    await client.sign(kw.pop("csr", csr), **kw)
                await client.close()
                assert e.value.refused
                return e.value

            e = await refused(env.client(addrs, token="mzp_" + "x" * 43))
            assert e.code == grpc.StatusCode.UNAUTHENTICATED and "unknown or revoked token" in str(e)
            e = await refused(env.client(addrs, token=""))
            assert e.code == grpc.StatusCode.UNAUTHENTICATED and "no bearer token" in str(e)
            e = await refused(env.client(addrs), csr=b"-----BEGIN CERTIFICATE REQUEST-----\nxx\n")
            assert e.code == grpc.StatusCode.INVALID_ARGUMENT and "certificate signing request" in str(e)
            e = await refused(env.client(addrs), ttl_seconds=91 * 86400)
            assert e.code == grpc.StatusCode.INVALID_ARGUMENT and "longer than the maximum" in str(e)
            # a revoked pod gets nothing more
            env.creds.revoke("shop.cart-0")
            e = await refused(env.client(addrs))
            assert e.code == grpc.StatusCode.UNAUTHENTICATED
            # a raw call without any metadata, as another process might try
            async with grpc.aio.secure_channel(addrs[0], grpc.ssl_channel_credentials(env.authority.root_pem),
                                               options=[("grpc.ssl_target_name_override",
                                                         "mizzen-controlplane")]) as ch:
                call = ch.unary_unary(CREATE_METHOD, request_serializer=IstioCertificateRequest.SerializeToString,
                                      response_deserializer=IstioCertificateResponse.FromString)
                with pytest.raises(grpc.aio.AioRpcError) as raw:
                    await call(IstioCertificateRequest(csr=csr.decode()), timeout=5)
                assert raw.value.code() == grpc.StatusCode.UNAUTHENTICATED
        finally:
            await server.stop(0)
        assert env.service.stats == {"issued": 0, "unauthenticated": 4, "invalid": 2}
    asyncio.run(main())


def test_the_token_is_never_sent_to_a_server_the_mesh_root_does_not_vouch_for(env: Env) -> None:
    """An impostor with a certificate from another CA: the TLS handshake fails before any request is sent."""
    impostor = Env()
    got: list[Any] = []

    class Spy:
        def verify(self, token: str) -> Any:
            got.append(token)
            return None

    async def main() -> None:
        server = CaServer(CaService(impostor.authority, Spy()))
        addrs = await server.start([f"unix:{env.dir}/fake.sock", "127.0.0.1:0"])
        try:
            client = env.client(addrs)
            with pytest.raises(CaClientError) as e:
                await client.sign(make_csr()[1])
            await client.close()
            assert not e.value.refused and e.value.code == grpc.StatusCode.UNAVAILABLE
        finally:
            await server.stop(0)
    try:
        asyncio.run(main())
    finally:
        impostor.close()
    assert got == []


def test_failover_to_the_next_replica(env: Env) -> None:
    async def main() -> None:
        server = CaServer(env.service)
        addrs = await server.start([f"unix:{env.dir}/ca-1.sock"])
        try:
            client = env.client([f"unix:{env.dir}/ca.sock", f"127.0.0.1:{free_port()}", *addrs])
            chain = await client.sign(make_csr()[1])
            await client.close()
            assert spiffe_ids(leaf(chain)) == ["spiffe://cluster.local/ns/shop/sa/cart"]
            # none reachable: an error that says so (not a refusal)
            client = env.client([f"unix:{env.dir}/ca.sock"])
            with pytest.raises(CaClientError, match="no certificate service reachable") as e:
                await client.sign(make_csr()[1])
            await client.close()
            assert not e.value.refused
        finally:
            await server.stop(0)
    asyncio.run(main())


def _server_cert(port: int, root: bytes) -> x509.Certificate:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=root.decode())
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="mizzen-controlplane") as s:
        return x509.load_der_x509_certificate(s.getpeercert(binary_form=True))


def test_the_servers_own_certificate_is_renewed_without_a_restart(env: Env) -> None:
    async def main() -> None:
        server = CaServer(env.service, server_cert_ttl=dt.timedelta(seconds=4))
        addrs = await server.start(["127.0.0.1:0", "127.0.0.1:0"])
        ports = [int(a.rsplit(":", 1)[1]) for a in addrs]
        try:
            first = await asyncio.to_thread(_server_cert, ports[0], env.authority.root_pem)
            assert "mizzen-controlplane" in first.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
            assert spiffe_ids(first) == ["spiffe://cluster.local/ns/istio-system/sa/mizzen-controlplane"]
            await asyncio.sleep(2.5)  # past half of its 4 s life
            serials = set()
            for port in ports:  # each port picks up the renewed certificate
                c = await asyncio.to_thread(_server_cert, port, env.authority.root_pem)
                serials.add(c.serial_number)
            assert first.serial_number not in serials and len(serials) == 1
            client = env.client(addrs[1:])
            assert await client.sign(make_csr()[1])  # and it still signs
            await client.close()
        finally:
            await server.stop(0)
    asyncio.run(main())
