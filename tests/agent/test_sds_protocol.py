"""The SDS server's protocol with a real gRPC client on its unix socket: SotW and Delta subscriptions, pushes on
rotation, ACK/NACK bookkeeping, resumption, and the socket's permissions."""
from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import sys
from typing import Any

import grpc
import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from mizzen.agent.certs import WorkloadCert, assemble, make_csr
from mizzen.agent.sds import DEFAULT_SECRET, ROOT_SECRET, SECRET_TYPE, SdsServer
from mizzen.ca.authority import CaMaterial, CertificateAuthority, make_intermediate, make_root
from mizzen.ca.files import utcnow
from mizzen.ca.identity import SpiffeId

from tests.ca.harness import short_tmpdir

pytestmark = pytest.mark.timeout(60)
SVC = "/envoy.service.secret.v3.SecretDiscoveryService"


@pytest.fixture(scope="module")
def authority() -> CertificateAuthority:
    now = utcnow()
    root, rk = make_root(now)
    ca, ck = make_intermediate(root, rk, now)
    return CertificateAuthority(CaMaterial(ca, ck, (ca,), root))


def new_cert(authority: CertificateAuthority) -> WorkloadCert:
    key, csr = make_csr()
    return assemble(key, authority.sign_csr(csr, SpiffeId("cluster.local", "default", "web"), utcnow()).chain_pems())


class Stream:
    """A bidirectional SDS stream driven by hand; responses are read by a task into a queue (cancelling a
    pending read would cancel the whole call)."""

    def __init__(self, channel: grpc.aio.Channel, delta: bool) -> None:
        if delta:
            self.call = channel.stream_stream(
                f"{SVC}/DeltaSecrets", request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString)()
        else:
            self.call = channel.stream_stream(
                f"{SVC}/StreamSecrets", request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DiscoveryResponse.FromString)()
        self.responses: asyncio.Queue = asyncio.Queue()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for resp in self.call:
            self.responses.put_nowait(resp)

    async def send(self, req: Any) -> None:
        await self.call.write(req)

    async def recv(self, timeout: float = 3.0) -> Any:
        return await asyncio.wait_for(self.responses.get(), timeout)

    async def nothing(self, wait: float = 0.4) -> None:
        await asyncio.sleep(wait)
        assert self.responses.empty(), f"unexpected response: {self.responses.get_nowait()}"

    def close(self) -> None:
        self.call.cancel()
        self.reader.cancel()


