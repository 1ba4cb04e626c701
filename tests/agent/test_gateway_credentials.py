"""A gateway's credentials: Secrets read from the real REST API (SQLite store) and served by the agent's real SDS
server to a real gRPC SDS client, as Envoy asks for them; rotation and a deleted Secret."""
from __future__ import annotations

import asyncio
import shutil
import textwrap

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2

from mizzen.agent.credentials import GatewayCredentials
from mizzen.agent.sds import SECRET_TYPE, SdsServer
from mizzen.client.aio import AsyncApiClient
from mizzen.registry import EmbeddedRegistry
from mizzen.server.core import ControlPlaneCore
from mizzen.server.rest import make_app, serve
from mizzen.store import SqliteStore

from tests.agent.test_sds_protocol import Stream, secrets_of
from tests.ca.harness import short_tmpdir
from tests.authkit import admin_token, api_security
from tests.tlscerts import ca as _ca, leaf as _leaf, pem as _pem

pytestmark = pytest.mark.timeout(60)


def secret_doc(name: str, cert: bytes, key: bytes, ca: bytes | None = None) -> str:
    ind = lambda b: textwrap.indent(b.decode(), "    ")  # noqa: E731
    text = f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: edge}}\ntype: kubernetes.io/tls\n" \
           f"stringData:\n  tls.crt: |\n{ind(cert)}  tls.key: |\n{ind(key)}"
    if ca:
        text += f"  ca.crt: |\n{ind(ca)}"
    return text


def test_secrets_are_served_as_envoy_asks_rotated_and_kept_when_deleted() -> None:
    ca = _ca("test CA")
    cert1, key1, _ = _leaf(ca, ["web.example.test"])
    cert2, key2, _ = _leaf(ca, ["web.example.test"])
    d = short_tmpdir()

    async def main() -> None:
        store, registry = SqliteStore(f"{d}/store.db"), EmbeddedRegistry(f"{d}/registry.db")
        core = ControlPlaneCore(store, registry)
        sec = api_security(d)
        app = make_app(core, auth=sec.auth, ready=lambda: True, services=lambda: [], proxies=lambda: [],
                       proxy_resources=lambda pid, t: None)
        rest = await serve(app, f"{d}/api.sock", None)
        sds = SdsServer(f"{d}/sds.sock")
        await sds.start()
        api = AsyncApiClient(f"unix:{d}/api.sock", token=admin_token(d))
        creds = GatewayCredentials(sds, api, namespace="edge", poll_seconds=0.2)
        task = asyncio.create_task(creds.run())
        try:
            core.apply([("s.yaml", secret_doc("web-cert", cert1, key1, _pem(ca[0])))])
            async with grpc.aio.insecure_channel(f"unix:{d}/sds.sock") as ch:
                s = Stream(ch, delta=False)
                await s.send(discovery_pb2.DiscoveryRequest(
                    type_url=SECRET_TYPE, resource_names=["kubernetes://web-cert", "kubernetes://web-cert-cacert"]))
                resp = await s.recv(5)
                got = secrets_of(resp)
                cert = got["kubernetes://web-cert"].tls_certificate
                assert cert.certificate_chain.inline_bytes == cert1 and cert.private_key.inline_bytes == key1
                assert got["kubernetes://web-cert-cacert"].validation_context.trusted_ca.inline_bytes == _pem(ca[0])
                await s.send(discovery_pb2.DiscoveryRequest(
                    type_url=SECRET_TYPE, response_nonce=resp.nonce, version_info=resp.version_info,
                    resource_names=["kubernetes://web-cert", "kubernetes://web-cert-cacert"]))
                # rotation: a new Secret is pushed on the open stream
                core.apply([("s.yaml", secret_doc("web-cert", cert2, key2, _pem(ca[0])))])
                resp = await s.recv(5)
                assert secrets_of(resp)["kubernetes://web-cert"].tls_certificate.certificate_chain.inline_bytes \
                    == cert2
                # deleted: nothing pushed, the last good one stays, the status says why
                core.delete("Secret", "edge", "web-cert")
                await s.nothing(0.8)
                st = creds.status()
                assert "no Secret edge/web-cert" in st["kubernetes://web-cert"]["error"]
                assert "version" in st["kubernetes://web-cert"]
                s.close()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await api.close()
            await sds.stop(0)
            await rest.cleanup()
            sec.close()
            store.close()
            registry.close()

    try:
        asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_a_gateway_agent_config_round_trips_and_its_bootstrap_says_gateway() -> None:
    import json

    import yaml

    from mizzen.agent.bootstrap import render_bootstrap
    from mizzen.agent.config import AgentConfig
    from mizzen.model.types import Proxy

    cfg = AgentConfig.from_dict({"pod": "ingress-0", "namespace": "edge", "workDir": "/tmp/x", "gateway": True,
                                 "hostPorts": {"8443": 18443}, "hostNetns": "/proc/1/ns/net"})
    assert AgentConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.node_id.startswith("router~")
    boot = yaml.safe_load(render_bootstrap(cfg))
    assert "sds-grpc" in [c["name"] for c in boot["static_resources"]["clusters"]]  # credentials without mTLS
    proxy = Proxy.from_node(boot["node"]["id"], boot["node"]["metadata"])
    assert proxy.kind == "gateway" and proxy.host_ports == ((8443, 18443),) and proxy.host_netns == "/proc/1/ns/net"
