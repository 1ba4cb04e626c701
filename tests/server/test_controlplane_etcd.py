"""Control planes on a real etcd cluster, driven by real Delta ADS streams and their real REST API:
- two control planes on one etcd prefix serve the same mesh: an apply through one and a registration through
  the other reach a proxy connected to either, woken by etcd watches (no polling loop runs);
- with the whole cluster down: `apply` answers 503 "store unavailable" at once (nothing written), proxies keep
  what they have (no push), a proxy that reconnects gets the last snapshot whole; when etcd returns the same
  control planes converge with no restart;
- a control plane started while etcd is down serves nothing (no xDS socket; `/healthz` 503 naming the reason)
  and begins serving, full config, once etcd is back."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import aiohttp
import grpc
import pytest

from mizzen.model.types import CLUSTER, ENDPOINT
from mizzen.server.controlplane import ControlPlane, Settings
from tests.etcd.fixtures import etcd_cluster, needs_etcd, start_cluster, stop_cluster  # noqa: F401
from tests.xds.test_controlplane_push import SERVICES, Proxyish, instance, wait_for

pytestmark = [needs_etcd]

SVC1 = "outbound|8080||svc-1.default.svc.cluster.local"
SVC2 = "outbound|8080||svc-2.default.svc.cluster.local"
SVC3 = "outbound|8080||svc-3.default.svc.cluster.local"


def url(cluster, prefix: str) -> str:
    return "etcd://" + ",".join(cluster.endpoints) + prefix


def settings(state: Path, store_url: str, name: str = "a") -> Settings:
    return Settings(state, xds_tcp=("127.0.0.1", 0), debounce_quiet=0.05, debounce_max_wait=0.3,
                    xds_socket=state / f"xds-{name}.sock", api_socket=state / f"api-{name}.sock",
                    ca_socket=state / f"ca-{name}.sock", replica=1 if name == "b" else 0,
                    store_url=store_url, refresh_interval=0.2)  # the periodic task: CA files and tokens only


async def rest(sock: Path, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """A REST call as the state dir's admin (every call but /healthz needs a token)."""
    token = (sock.parent / "admin.token").read_text().strip()
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as http:
        async with http.request(method, f"http://cp{path}", json=body,
                                headers={"Authorization": f"Bearer {token}"}) as r:
            return r.status, json.loads(await r.text())


def apply_body(text: str) -> dict:
    return {"files": [{"name": "mesh.yaml", "text": text}]}


def test_two_control_planes_on_one_etcd_serve_the_same_mesh(tmp_path: Path, etcd_cluster) -> None:  # noqa: F811
    store = url(etcd_cluster, f"/cp-{uuid.uuid4().hex[:8]}/")

    async def main() -> None:
        a, b = ControlPlane(settings(tmp_path, store, "a")), ControlPlane(settings(tmp_path, store, "b"))
        polled: list[int] = []  # watches, no polling: the periodic task never reads the store
        for cp in (a, b):
            if cp.backends is not None:
                real = cp.store.refresh
                cp.store.refresh = lambda real=real: (polled.append(1), real())[1]
        await a.start()
        await b.start()
        try:
            assert a.backends.watch_driven and b.backends.watch_driven
            await asyncio.sleep(0.5)  # a few periods of the periodic task
            assert polled == []
            status, body = await rest(tmp_path / "api-a.sock", "POST", "/api/v1/apply", apply_body(SERVICES))
            assert status == 200, body
            status, health = await rest(tmp_path / "api-b.sock", "GET", "/healthz")
            assert status == 200 and health["store"]["backend"] == "etcd" and health["store"]["available"]
            async with grpc.aio.insecure_channel(b.ads.addresses[-1]) as ch:
                p = Proxyish(ch, "p", {"app": "wide"})
                await wait_for(lambda: {SVC1, SVC2} <= p.have[CLUSTER])  # applied through a, served by b
                status, _ = await rest(tmp_path / "api-a.sock", "PUT", "/api/v1/instances/default.svc-2-0",
                                       instance(2, "10.244.0.2"))
                assert status == 200
                await wait_for(lambda: SVC2 in p.have[ENDPOINT] and b.registry.get("default.svc-2-0") is not None)
                p.call.cancel()
        finally:
            await b.stop()
            await a.stop()

    asyncio.run(main())


