"""The real control plane (store + registry + snapshot + renderer + ADS) over real gRPC Delta streams:
a restarted control plane answers from its durable store, and a change to a service is pushed only to the
proxies that can see it (Sidecar scope)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

from mizzen.model.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, Proxy
from mizzen.server.ads import DELTA_METHOD
from mizzen.server.controlplane import ControlPlane, Settings

SERVICES = "".join(f"""---
apiVersion: v1
kind: Service
metadata: {{name: svc-{i}}}
spec:
  ports: [{{port: 8080, name: http}}]
  selector: {{app: svc-{i}}}
""" for i in (1, 2))
SIDECAR = """apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: only-svc-1}
spec:
  workloadSelector: {labels: {app: scoped}}
  egress: [{hosts: ["./svc-1.default.svc.cluster.local"]}]
"""


def instance(i: int, addr: str) -> dict:
    return {"id": f"default.svc-{i}-0", "namespace": "default", "workload": f"svc-{i}", "address": addr,
            "ports": [8080], "labels": {"app": f"svc-{i}"}}


class Proxyish:
    """A Delta ADS client that behaves like Envoy: wildcard CDS/LDS, EDS/RDS by name, ACKs everything."""

    def __init__(self, channel: grpc.aio.Channel, node_id: str, labels: dict[str, str], ports: list[int] = ()):
        self.ports = tuple(ports)
        self.call = channel.stream_stream(
            DELTA_METHOD, request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString)()
        self.node_id, self.labels = node_id, labels
        self.received: list[discovery_pb2.DeltaDiscoveryResponse] = []
        self.have: dict[str, set[str]] = {CLUSTER: set(), ENDPOINT: set(), LISTENER: set(), ROUTE: set()}
        self.task = asyncio.ensure_future(self._run())

    async def _send(self, **kw) -> None:
        req = discovery_pb2.DeltaDiscoveryRequest(**kw)
        req.node.id = self.node_id
        meta = Proxy(id=self.node_id, labels=tuple(sorted(self.labels.items())), ports=self.ports).node_metadata()
        req.node.metadata.CopyFrom(struct_pb2.Struct())
        req.node.metadata.update(meta)
        await self.call.write(req)

    async def _run(self) -> None:
        await self._send(type_url=CLUSTER)
        await self._send(type_url=LISTENER)
        async for resp in self.call:
            self.received.append(resp)
            names = {r.name for r in resp.resources}
            self.have[resp.type_url] |= names
            self.have[resp.type_url] -= set(resp.removed_resources)
            await self._send(type_url=resp.type_url, response_nonce=resp.nonce)
            if resp.type_url == CLUSTER and names:
                await self._send(type_url=ENDPOINT, resource_names_subscribe=sorted(names))


async def wait_for(cond, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def test_scoped_push_and_restart_from_store(tmp_path: Path) -> None:
    async def main() -> None:
        settings = Settings(tmp_path, xds_tcp=("127.0.0.1", 0), debounce_quiet=0.05, debounce_max_wait=0.5)
        cp = ControlPlane(settings)
        cp.core.apply([("svc.yaml", SERVICES), ("sidecar.yaml", SIDECAR)])
        cp.core.upsert_instance(instance(1, "10.244.0.1"))
        cp.core.upsert_instance(instance(2, "10.244.0.2"))
        await cp.start()
        try:
            addr = cp.ads.addresses[-1]
            async with grpc.aio.insecure_channel(addr) as ch:
                scoped = Proxyish(ch, "scoped", {"app": "scoped"})
                wide = Proxyish(ch, "wide", {"app": "wide"})
                svc2 = "outbound|8080||svc-2.default.svc.cluster.local"
                await wait_for(lambda: svc2 in wide.have[ENDPOINT] and scoped.have[ENDPOINT])
                assert svc2 not in scoped.have[CLUSTER]  # the Sidecar limits what it sees
                n_scoped, n_wide = len(scoped.received), len(wide.received)
                cp.core.upsert_instance(instance(2, "10.244.0.22"))  # a change to svc-2 only
                await wait_for(lambda: len(wide.received) > n_wide)
                eds = wide.received[-1]
                assert eds.type_url == ENDPOINT and [r.name for r in eds.resources] == [svc2]
                await asyncio.sleep(0.5)  # several debounce periods: nothing may reach the scoped proxy
                assert len(scoped.received) == n_scoped
                cp.core.upsert_instance(instance(1, "10.244.0.11"))  # svc-1: both see it
                await wait_for(lambda: len(scoped.received) > n_scoped)
                for p in (scoped, wide):
                    p.call.cancel()
        finally:
            await cp.stop()
        # a restarted control plane resumes from the durable store and registry: full config at once
        cp2 = ControlPlane(settings)
        await cp2.start()
        try:
            async with grpc.aio.insecure_channel(cp2.ads.addresses[-1]) as ch:
                again = Proxyish(ch, "wide", {"app": "wide"})
                await wait_for(lambda: "outbound|8080||svc-1.default.svc.cluster.local" in again.have[ENDPOINT])
                assert {"outbound|8080||svc-1.default.svc.cluster.local",
                        "outbound|8080||svc-2.default.svc.cluster.local"} <= again.have[CLUSTER]
                again.call.cancel()
        finally:
            await cp2.stop()

    asyncio.run(main())


def test_two_replicas_on_one_store(tmp_path: Path) -> None:
    """A change applied through replica B reaches a proxy connected to replica A (shared durable store)."""
    async def main() -> None:
        a = ControlPlane(Settings(tmp_path, xds_tcp=("127.0.0.1", 0), debounce_quiet=0.05, refresh_interval=0.1))
        b = ControlPlane(Settings(tmp_path, xds_tcp=("127.0.0.1", 0), debounce_quiet=0.05, refresh_interval=0.1,
                                  replica=1))  # its own sockets (xds-1.sock, api-1.sock, ca-1.sock); no collector
        a.core.apply([("svc.yaml", SERVICES)])
        await a.start()
        await b.start()
        try:
            async with grpc.aio.insecure_channel(a.ads.addresses[-1]) as ch:
                p = Proxyish(ch, "p", {"app": "wide"})
                await wait_for(lambda: "outbound|8080||svc-1.default.svc.cluster.local" in p.have[CLUSTER])
                b.core.upsert_instance(instance(2, "10.244.0.2"))
                b.core.apply([("svc3.yaml", SERVICES.replace("svc-1", "svc-3").replace("svc-2", "svc-4"))])
                await wait_for(lambda: "outbound|8080||svc-3.default.svc.cluster.local" in p.have[CLUSTER]
                               and "outbound|8080||svc-2.default.svc.cluster.local" in p.have[ENDPOINT])
                p.call.cancel()
        finally:
            await b.stop()
            await a.stop()

    asyncio.run(main())


HIDDEN_OWN = """---
apiVersion: v1
kind: Service
metadata: {name: hello}
spec:
  ports: [{port: 8080, name: tcp-main}]
  selector: {app: hello}