async def until(pred, timeout: float = 5.0) -> None:
    """Requests are in flight: wait until the server has processed them."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting for the SDS server"
        await asyncio.sleep(0.02)


def secrets_of(resp: Any) -> dict[str, secret_pb2.Secret]:
    out = {}
    for r in resp.resources:
        any_ = getattr(r, "resource", r)
        s = secret_pb2.Secret()
        any_.Unpack(s)
        out[s.name] = s
    return out


def run_with_server(authority: CertificateAuthority, body) -> None:
    d = short_tmpdir()
    sock = f"{d}/sds.sock"

    async def main() -> None:
        sds = SdsServer(sock)
        await sds.start()
        try:
            async with grpc.aio.insecure_channel(f"unix:{sock}") as ch:
                await body(sds, ch)
        finally:
            await sds.stop(0)
    try:
        asyncio.run(main())
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_sotw_subscribe_push_ack_nack(authority: CertificateAuthority) -> None:
    async def body(sds: SdsServer, ch: grpc.aio.Channel) -> None:
        s = Stream(ch, delta=False)
        await s.send(discovery_pb2.DiscoveryRequest(type_url=SECRET_TYPE, resource_names=[DEFAULT_SECRET]))
        await s.nothing()  # no certificate yet: Envoy waits (the listener stays warming)
        c1 = new_cert(authority)
        sds.update(c1)
        r1 = await s.recv()
        got = secrets_of(r1)
        assert list(got) == [DEFAULT_SECRET]
        assert got[DEFAULT_SECRET].tls_certificate.certificate_chain.inline_bytes == c1.chain_pem
        assert got[DEFAULT_SECRET].tls_certificate.private_key.inline_bytes == c1.key_pem
        assert not sds.delivered()
        await s.send(discovery_pb2.DiscoveryRequest(type_url=SECRET_TYPE, resource_names=[DEFAULT_SECRET],
                                                    version_info=r1.version_info, response_nonce=r1.nonce))
        await until(sds.delivered)
        assert sds.status()["streams"][0]["acked"] == {DEFAULT_SECRET: c1.serial}
        # rotation: pushed at once
        c2 = new_cert(authority)
        sds.update(c2)
        r2 = await s.recv()
        assert secrets_of(r2)[DEFAULT_SECRET].tls_certificate.certificate_chain.inline_bytes == c2.chain_pem
        assert r2.version_info != r1.version_info and r2.nonce != r1.nonce
        # a NACK is recorded, and the same content is not resent
        await s.send(discovery_pb2.DiscoveryRequest(
            type_url=SECRET_TYPE, resource_names=[DEFAULT_SECRET], version_info=r1.version_info,
            response_nonce=r2.nonce, error_detail=status_pb2.Status(code=3, message="bad key")))
        await s.nothing()
        st = sds.status()
        assert st["streams"][0]["error"] == "bad key" and not sds.delivered()
        # adding ROOTCA to the subscription answers with both (state of the world)
        await s.send(discovery_pb2.DiscoveryRequest(type_url=SECRET_TYPE,
                                                    resource_names=[DEFAULT_SECRET, ROOT_SECRET],
                                                    version_info=r1.version_info, response_nonce=r2.nonce))
        r3 = await s.recv()
        got = secrets_of(r3)
        assert sorted(got) == [ROOT_SECRET, DEFAULT_SECRET]
        assert got[ROOT_SECRET].validation_context.trusted_ca.inline_bytes == c2.roots_pem
        await s.send(discovery_pb2.DiscoveryRequest(type_url=SECRET_TYPE,
                                                    resource_names=[DEFAULT_SECRET, ROOT_SECRET],
                                                    version_info=r3.version_info, response_nonce=r3.nonce))
        await until(lambda: sds.delivered() and sds.delivered(ROOT_SECRET))
        assert "error" not in sds.status()["streams"][0]
        s.close()

    run_with_server(authority, body)


def test_sotw_reconnect_with_current_version_is_not_resent(authority: CertificateAuthority) -> None:
    async def body(sds: SdsServer, ch: grpc.aio.Channel) -> None:
        sds.update(new_cert(authority))
        s = Stream(ch, delta=False)
        await s.send(discovery_pb2.DiscoveryRequest(type_url=SECRET_TYPE, resource_names=[DEFAULT_SECRET]))
        r = await s.recv()
        s.close()
        s2 = Stream(ch, delta=False)  # Envoy reconnects (e.g. after an agent hiccup) saying what it has
        await s2.send(discovery_pb2.DiscoveryRequest(type_url=SECRET_TYPE, resource_names=[DEFAULT_SECRET],
                                                     version_info=r.version_info))
        await s2.nothing()
        s2.close()

    run_with_server(authority, body)


def test_delta_subscribe_push_and_initial_versions(authority: CertificateAuthority) -> None:
    async def body(sds: SdsServer, ch: grpc.aio.Channel) -> None:
        c1 = new_cert(authority)
        sds.update(c1)
        s = Stream(ch, delta=True)
        await s.send(discovery_pb2.DeltaDiscoveryRequest(type_url=SECRET_TYPE,
                                                         resource_names_subscribe=[DEFAULT_SECRET, ROOT_SECRET]))
        r1 = await s.recv()
        assert sorted(r.name for r in r1.resources) == [ROOT_SECRET, DEFAULT_SECRET]
        assert {r.name: r.version for r in r1.resources}[DEFAULT_SECRET] == c1.serial
        await s.send(discovery_pb2.DeltaDiscoveryRequest(type_url=SECRET_TYPE, response_nonce=r1.nonce))
        await until(lambda: sds.delivered() and sds.delivered(ROOT_SECRET))
        # rotation: only the changed secret (the root stays)
        c2 = new_cert(authority)
        sds.update(c2)
        r2 = await s.recv()
        assert [r.name for r in r2.resources] == [DEFAULT_SECRET]
        assert secrets_of(r2)[DEFAULT_SECRET].tls_certificate.certificate_chain.inline_bytes == c2.chain_pem
        await s.send(discovery_pb2.DeltaDiscoveryRequest(type_url=SECRET_TYPE,
                                                         resource_names_unsubscribe=[DEFAULT_SECRET],
                                                         response_nonce=r2.nonce))
        await until(lambda: sds.status()["streams"][0]["names"] == [ROOT_SECRET])  # the request was in flight
        sds.update(new_cert(authority))
        await s.nothing()  # unsubscribed: no more pushes of `default`
        s.close()
        # a new stream that already has the current versions gets nothing until something changes
        s2 = Stream(ch, delta=True)
        cur = {n: v for n, (v, _a) in sds.secrets.items()}
        await s2.send(discovery_pb2.DeltaDiscoveryRequest(type_url=SECRET_TYPE,
                                                          resource_names_subscribe=[DEFAULT_SECRET, ROOT_SECRET],
                                                          initial_resource_versions=cur))
        await s2.nothing()
        sds.update(new_cert(authority))
        assert [r.name for r in (await s2.recv()).resources] == [DEFAULT_SECRET]
        s2.close()

    run_with_server(authority, body)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown the socket and run a process as another uid")
def test_only_envoys_uid_can_connect_to_the_sds_socket(authority: CertificateAuthority) -> None:
    d = short_tmpdir()
    sock = f"{d}/sds.sock"
    probe = ("import socket, sys, os; os.setgid(int(sys.argv[2])); os.setuid(int(sys.argv[2]))\n"
             "s = socket.socket(socket.AF_UNIX)\n"
             "try:\n    s.connect(sys.argv[1]); print('connected')\n"
             "except PermissionError:\n    print('denied')\n")

    async def main() -> None:
        sds = SdsServer(sock, owner=(1337, 1337))
        await sds.start()
        try:
            st = os.stat(sock)
            assert stat.S_IMODE(st.st_mode) == 0o600 and (st.st_uid, st.st_gid) == (1337, 1337)
            for uid, expect in ((1337, "connected"), (65534, "denied")):
                out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", probe, sock, str(uid)],
                                              capture_output=True, text=True, timeout=30)
                assert out.stdout.strip() == expect, (uid, out.stdout, out.stderr)
        finally:
            await sds.stop(0)
    try:
        asyncio.run(main())
    finally:
        shutil.rmtree(d, ignore_errors=True)
