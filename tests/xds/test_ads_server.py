"""The grpc.aio ADS server with real grpcio clients (SotW and Delta) over TCP and a unix socket."""
import asyncio
import os
import stat

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from mizzen.model.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, Proxy
from mizzen.server.ads import DELTA_METHOD, SOTW_METHOD, AdsServer

from .xds_helpers import cluster, endpoints, listener, routes, target


class Source:
    """An in-process source: the real interface, with targets set by the test."""

    def __init__(self, t, ready=True):
        self.t = t
        self.per_proxy = {}
        self._ready = ready
        self.generation = 1
        self.calls = 0

    def ready(self):
        return self._ready

    def resources_for(self, proxy):
        self.calls += 1
        return self.per_proxy.get(proxy.id, self.t)


def base_target(addr=("127.0.0.1", 9000)):
    return target([cluster("a")], [endpoints("a", [addr])], [listener("L", 15001, "R")], [routes("R", "a")])


def run(coro, timeout=20):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def node_req(req, pid="sidecar~10.0.0.1~p1.default~default.svc.cluster.local"):
    req.node.id = pid
    req.node.metadata.update(Proxy(pid, namespace="default", workload="reviews-v1").node_metadata())
    return req


class Client:
    def __init__(self, channel, delta=False):
        self.delta = delta
        if delta:
            self.call = channel.stream_stream(DELTA_METHOD, request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
                                              response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString)()
        else:
            self.call = channel.stream_stream(SOTW_METHOD, request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                                              response_deserializer=discovery_pb2.DiscoveryResponse.FromString)()

        self.q: asyncio.Queue = asyncio.Queue()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self):
        # a read cancelled by a timeout would cancel the whole RPC, so one task reads into a queue
        async for msg in self.call:
            self.q.put_nowait(msg)

    async def send(self, **kw):
        node = kw.pop("node", None)
        cls = discovery_pb2.DeltaDiscoveryRequest if self.delta else discovery_pb2.DiscoveryRequest
        req = cls(**kw)
        if node:
            node_req(req, node)
        await self.call.write(req)

    async def recv(self, timeout=5.0):
        return await asyncio.wait_for(self.q.get(), timeout)


async def started(source, addrs=("127.0.0.1:0",), **kw):
    ads = AdsServer(source, **kw)
    bound = await ads.start(list(addrs))
    return ads, bound


