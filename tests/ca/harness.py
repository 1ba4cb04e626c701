"""Real parts for the security tests: a mesh CA in a temp state dir, the TLS certificate service on a unix
socket, an agent-side certificate manager + SDS server on an event loop thread, a real Envoy, and TLS clients
built with the standard library's `ssl`."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Coroutine

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mizzen.agent.certs import CertManager, CertSettings
from mizzen.agent.sds import SdsServer
from mizzen.ca.authority import CertificateAuthority, cert_pem, key_pem, new_key
from mizzen.ca.client import CaClient
from mizzen.ca.credentials import CredentialStore, provision_pod, read_pod_credential
from mizzen.ca.files import ensure_mesh_ca, utcnow
from mizzen.ca.identity import PodIdentity, SpiffeId
from mizzen.envoybin import find_envoy
from mizzen.server.ca_service import CaServer, CaService


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def short_tmpdir(prefix: str = "mzsec-") -> str:
    d = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(d, 0o755)
    return d


class LoopThread:
    """An asyncio loop on a daemon thread; `run(coro)` waits for a result from the test's thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], Any]) -> Any:
        async def wrap() -> Any:
            return fn()
        return self.run(wrap())

    def close(self) -> None:
        async def cancel_all() -> None:
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()
        try:
            self.run(cancel_all(), 5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


@dataclass
class Pod:
    identity: PodIdentity
    dir: Path
    manager: CertManager
    sds: SdsServer
    client: CaClient
    task: Any = None


class MeshCa:
    """A state dir with the mesh CA, the pod credential store and the TLS certificate service."""

    def __init__(self, *, trust_domain: str = "cluster.local", default_ttl: dt.timedelta | None = None) -> None:
        self.dir = Path(short_tmpdir())
        self.loop = LoopThread()
        self.material = ensure_mesh_ca(self.dir, utcnow())
        kw = {"default_ttl": default_ttl} if default_ttl else {}
        self.authority = CertificateAuthority(self.material, **kw)
        self.credentials = CredentialStore(self.dir / "credentials.db")
        self.service = CaService(self.authority, self.credentials, trust_domain=trust_domain)
        self.server = CaServer(self.service)
        self.socket = f"unix:{self.dir}/ca.sock"
        self.loop.run(self.server.start([self.socket]))
        self.pods: list[Pod] = []

    @property
    def root_pem(self) -> bytes:
        return self.authority.root_pem

    def pod(self, name: str, namespace: str = "default", service_account: str = "default", *,
            ttl_seconds: int = 0, sds_owner: tuple[int, int] | None = None,
            addresses: list[str] | None = None, **settings: Any) -> Pod:
        """Provision a pod dir (token + root) as the runner will, and start its agent-side parts."""
        identity = PodIdentity(pod=f"{namespace}.{name}", namespace=namespace, service_account=service_account,
                               workload=name.rsplit("-", 1)[0])
        pod_dir = self.dir / "pods" / name
        pod_dir.mkdir(parents=True)
        provision_pod(pod_dir, self.credentials.issue(identity), self.root_pem)
        client = CaClient(addresses or [self.socket], lambda: read_pod_credential(pod_dir))
        sds = SdsServer(str(pod_dir / "sds.sock"), owner=sds_owner)
        spiffe = identity.spiffe_id(self.service.trust_domain).uri
        manager = CertManager(lambda csr, ttl: client.sign(csr, ttl_seconds=ttl),
                              CertSettings(spiffe_id=spiffe, ttl_seconds=ttl_seconds, **settings),
                              on_update=sds.update, roots=lambda: read_pod_credential(pod_dir)[1])
        pod = Pod(identity, pod_dir, manager, sds, client)

        async def start() -> None:
            await sds.start()
            pod.task = asyncio.ensure_future(manager.run())

        self.loop.run(start())
        self.pods.append(pod)
        return pod

    def client_cert(self, spiffe: str, ttl: dt.timedelta = dt.timedelta(hours=1)) -> tuple[str, str]:
        """A certificate for a test client (files in the state dir): (chain path, key path)."""
        key = new_key()
        issued = self.authority.issue(key.public_key(), SpiffeId.parse(spiffe), utcnow(), ttl)
        name = spiffe.rsplit("/", 1)[-1]
        chain, keyf = self.dir / f"client-{name}.pem", self.dir / f"client-{name}-key.pem"
        chain.write_bytes(b"".join(cert_pem(c) for c in issued.chain[:-1]))
        keyf.write_bytes(key_pem(key))
        return str(chain), str(keyf)

    def close(self) -> None:
        async def stop() -> None:
            for p in self.pods:
                if p.task:
                    p.task.cancel()
                await p.sds.stop(0)
                await p.client.close()
            await self.server.stop(0)
        try:
            self.loop.run(stop())
        finally:
            self.loop.close()
            self.credentials.close()
            shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ TLS clients
def tls_context(root_pem: bytes, cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    """Verify the server against the mesh root (its name is a SPIFFE URI: checked by the caller)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=root_pem.decode())
    if cert:
        ctx.load_cert_chain(*cert)
    return ctx


def peer_cert(sock: ssl.SSLSocket) -> x509.Certificate:
    der = sock.getpeercert(binary_form=True)
    assert der, "no peer certificate"
    return x509.load_der_x509_certificate(der)


def spiffe_of(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)


# ------------------------------------------------------------------------------------------------ Envoy
def static_tls_bootstrap(*, admin_port: int, sds_socket: str, mtls_port: int, plain_port: int,
                         expect_san: str, api_type: str = "GRPC") -> dict[str, Any]:
    """A TLS listener (mTLS required, certificate and roots from SDS) answering with the peer's and its own
    SPIFFE ID, and a plaintext listener whose route goes through a TLS cluster (certificate and roots from SDS,
    the server must be `expect_san`) to the TLS listener."""
    from mizzen.agent.sds import sds_cluster, tls_context_sds

    def hcm(name: str, route: dict[str, Any], extra: list[dict[str, Any]] | None = None,
            headers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                     ".HttpConnectionManager",
            "stat_prefix": name, "codec_type": "AUTO",
            "route_config": {"name": name, "virtual_hosts": [{"name": name, "domains": ["*"], "routes": [
                *(extra or []), {"match": {"prefix": "/"}, **route}]}], "response_headers_to_add": headers or []},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}

    def addr(port: int) -> dict[str, Any]:
        return {"socket_address": {"address": "127.0.0.1", "port_value": port}}

    wrong_san_route = [{"match": {"prefix": "/wrong-san"}, "route": {"cluster": "mtls_wrong_san"}}]
    server_headers = [
        {"header": {"key": "x-peer-san", "value": "%DOWNSTREAM_PEER_URI_SAN%"}},
        {"header": {"key": "x-local-san", "value": "%DOWNSTREAM_LOCAL_URI_SAN%"}},
        {"header": {"key": "x-peer-serial", "value": "%DOWNSTREAM_PEER_SERIAL%"}},
    ]
    return {
        "node": {"id": "sidecar~127.0.0.1~test.default~default.svc.cluster.local", "cluster": "test"},
        "admin": {"address": addr(admin_port)},
        "static_resources": {
            "listeners": [
                {"name": "mtls_in", "address": addr(mtls_port), "filter_chains": [{
                    "filters": [hcm("mtls_in", {"direct_response": {"status": 200, "body": {
                        "inline_string": "hello over mTLS\n"}}}, None, server_headers)],
                    "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                        "require_client_certificate": True,
                        "common_tls_context": tls_context_sds(api_type, alpn=["h2", "http/1.1"])}}}]},
                {"name": "plain_out", "address": addr(plain_port), "filter_chains": [{
                    "filters": [hcm("plain_out", {"route": {"cluster": "mtls_up"}}, wrong_san_route)]}]},
            ],
            "clusters": [
                sds_cluster(sds_socket),
                {"name": "mtls_up", "type": "STATIC", "connect_timeout": "1s",
                 "load_assignment": {"cluster_name": "mtls_up", "endpoints": [{"lb_endpoints": [
                     {"endpoint": {"address": addr(mtls_port)}}]}]},
                 "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                     "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                     "common_tls_context": tls_context_sds(api_type, match_sans=[expect_san], alpn=["http/1.1"])}}},
                # the same server, but the caller expects another identity there (secure naming must refuse)
                {"name": "mtls_wrong_san", "type": "STATIC", "connect_timeout": "1s",
                 "load_assignment": {"cluster_name": "mtls_wrong_san", "endpoints": [{"lb_endpoints": [
                     {"endpoint": {"address": addr(mtls_port)}}]}]},
                 "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                     "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                     "common_tls_context": tls_context_sds(api_type, alpn=["http/1.1"], match_sans=[
                         "spiffe://cluster.local/ns/default/sa/somebody-else"])}}},
            ],
        },
    }


class Envoy:
    def __init__(self, bootstrap: dict[str, Any], work_dir: Path, admin_port: int, *, uid: int | None = None) -> None:
        self.admin_port = admin_port
        self.config = work_dir / "envoy.yaml"
        self.config.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
        os.chmod(self.config, 0o644)
        self.log = open(work_dir / "envoy.log", "wb")
        self.proc = subprocess.Popen(
            [find_envoy(), "-c", str(self.config), "--concurrency", "1",
             "-l", "warning", "--disable-hot-restart"],
            stdout=self.log, stderr=subprocess.STDOUT, user=uid, group=uid)
        self.log_path = work_dir / "envoy.log"

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as r:
            return r.read().decode()

    def admin_json(self, path: str) -> Any:
        return json.loads(self.admin(path))

    def stat(self, name: str) -> int:
        for line in self.admin(f"/stats?filter=^{name}$").splitlines():
            k, _, v = line.partition(": ")
            if k == name:
                return int(v)
        return 0

    def wait_live(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"envoy exited {self.proc.returncode}: {self.log_path.read_text()[-3000:]}")
            try:
                last = self.admin("/ready").strip()
                if last == "LIVE":
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"envoy not LIVE after {timeout}s ({last}): {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def load_key_pem(path: str) -> Any:
    return serialization.load_pem_private_key(Path(path).read_bytes(), None)
