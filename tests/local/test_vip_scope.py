"""REGISTRY_ONLY really blocks: the runner gives a sidecar pod's Envoy DNAT rules only for the VIPs of services
its Sidecar lets it see (asked of the real control plane's REST API, `POST /api/v1/egress`), so a hidden
service's VIP is unreachable even through a passthrough cluster; ALLOW_ANY pods and sidecar-less pods keep
every VIP (the kube-proxy behaviour)."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mizzen.client import ApiClient
from mizzen.local import meshview
from mizzen.local.pods import Pod
from mizzen.local.table import MeshInfo, PodTable
from mizzen.model.types import Proxy
from mizzen.server.controlplane import ControlPlane, Settings
from tests.ca.harness import LoopThread

CONFIG = """apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{port: 8080, name: http}]
  selector: {app: web}
---
apiVersion: v1
kind: Service
metadata: {name: billing, namespace: shop}
spec:
  ports: [{port: 8080, name: http}]
  selector: {app: billing}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: locked, namespace: shop}
spec:
  workloadSelector: {labels: {app: client}}
  egress: [{hosts: ["./web.shop.svc.cluster.local"]}]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"""


class RecordingNetwork:
    """Records the VIP chain each pod would get (the netns network loads it with iptables-restore)."""

    routes_vips = True

    def __init__(self) -> None:
        self.chains: dict[str, list[str]] = {}

    def set_vip_rules(self, pod: str, chain: Sequence[str]) -> bool:
        self.chains[pod] = list(chain)
        return True

    def set_services(self, services: Iterable[Mapping[str, Any]]) -> bool:
        return False


def pod(name: str, app: str, sidecar: bool = True) -> Pod:
    return Pod(name=name, workload=app, namespace="shop", labels={"app": app}, ports=[8080], sidecar=sidecar,
               service_account="default", locality="", command=["true"], env={}, cwd="/", index=0)


def test_registry_only_pods_get_dnat_rules_only_for_the_vips_they_see(tmp_path: Path) -> None:
    loop = LoopThread()
    cp = ControlPlane(Settings(tmp_path))
    cp.core.apply([("c.yaml", CONFIG)])
    for i, app in enumerate(("web", "billing")):
        cp.core.upsert_instance({"id": f"shop.{app}-0", "namespace": "shop", "workload": app,
                                 "address": f"10.244.0.{i + 10}", "ports": [8080], "labels": {"app": app}})
    loop.run(cp.start())
    try:
        api = ApiClient(str(tmp_path), replicas=1, timeout=10)
        table = PodTable(MeshInfo("abc123", str(tmp_path), str(tmp_path / "mesh.yaml")))
        for p in (pod("client-0", "client"), pod("other-0", "other"), pod("plain-0", "client", sidecar=False)):
            table.add(p)
        net = RecordingNetwork()
        meshview.sync_vip_rules(table, api, net, fetch=True)
        vips = {s["name"]: s["vip"] for s in table.services}
        web, billing = f"-d {vips['web']}/32", f"-d {vips['billing']}/32"
        assert any(web in line for line in net.chains["client-0"])
        assert not any(billing in line for line in net.chains["client-0"])  # hidden by its Sidecar
        for other in ("other-0", "plain-0"):  # ALLOW_ANY, and a pod without a sidecar: every VIP
            assert any(billing in line for line in net.chains[other]) and any(web in line for line in net.chains[other])
        # a new pod gets its scoped rules from the start
        assert not any(billing in line for line in meshview.vip_chain(table, api, pod("client-1", "client")))
        # the Sidecar goes away: the next sync gives the pod every VIP again
        api.request("DELETE", "/api/v1/resources/Sidecar/shop/locked")
        client = Proxy(id="q", namespace="shop", labels=(("app", "client"),))
        loop.run(_until(lambda: cp.snapshot.outbound_mode(client) == "ALLOW_ANY"))
        meshview.sync_vip_rules(table, api, net)
        assert any(billing in line for line in net.chains["client-0"])
    finally:
        loop.run(cp.stop())
        loop.close()


async def _until(cond, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