def test_waits_for_ready_then_sotw_flow_and_status():
    async def main():
        src = Source(base_target(), ready=False)
        sent = []
        ads, bound = await started(src, on_send=lambda pid, r: sent.append((pid, r.short)))
        try:
            async with grpc.aio.insecure_channel(bound[0]) as ch:
                c = Client(ch)
                pid = "sidecar~10.0.0.1~p1.default~default.svc.cluster.local"
                await c.send(type_url=CLUSTER, node=pid)
                try:
                    await c.recv(timeout=0.4)
                    raise AssertionError("answered before the source was ready")
                except asyncio.TimeoutError:
                    pass
                src._ready = True
                cds = await c.recv()
                assert cds.type_url == CLUSTER and [a.type_url for a in cds.resources] == [CLUSTER]
                await c.send(type_url=ENDPOINT, resource_names=["a"])
                eds = await c.recv()
                assert eds.type_url == ENDPOINT and len(eds.resources) == 1
                await c.send(type_url=LISTENER)  # waits: CDS not ACKed yet
                await c.send(type_url=CLUSTER, version_info=cds.version_info, response_nonce=cds.nonce)
                await c.send(type_url=ENDPOINT, resource_names=["a"], version_info=eds.version_info, response_nonce=eds.nonce)
                lds = await c.recv()
                assert lds.type_url == LISTENER
                await c.send(type_url=ROUTE, resource_names=["R"])
                rds = await c.recv()
                assert rds.type_url == ROUTE
                await c.send(type_url=LISTENER, version_info=lds.version_info, response_nonce=lds.nonce)
                await c.send(type_url=ROUTE, resource_names=["R"], version_info=rds.version_info, response_nonce=rds.nonce)
                for _ in range(50):
                    st = ads.statuses()
                    if st and all(v["state"] == "SYNCED" for v in st[0]["types"].values()):
                        break
                    await asyncio.sleep(0.02)
                (p,) = ads.statuses()
                assert p["id"] == pid and p["namespace"] == "default" and p["workload"] == "reviews-v1"
                assert p["connected"] and p["protocol"] == "sotw" and p["connectedSince"].endswith("Z")
                assert {k: v["state"] for k, v in p["types"].items()} == dict.fromkeys(("CDS", "EDS", "LDS", "RDS"), "SYNCED")
                assert p["types"]["CDS"]["ackedVersion"] == cds.version_info
                assert [s for _, s in sent] == ["CDS", "EDS", "LDS", "RDS"]
                dump = ads.sent_resources(pid, "CDS")
                assert dump["resources"][0]["name"] == "a"
                assert dump["resources"][0]["resource"]["type"] == "EDS"
                assert ads.sent_resources(pid, "RDS")["resources"][0]["resource"]["virtualHosts"][0]["routes"][0]["route"]["cluster"] == "a"
                assert ads.sent_resources("nobody", "CDS") is None
                # NACK: recorded and visible
                src.t = target([cluster("a", 3)], [endpoints("a", [("127.0.0.1", 9000)])], [listener("L", 15001, "R")], [routes("R", "a")])
                ads.notify()
                cds2 = await c.recv()
                await c.send(type_url=CLUSTER, version_info=cds.version_info, response_nonce=cds2.nonce,
                             error_detail={"message": "bad thing"})
                for _ in range(50):
                    if ads.statuses()[0]["types"]["CDS"]["state"] == "NACKED":
                        break
                    await asyncio.sleep(0.02)
                assert ads.statuses()[0]["types"]["CDS"]["error"] == "bad thing"
            # the client went away: still listed, not connected
            for _ in range(100):
                if not ads.statuses()[0]["connected"]:
                    break
                await asyncio.sleep(0.02)
            p = ads.statuses()[0]
            assert not p["connected"] and p["disconnectedAt"]
        finally:
            await ads.stop(0)

    run(main())


def test_delta_notify_endpoint_push_and_predicate_over_unix_socket(tmp_path):
    async def main():
        src = Source(base_target())
        sock = tmp_path / "xds.sock"
        ads, bound = await started(src, addrs=[f"unix:{sock}"])
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o666
        try:
            async with grpc.aio.insecure_channel(f"unix:{sock}") as ch1, grpc.aio.insecure_channel(f"unix:{sock}") as ch2:
                clients = {}
                for pid, ch in (("p1", ch1), ("p2", ch2)):
                    c = clients[pid] = Client(ch, delta=True)
                    await c.send(type_url=CLUSTER, node=pid)
                    cds = await c.recv()
                    assert [r.name for r in cds.resources] == ["a"] and cds.type_url == CLUSTER
                    await c.send(type_url=ENDPOINT, resource_names_subscribe=["a"])
                    eds = await c.recv()
                    assert [r.name for r in eds.resources] == ["a"]
                    await c.send(type_url=CLUSTER, response_nonce=cds.nonce)
                    await c.send(type_url=ENDPOINT, response_nonce=eds.nonce)
                calls = src.calls
                # only p2 is affected by this change
                src.per_proxy["p2"] = base_target(("127.0.0.7", 9000))
                await asyncio.to_thread(ads.notify, lambda p: p.id == "p2")  # from another thread
                upd = await clients["p2"].recv()
                assert upd.type_url == ENDPOINT and [r.name for r in upd.resources] == ["a"] and not upd.removed_resources
                from envoy.config.endpoint.v3 import endpoint_pb2
                cla = endpoint_pb2.ClusterLoadAssignment()
                upd.resources[0].resource.Unpack(cla)
                assert cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address == "127.0.0.7"
                assert src.calls == calls + 1  # recomputed only for the affected proxy
                try:
                    await clients["p1"].recv(timeout=0.3)
                    raise AssertionError("p1 was pushed although not affected")
                except asyncio.TimeoutError:
                    pass
                st = {p["id"]: p for p in ads.statuses()}
                assert st["p1"]["protocol"] == "delta" and st["p2"]["types"]["EDS"]["state"] == "STALE"
                await clients["p2"].send(type_url=ENDPOINT, response_nonce=upd.nonce)
                for _ in range(50):
                    if {p["id"]: p for p in ads.statuses()}["p2"]["types"]["EDS"]["state"] == "SYNCED":
                        break
                    await asyncio.sleep(0.02)
                assert {p["id"]: p for p in ads.statuses()}["p2"]["types"]["EDS"]["state"] == "SYNCED"
        finally:
            await ads.stop(0)
        assert not sock.exists()

    run(main())


