"""Services registered through the Consul API become mesh services (consulapi/sync.py).

`desired` (pure) on its own, then end to end in a real control plane with its Consul API mounted: py-consul
(unmodified) registers a service carrying many tags and KV entries; a Delta ADS client (like a sidecar) gets
one cluster and one ClusterLoadAssignment for it, with the instance only while its TTL check passes."""
from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path

import consul
import grpc
import pytest
from envoy.config.endpoint.v3 import endpoint_pb2

from mizzen.api import ResourceKey, from_dict
from mizzen.consulapi.agent import SERVICE_LABEL, SOURCE
from mizzen.consulapi.sync import SYNCED_LABEL, desired, service_doc
from mizzen.model.types import CLUSTER, ENDPOINT, Instance, labels_tuple
from mizzen.server.controlplane import ControlPlane, Settings
from tests.etcd.fixtures import etcd_cluster, etcd_prefix, needs_etcd  # noqa: F401
from tests.xds.test_controlplane_push import Proxyish, wait_for


def consul_inst(sid: str, name: str, port: int, protocol: str | None = None, ns: str = "default",
                address: str = "10.1.0.1") -> Instance:
    labels = {"app": name, SERVICE_LABEL: "{}"}
    if protocol:
        labels["protocol"] = protocol
    return Instance(id=f"{ns}.consul-{sid}", namespace=ns, workload=name, address=address, ports=(port,),
                    labels=labels_tuple(labels), sidecar=False, source=SOURCE)


def meshed(name: str, port: int) -> Instance:
    return Instance(id=f"default.{name}-0", namespace="default", workload=name, address="10.244.0.9",
                    ports=(port,), labels=labels_tuple({"app": name}))


def svc(name: str, port: int, synced: bool = False):
    d = service_doc(name, "default", {port: "http"}) if synced else {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": name}, "ports": [{"port": port, "name": "http"}]}}
    return from_dict(d)


def test_desired_services():
    apply, delete = desired([consul_inst("a", "pay", 9090, "http"), consul_inst("b", "pay", 9090),
                             consul_inst("c", "ledger", 7000), consul_inst("d", "Bad_Name", 1)], [])
    assert delete == [] and [(r.name, r.metadata.labels[SYNCED_LABEL]) for r in apply] == [
        ("ledger", "true"), ("pay", "true")]
    ports = {r.name: [(p.port, p.name) for p in r.spec.ports] for r in apply}
    assert ports == {"ledger": [(7000, "tcp")], "pay": [(9090, "http")]}  # Consul's default protocol: tcp
    # already as wanted: nothing to do; a hand-made Service of that name wins and is never touched
    assert desired([consul_inst("a", "pay", 9090, "http")], [svc("pay", 9090, synced=True)]) == ([], [])
    assert desired([consul_inst("a", "pay", 9090, "http")], [svc("pay", 9090)]) == ([], [])
    # the last Consul instance gone while meshed replicas remain (a migration): the Service stays
    assert desired([meshed("pay", 9090)], [svc("pay", 9090, synced=True)]) == ([], [])
    # nothing left that it selects: deleted; a hand-made one never is
    assert desired([], [svc("pay", 9090, synced=True)]) == ([], [ResourceKey("Service", "default", "pay")])
    assert desired([], [svc("pay", 9090)]) == ([], [])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoints(p: Proxyish, cluster: str) -> set[tuple[str, int]] | None:
    for resp in reversed(p.received):
        if resp.type_url != ENDPOINT:
            continue
        for r in resp.resources:
            if r.name == cluster:
                cla = endpoint_pb2.ClusterLoadAssignment.FromString(r.resource.value)
                return {(e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
                        for g in cla.endpoints for e in g.lb_endpoints}
    return None


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=needs_etcd)])
def store_url(request) -> str | None:
    if request.param == "sqlite":
        return None
    cluster = request.getfixturevalue("etcd_cluster")
    return "etcd://" + ",".join(cluster.endpoints) + f"/sync-{uuid.uuid4().hex[:8]}/"


def test_a_consul_registration_is_one_mesh_service_with_health_from_its_check(tmp_path: Path, store_url) -> None:
    port = free_port()
    cluster = "outbound|9090||pay.default.svc.cluster.local"

    async def main() -> None:
        cp = ControlPlane(Settings(tmp_path, xds_tcp=("127.0.0.1", 0), debounce_quiet=0.05, debounce_max_wait=0.3,
                                   store_url=store_url, consul_api=("127.0.0.1", port)))
        await cp.start()
        try:
            assert cp.consul_address == f"127.0.0.1:{port}"
            c = consul.Consul(host="127.0.0.1", port=port)
            tags = [f"iface:com.example.Pay{i}" for i in range(40)]  # Dubbo-style: one tag per interface
            await asyncio.to_thread(c.agent.service.register, "pay", service_id="pay-1", address="10.1.2.3",
                                    port=9090, tags=tags, meta={"protocol": "http"},
                                    check=consul.Check.ttl("30s"))
            for i in range(20):
                await asyncio.to_thread(c.kv.put, f"pay/config/iface{i}", "x")
            async with grpc.aio.insecure_channel(cp.ads.addresses[-1]) as ch:
                p = Proxyish(ch, "caller", {"app": "caller"})
                await wait_for(lambda: cluster in p.have[CLUSTER], timeout=15)
                svc = cp.store.get(ResourceKey("Service", "default", "pay"))
                assert [(x.port, x.name) for x in svc.spec.ports] == [(9090, "http")]
                # one service, one instance, whatever its tags and KV entries
                assert [i.id for i in cp.registry.list()] == ["default.consul-pay-1"]
                assert [h for h in cp.snapshot.services if "pay" in h] == ["pay.default.svc.cluster.local"]
                await wait_for(lambda: endpoints(p, cluster) == set(), timeout=10)  # critical until it passes
                await asyncio.to_thread(c.agent.check.ttl_pass, "service:pay-1")
                await wait_for(lambda: endpoints(p, cluster) == {("10.1.2.3", 9090)}, timeout=10)
                await asyncio.to_thread(c.agent.check.ttl_fail, "service:pay-1")
                await wait_for(lambda: endpoints(p, cluster) == set(), timeout=10)
                await asyncio.to_thread(c.agent.service.deregister, "pay-1")
                await wait_for(lambda: cluster not in p.have[CLUSTER], timeout=15)
                assert cp.store.get(ResourceKey("Service", "default", "pay")) is None
                p.call.cancel()
        finally:
            await cp.stop()

    asyncio.run(main())