@pytest.mark.e2e
def test_cluster_down_then_back_no_empty_push_and_no_restart(tmp_path: Path) -> None:
    cluster, d = start_cluster(3)
    store = url(cluster, "/down/")

    async def main() -> None:
        cp = ControlPlane(settings(tmp_path, store))
        await cp.start()
        try:
            status, body = await rest(tmp_path / "api-a.sock", "POST", "/api/v1/apply", apply_body(SERVICES))
            assert status == 200, body
            cp.core.upsert_instance(instance(1, "10.244.0.1"))
            async with grpc.aio.insecure_channel(cp.ads.addresses[-1]) as ch:
                p = Proxyish(ch, "p", {"app": "wide"})
                await wait_for(lambda: {SVC1, SVC2} <= p.have[CLUSTER] and SVC1 in p.have[ENDPOINT])
                await asyncio.to_thread(cluster.down)
                n = len(p.received)
                t0 = time.monotonic()
                status, body = await rest(tmp_path / "api-a.sock", "POST", "/api/v1/apply",
                                          apply_body(SERVICES.replace("svc-1", "svc-3")))
                assert status == 503 and "store unavailable" in body["message"], body
                assert time.monotonic() - t0 < 3.0 and not body["outcomeUnknown"]
                status, health = await rest(tmp_path / "api-a.sock", "GET", "/healthz")
                await wait_for(lambda: not cp.backends.available, timeout=15)
                status, health = await rest(tmp_path / "api-a.sock", "GET", "/healthz")
                assert status == 200 and health["store"]["available"] is False
                await asyncio.sleep(1.0)
                assert len(p.received) == n  # nothing pushed: no empty snapshot, no change
                again = Proxyish(ch, "p2", {"app": "wide"})  # a proxy (re)connecting meanwhile
                await wait_for(lambda: {SVC1, SVC2} <= again.have[CLUSTER] and SVC1 in again.have[ENDPOINT])
                assert SVC3 not in again.have[CLUSTER]  # and the refused apply left nothing behind
                await asyncio.to_thread(cluster.up, 3)
                status, body = await rest(tmp_path / "api-a.sock", "POST", "/api/v1/apply",
                                          apply_body(SERVICES.replace("svc-1", "svc-3")))
                assert status == 200, body
                await wait_for(lambda: SVC3 in p.have[CLUSTER] and SVC3 in again.have[CLUSTER], timeout=15)
                await wait_for(lambda: cp.backends.available, timeout=15)
                p.call.cancel()
                again.call.cancel()
        finally:
            await cp.stop()

    try:
        asyncio.run(main())
    finally:
        stop_cluster(cluster, d)


@pytest.mark.e2e
def test_control_plane_started_while_etcd_is_down_serves_nothing_until_it_is_back(tmp_path: Path) -> None:
    cluster, d = start_cluster(3)
    store = url(cluster, "/late/")

    async def main() -> None:
        first = ControlPlane(settings(tmp_path, store, "first"))
        await first.start()
        first.core.apply([("mesh.yaml", SERVICES)])
        first.core.upsert_instance(instance(1, "10.244.0.1"))
        await first.stop()
        await asyncio.to_thread(cluster.down)
        cp = ControlPlane(settings(tmp_path, store))
        assert cp.backends is None and "store unavailable" in cp.store_error
        starting = asyncio.ensure_future(cp.start())
        try:
            await wait_for(lambda: (tmp_path / "api-a.sock").exists())
            status, health = await rest(tmp_path / "api-a.sock", "GET", "/healthz")
            assert status == 503 and health["ready"] is False
            assert "store unavailable" in health["store"]["error"]
            status, body = await rest(tmp_path / "api-a.sock", "GET", "/api/v1/resources")
            assert status == 503 and "has not loaded its store" in body["message"]
            assert not (tmp_path / "xds-a.sock").exists() and not starting.done()  # no xDS at all
            await asyncio.to_thread(cluster.up, 3)
            await asyncio.wait_for(starting, 30)
            async with grpc.aio.insecure_channel(cp.ads.addresses[-1]) as ch:
                p = Proxyish(ch, "p", {"app": "wide"})
                await wait_for(lambda: {SVC1, SVC2} <= p.have[CLUSTER] and SVC1 in p.have[ENDPOINT])
                p.call.cancel()
            status, health = await rest(tmp_path / "api-a.sock", "GET", "/healthz")
            assert status == 200 and health["ready"] is True
        finally:
            await cp.stop()
            if not starting.done():
                starting.cancel()

    try:
        asyncio.run(main())
    finally:
        stop_cluster(cluster, d)
