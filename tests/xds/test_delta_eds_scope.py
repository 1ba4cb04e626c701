"""Application-level discovery at the xDS level (issue 12 §7): a Consul registration with many interface tags
and KV entries stays one service with N instances, and a change of one instance sends exactly one Delta EDS
response holding only that service's ClusterLoadAssignment, to exactly the proxies that see the service —
real control plane, real Consul client (py-consul), real gRPC Delta streams."""
from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import consul
import grpc

from mizzen.model.types import CLUSTER, ENDPOINT
from mizzen.server.controlplane import ControlPlane, Settings

from .test_controlplane_push import SERVICES, Proxyish, instance, wait_for

PAY = "outbound|9090||pay.default.svc.cluster.local"
SCOPED = """apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: only-svc-1}
spec:
  workloadSelector: {labels: {app: scoped}}
  egress: [{hosts: ["./svc-1.default.svc.cluster.local"]}]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_instance_change_sends_one_cla_to_the_proxies_that_see_it(tmp_path: Path) -> None:
    port = free_port()

    async def main() -> None:
        cp = ControlPlane(Settings(tmp_path, xds_tcp=("127.0.0.1", 0), debounce_quiet=0.05, debounce_max_wait=0.3,
                                   consul_api=("127.0.0.1", port)))
        cp.core.apply([("svc.yaml", SERVICES), ("sidecar.yaml", SCOPED)])
        cp.core.upsert_instance(instance(1, "10.244.0.1"))
        cp.core.upsert_instance(instance(2, "10.244.0.2"))
        await cp.start()
        c = consul.Consul(host="127.0.0.1", port=port)
        tags = [f"iface:com.example.pay.Api{i}" for i in range(100)]
        for i in (1, 2, 3):
            await asyncio.to_thread(c.agent.service.register, "pay", service_id=f"pay-{i}", address=f"10.1.0.{i}",
                                    port=9090, tags=tags, meta={"protocol": "http"},
                                    check=consul.Check.ttl("60s"))
            await asyncio.to_thread(c.agent.check.ttl_pass, f"service:pay-{i}")
        for i in range(50):
            await asyncio.to_thread(c.kv.put, f"dubbo/com.example.pay.Api{i}/providers", "x")
        try:
            async with grpc.aio.insecure_channel(cp.ads.addresses[-1]) as ch:
                wide = [Proxyish(ch, f"wide-{k}", {"app": "wide"}) for k in range(3)]
                scoped = Proxyish(ch, "scoped", {"app": "scoped"})
                await wait_for(lambda: all(PAY in p.have[ENDPOINT] for p in wide) and scoped.have[ENDPOINT],
                               timeout=15)
                assert PAY not in scoped.have[CLUSTER]
                # one service, three instances, however many tags and KV entries
                assert sorted(i.id for i in cp.registry.list() if "pay" in i.id) == [
                    "default.consul-pay-1", "default.consul-pay-2", "default.consul-pay-3"]
                await asyncio.sleep(0.6)  # let every push settle
                before = {p.node_id: len(p.received) for p in (*wide, scoped)}
                await asyncio.to_thread(c.agent.check.ttl_fail, "service:pay-2")  # one instance changes
                await wait_for(lambda: all(len(p.received) > before[p.node_id] for p in wide))
                await asyncio.sleep(0.6)  # several debounce periods: anything else would have come by now
                for p in wide:
                    new = p.received[before[p.node_id]:]
                    assert [(r.type_url, [x.name for x in r.resources], list(r.removed_resources)) for r in new] == [
                        (ENDPOINT, [PAY], [])], new
                assert len(scoped.received) == before["scoped"]  # it does not see pay: nothing at all
                # KV writes are not registry changes: nobody is pushed
                before = {p.node_id: len(p.received) for p in (*wide, scoped)}
                await asyncio.to_thread(c.kv.put, "dubbo/com.example.pay.Api0/providers", "y")
                await asyncio.sleep(0.6)
                assert {p.node_id: len(p.received) for p in (*wide, scoped)} == before
                for p in (*wide, scoped):
                    p.call.cancel()
        finally:
            await cp.stop()

    asyncio.run(main())