def test_notifies_before_the_push_collapse_and_reconnect_replaces():
    async def main():
        src = Source(base_target())
        ads, bound = await started(src)
        try:
            async with grpc.aio.insecure_channel(bound[0]) as ch:
                c = Client(ch, delta=True)
                await c.send(type_url=ENDPOINT, resource_names_subscribe=["a"], node="p1")
                e = await c.recv()
                await c.send(type_url=ENDPOINT, response_nonce=e.nonce)
                await asyncio.sleep(0.05)
                calls = src.calls
                for i in range(5):  # five snapshots in a row, before the proxy's push gets to run
                    src.t = base_target(("127.0.0.1", 9001 + i))
                    ads.notify(lambda p: p.id == "p1")
                    ads.notify(lambda p: False)
                e2 = await c.recv()
                assert src.calls == calls + 1  # five notifies, one recompute, one push (of the latest)
                from envoy.config.endpoint.v3 import endpoint_pb2
                cla = endpoint_pb2.ClusterLoadAssignment()
                e2.resources[0].resource.Unpack(cla)
                assert cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value == 9005
                # Delta reconnect of the same proxy with what it has: nothing is resent
                c2 = Client(ch, delta=True)
                await c2.send(type_url=ENDPOINT, resource_names_subscribe=["a"], node="p1",
                              initial_resource_versions={"a": e2.resources[0].version})
                try:
                    r = await c2.recv(timeout=0.3)
                    raise AssertionError(f"resent unchanged {r}")
                except asyncio.TimeoutError:
                    pass
                (p,) = ads.statuses()
                assert p["connected"] and p["types"]["EDS"]["state"] == "SYNCED"
        finally:
            await ads.stop(0)

    run(main())


def test_reconnect_storm_is_queued_not_shed():
    """1500 streams opening at once (a control-plane restart): grpc core would shed calls past 1000 pending."""
    async def main():
        ads, bound = await started(Source(base_target()))
        try:
            async with grpc.aio.insecure_channel(bound[0]) as ch:
                m = ch.stream_stream(SOTW_METHOD, request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                                     response_deserializer=discovery_pb2.DiscoveryResponse.FromString)

                async def one(i):
                    call = m()
                    req = node_req(discovery_pb2.DiscoveryRequest(type_url=CLUSTER), f"storm-{i}")
                    try:
                        await call.write(req)
                        return (await call.read()).type_url == CLUSTER
                    except grpc.aio.AioRpcError as e:
                        return e.code()

                res = await asyncio.gather(*(one(i) for i in range(1500)))
                failed = [r for r in res if r is not True]
                assert not failed, f"{len(failed)} of 1500 streams failed: {set(map(str, failed))}"
                assert ads.connected_count() == 1500
        finally:
            await ads.stop(0)

    run(main(), timeout=40)


def test_source_error_ends_stream_and_disconnected_proxies_are_forgotten():
    class Broken(Source):
        def resources_for(self, proxy):
            raise ValueError("renderer bug")

    async def main():
        ads, bound = await started(Broken(base_target()), forget_after=0.3)
        try:
            async with grpc.aio.insecure_channel(bound[0]) as ch:
                c = Client(ch)
                await c.send(type_url=CLUSTER, node="p-broken")
                await asyncio.wait_for(c.reader, 5)  # the server ended the stream instead of hanging
                assert c.q.empty()
            (p,) = ads.statuses()
            assert p["id"] == "p-broken" and not p["connected"]
            await asyncio.sleep(0.4)
            assert ads.statuses() == []
        finally:
            await ads.stop(0)

    run(main())
