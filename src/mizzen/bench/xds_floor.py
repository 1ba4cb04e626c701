"""The floor for `mizzen bench xds`: a bare gRPC ADS server that only writes pre-serialized bytes.

Same machine, same run, same load client, same resources (the ones the real control plane sent proxy 0,
fetched from its REST API), but no control-plane logic: no store, registry, debounce, snapshot, renderer,
push scoping or per-stream protocol state.  Each stream gets, once per type it asks for, one response
holding every resource of that type; ACKs are read and dropped.  A change is one pre-built EDS response (the
watched cluster with a new address) written to every open stream at once.  What Mizzen costs above this is
what its own logic costs; the floor itself is what Python gRPC costs on this machine at this moment.

    python -m mizzen.bench.xds_floor PORT delta|sotw RESOURCES.json
    stdin:  {"cmd": "change", "address": "127.1.0.1"}  ->  stdout {"event": "sent", "t": <monotonic>}
            {"cmd": "route", "marker": "mzbench-100"}  ->  the same (every route config, its marker replaced)
            {"cmd": "stop"}
"""
from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from typing import Any

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
ROUTE_MARKER_HEADER = "x-mizzen-bench"  # xds_extra.route_yaml


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Floor:
    def __init__(self, delta: bool, resources: dict[str, list[dict[str, Any]]]) -> None:
        import mizzen.server.ads  # noqa: F401  (registers every Envoy type the JSON may name)
        import mizzen.translate.renderer  # noqa: F401 - registers every extension's descriptor (the package is lazy)
        from envoy.config.cluster.v3 import cluster_pb2
        from envoy.config.endpoint.v3 import endpoint_pb2
        from envoy.config.listener.v3 import listener_pb2
        from envoy.config.route.v3 import route_pb2
        from envoy.service.discovery.v3 import discovery_pb2
        from google.protobuf import json_format

        self.pb, self.delta = discovery_pb2, delta
        self.msg = {CDS: cluster_pb2.Cluster, EDS: endpoint_pb2.ClusterLoadAssignment, LDS: listener_pb2.Listener,
                    RDS: route_pb2.RouteConfiguration}
        self.items: dict[str, list[tuple[str, Any]]] = {}
        for t, lst in resources.items():
            self.items[t] = [(r["name"], json_format.ParseDict(r["resource"], self.msg[t]())) for r in lst]
        self.nonces = itertools.count(1)
        self.initial = {t: self._response(t, v) for t, v in self.items.items()}
        self.queues: set[asyncio.Queue] = set()

    def _response(self, t: str, items: list[tuple[str, Any]]) -> bytes:
        nonce = f"f{next(self.nonces)}"
        if self.delta:
            r = self.pb.DeltaDiscoveryResponse(type_url=t, nonce=nonce, system_version_info=nonce)
            for name, m in items:
                res = r.resources.add(name=name, version=nonce)
                res.resource.Pack(m)
        else:
            r = self.pb.DiscoveryResponse(type_url=t, nonce=nonce, version_info=nonce)
            for _, m in items:
                r.resources.add().Pack(m)
        return r.SerializeToString()

    def change(self, watch_suffix: str, address: str) -> bytes:
        eds = []
        for name, m in self.items.get(EDS, []):
            if name.endswith(watch_suffix):
                m = type(m).FromString(m.SerializeToString())
                m.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address = address
                self.items[EDS] = [(n, m if n == name else x) for n, x in self.items[EDS]]
                eds = [(name, m)]
                break
        return self._response(EDS, eds if self.delta else self.items.get(EDS, []))

    def route(self, watch_host: str, marker: str) -> bytes:
        """A change of one service's routes (xds_extra.route_yaml): the watched host's first route sets the marker
        header; every route config is sent again whole, as an xDS server without VHDS must."""
        from envoy.config.core.v3 import base_pb2

        items = []
        for name, m in self.items.get(RDS, []):
            m = type(m).FromString(m.SerializeToString())
            for vh in m.virtual_hosts:
                if vh.name.startswith(watch_host + ":") and vh.routes:
                    hdrs = vh.routes[0].request_headers_to_add
                    found = [h for h in hdrs if h.header.key == ROUTE_MARKER_HEADER]
                    if found:
                        found[0].header.value = marker
                    else:
                        hdrs.add(header=base_pb2.HeaderValue(key=ROUTE_MARKER_HEADER, value=marker),
                                 append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)
            items.append((name, m))
        self.items[RDS] = items
        return self._response(RDS, items)

    async def handler(self, requests, context):
        q: asyncio.Queue = asyncio.Queue()
        self.queues.add(q)
        served: set[str] = set()

        async def read() -> None:
            try:
                async for req in requests:
                    if req.type_url not in served:
                        served.add(req.type_url)
                        q.put_nowait(self.initial.get(req.type_url) or self._response(req.type_url, []))
            finally:
                q.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (b := await q.get()) is not None:
                yield b
        finally:
            reader.cancel()
            self.queues.discard(q)

    async def main(self, port: int, watch_suffix: str) -> None:
        import grpc

        server = grpc.aio.server(options=[("grpc.max_send_message_length", -1),
                                          ("grpc.server.max_pending_requests", 100_000)])
        req = self.pb.DeltaDiscoveryRequest if self.delta else self.pb.DiscoveryRequest
        method = "DeltaAggregatedResources" if self.delta else "StreamAggregatedResources"
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
            method: grpc.stream_stream_rpc_method_handler(self.handler, request_deserializer=req.FromString,
                                                          response_serializer=lambda b: b)}),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        _emit({"event": "ready"})
        try:
            while line := await reader.readline():
                cmd = json.loads(line)
                if cmd["cmd"] == "change":
                    b = self.change(watch_suffix, cmd["address"])
                    for q in self.queues:
                        q.put_nowait(b)
                    _emit({"event": "sent", "t": time.monotonic(), "streams": len(self.queues)})
                elif cmd["cmd"] == "route":
                    b = self.route(watch_suffix.lstrip("|"), cmd["marker"])
                    for q in self.queues:
                        q.put_nowait(b)
                    _emit({"event": "sent", "t": time.monotonic(), "streams": len(self.queues)})
                elif cmd["cmd"] == "stop":
                    break
        finally:
            await server.stop(0)


if __name__ == "__main__":  # python -m mizzen.bench.xds_floor PORT delta|sotw RESOURCES.json WATCH_SUFFIX
    port, mode, path, suffix = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    with open(path) as f:
        floor = Floor(mode == "delta", json.load(f))
    asyncio.run(floor.main(port, suffix))
