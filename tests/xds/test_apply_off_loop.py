"""An EnvoyPatch apply runs `envoy --mode validate` (and renders config) before it is accepted. That work runs
off the control plane's event loop: while it runs, the same control plane keeps serving ADS and pushes a
registry change to 50 connected proxies (real gRPC streams). Ordering, not wall time: the Envoy the check
runs is held at a gate until every proxy has the push, and only then let through."""
from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import aiohttp
import grpc
from envoy.config.endpoint.v3 import endpoint_pb2

from mizzen.model.types import ENDPOINT
from mizzen.server.controlplane import ControlPlane, Settings
from tests.envoy_bin import envoy_binary

from .test_controlplane_push import Proxyish, wait_for

N = 50
CLUSTER = "outbound|8080||svc-1.default.svc.cluster.local"
MESH = """apiVersion: v1
kind: Service
metadata: {name: svc-1}
spec: {ports: [{port: 8080, name: http}], selector: {app: svc-1}}
"""
PATCH = """apiVersion: mizzen.dev/v1
kind: EnvoyPatch
metadata: {name: short-timeout}
spec:
  workloadSelector: {labels: {app: client}}
  patches:
  - {applyTo: CLUSTER, name: "outbound|8080||svc-1.default.svc.cluster.local", operation: MERGE,
     value: {connect_timeout: 0.5s}}
"""


def instance(addr: str) -> dict:
    return {"id": "default.svc-1-0", "namespace": "default", "workload": "svc-1", "address": addr,
            "ports": [8080], "labels": {"app": "svc-1"}}


def endpoint_addresses(p: Proxyish) -> set[str]:
    for resp in reversed(p.received):
        if resp.type_url != ENDPOINT:
            continue
        for r in resp.resources:
            if r.name == CLUSTER:
                cla = endpoint_pb2.ClusterLoadAssignment.FromString(r.resource.value)
                return {e.endpoint.address.socket_address.address for g in cla.endpoints for e in g.lb_endpoints}
    return set()


def gated_envoy(tmp: Path) -> tuple[Path, Path, Path]:
    """An Envoy that says when it starts and waits at a gate (at most 30 s, so a control plane that blocks its
    loop on it fails this test instead of hanging it) before it runs the real binary."""
    started, gate, script = tmp / "validate-started", tmp / "gate", tmp / "envoy-gated"
    script.write_text(f"#!/bin/sh\ntouch '{started}'\ni=0\n"
                      f"while [ ! -e '{gate}' ] && [ $i -lt 1500 ]; do sleep 0.02; i=$((i+1)); done\n"
                      f"exec '{envoy_binary()}' \"$@\"\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return started, gate, script


def test_pushes_to_50_proxies_flow_while_a_patch_apply_is_validated(tmp_path: Path, monkeypatch) -> None:
    started, gate, script = gated_envoy(tmp_path)
    monkeypatch.setenv("MIZZEN_ENVOY", str(script))
    state = tmp_path / "state"

    async def main() -> None:
        cp = ControlPlane(Settings(state, xds_tcp=("127.0.0.1", 0), debounce_quiet=0.02, debounce_max_wait=0.2))
        cp.core.apply([("mesh.yaml", MESH)])
        cp.core.upsert_instance(instance("10.244.0.1"))
        await cp.start()
        try:
            async with grpc.aio.insecure_channel(cp.ads.addresses[-1]) as ch:
                proxies = [Proxyish(ch, f"client-{i}", {"app": "client"}) for i in range(N)]
                await wait_for(lambda: all(endpoint_addresses(p) == {"10.244.0.1"} for p in proxies), timeout=30)
                connector = aiohttp.UnixConnector(path=str(state / "api.sock"))
                token = (state / "admin.token").read_text().strip()  # made by the control plane's start
                async with aiohttp.ClientSession(connector=connector,
                                                 headers={"Authorization": f"Bearer {token}"}) as http:
                    apply = asyncio.ensure_future(http.post("http://cp/api/v1/apply", json={
                        "files": [{"name": "patch.yaml", "text": PATCH}]}))
                    await wait_for(started.exists, timeout=30)  # the apply's Envoy check is running
                    # the registry changes (through the REST API too) while the check waits at the gate
                    async with http.put("http://cp/api/v1/instances/default.svc-1-0",
                                        json=instance("10.244.0.2")) as r:
                        assert r.status == 200
                    await wait_for(lambda: all(endpoint_addresses(p) == {"10.244.0.2"} for p in proxies),
                                   timeout=20)
                    assert not apply.done() and not gate.exists()  # every push landed while it validated
                    gate.touch()
                    async with await apply as resp:
                        body = await resp.json()
                    assert resp.status == 200, body
                    assert [a["kind"] for a in body["applied"]] == ["EnvoyPatch"]
                for p in proxies:
                    p.call.cancel()
        finally:
            await cp.stop()

    asyncio.run(main())
    assert not os.path.exists(state / "api.sock")