---
apiVersion: v1
kind: Service
metadata: {name: other}
spec:
  ports: [{port: 9090, name: http}]
  selector: {app: other}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: hello-egress}
spec:
  workloadSelector: {labels: {app: hello}}
  egress: [{hosts: ["./other.default.svc.cluster.local"]}]
"""


def test_own_service_hidden_by_sidecar_egress_still_pushes_inbound(tmp_path: Path) -> None:
    """A proxy's inbound listener follows the protocol of the Services that select it, even when its Sidecar's
    egress hides them: renaming `tcp-main` to `http-main` must reach it (an HCM instead of a tcp_proxy)."""
    from envoy.config.listener.v3 import listener_pb2

    def inbound_is_http(p: "Proxyish") -> bool | None:
        for resp in reversed(p.received):
            for r in resp.resources:
                if resp.type_url == LISTENER and r.name == "virtualInbound":
                    lst = listener_pb2.Listener.FromString(r.resource.value)
                    (fc,) = [c for c in lst.filter_chains if c.filter_chain_match.destination_port.value == 8080]
                    return fc.filters[0].name == "envoy.filters.network.http_connection_manager"
        return None

    async def main() -> None:
        cp = ControlPlane(Settings(tmp_path, xds_tcp=("127.0.0.1", 0), debounce_quiet=0.05, debounce_max_wait=0.5))
        cp.core.apply([("mesh.yaml", HIDDEN_OWN)])
        await cp.start()
        try:
            async with grpc.aio.insecure_channel(cp.ads.addresses[-1]) as ch:
                hello = Proxyish(ch, "hello", {"app": "hello"}, ports=[8080])
                await wait_for(lambda: inbound_is_http(hello) is False)
                assert "outbound|8080||hello.default.svc.cluster.local" not in hello.have[CLUSTER]  # hidden
                cp.core.apply([("mesh.yaml", HIDDEN_OWN.replace("tcp-main", "http-main"))])
                await wait_for(lambda: inbound_is_http(hello) is True, timeout=5.0)
                hello.call.cancel()
        finally:
            await cp.stop()

    asyncio.run(main())


def test_leading_edge_debounce_pushes_a_lone_change_at_once(tmp_path: Path) -> None:
    """--debounce-leading: with a 2 s quiet period, a change after a quiet spell reaches the proxy long before
    2 s; the next change, right after it, is debounced as usual (it arrives, but not before the quiet period)."""
    async def main() -> None:
        quiet = 2.0
        cp = ControlPlane(Settings(tmp_path, xds_tcp=("127.0.0.1", 0), debounce_quiet=quiet, debounce_max_wait=5.0,
                                   debounce_leading=True))
        cp.core.apply([("svc.yaml", SERVICES)])
        cp.core.upsert_instance(instance(1, "10.244.0.1"))
        await cp.start()
        try:
            async with grpc.aio.insecure_channel(cp.ads.addresses[-1]) as ch:
                p = Proxyish(ch, "wide", {"app": "wide"})
                svc1 = "outbound|8080||svc-1.default.svc.cluster.local"
                await wait_for(lambda: svc1 in p.have[ENDPOINT])
                await asyncio.sleep(quiet + 0.2)  # a quiet spell
                loop = asyncio.get_running_loop()

                def has(addr: str) -> bool:
                    return any(r.name == svc1 and addr.encode() in r.resource.value
                               for resp in p.received for r in resp.resources)

                t0 = loop.time()
                cp.core.upsert_instance(instance(1, "10.244.0.11"))
                await wait_for(lambda: has("10.244.0.11"), timeout=quiet * 0.75)  # not held for the quiet period
                t1 = loop.time()
                cp.core.upsert_instance(instance(1, "10.244.0.12"))  # within the quiet period: debounced
                await asyncio.sleep(quiet * 0.5)
                assert not has("10.244.0.12")
                await wait_for(lambda: has("10.244.0.12"), timeout=quiet + 3)
                assert loop.time() - t1 >= quiet * 0.9 and t1 - t0 < quiet * 0.75
                p.call.cancel()
        finally:
            await cp.stop()

    asyncio.run(main())
