"""Istio's WorkloadEntry / WorkloadGroup, accepted unchanged: validation with field paths, and a WorkloadEntry
selected by a v1 Service is an endpoint of it in every caller's EDS (a real control plane, a real Delta ADS
stream), gone when the entry is deleted."""
from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from mizzen.api import InvalidConfig, load_text
from mizzen.model.types import ENDPOINT
from mizzen.server.controlplane import ControlPlane, Settings
from tests.consulapi.test_service_sync import endpoints
from tests.xds.test_controlplane_push import Proxyish, wait_for

MESH = """apiVersion: v1
kind: Service
metadata: {name: pay}
spec:
  selector: {app: pay}
  ports: [{port: 9090, name: http}]
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadGroup
metadata: {name: pay}
spec:
  metadata: {labels: {app: pay}}
  template: {ports: {http: 9090}, serviceAccount: pay}
  probe: {periodSeconds: 5, httpGet: {path: /ready, port: 9090}}
"""
ENTRY = """apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1}
spec:
  address: 10.250.0.9
  ports: {http: 9090}
  labels: {app: pay, version: vm}
  locality: r1/z1
  serviceAccount: pay
"""


def test_validation_names_the_field():
    with pytest.raises(InvalidConfig) as e:
        load_text(ENTRY.replace("10.250.0.9", "vm_1.example.com").replace("http: 9090", "http: 0"))
    text = "\n".join(str(i) for i in e.value.issues)
    assert "WorkloadEntry default/vm-1 field spec.address" in text and "spec.ports" in text
    with pytest.raises(InvalidConfig, match="template.address"):
        load_text(MESH.replace("template: {", "template: {address: 10.0.0.1, "))
    with pytest.raises(InvalidConfig, match="Address is required"):
        load_text(ENTRY.replace("  address: 10.250.0.9\n", ""))


def test_a_workload_entry_is_an_endpoint_of_the_services_that_select_it(tmp_path: Path) -> None:
    cluster = "outbound|9090||pay.default.svc.cluster.local"

    async def main() -> None:
        cp = ControlPlane(Settings(tmp_path, xds_tcp=("127.0.0.1", 0), debounce_quiet=0.05, debounce_max_wait=0.3))
        cp.core.apply([("mesh.yaml", MESH)])
        await cp.start()
        try:
            async with grpc.aio.insecure_channel(cp.ads.addresses[-1]) as ch:
                p = Proxyish(ch, "caller", {"app": "caller"})
                await wait_for(lambda: endpoints(p, cluster) == set())
                n = len(p.received)
                status = await cp.core.apply_async([("we.yaml", ENTRY)])
                assert [a["kind"] for a in status["applied"]] == ["WorkloadEntry"]
                await wait_for(lambda: endpoints(p, cluster) == {("10.250.0.9", 9090)})
                # an endpoint change: only that service's assignment is sent
                assert {r.name for resp in p.received[n:] for r in resp.resources} == {cluster}
                assert all(resp.type_url == ENDPOINT for resp in p.received[n:])
                cp.core.delete("WorkloadEntry", "default", "vm-1")
                await wait_for(lambda: endpoints(p, cluster) == set())
                p.call.cancel()
        finally:
            await cp.stop()

    asyncio.run(main())
