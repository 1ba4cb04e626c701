"""The embedded trace receiver: OTLP/gRPC (`opentelemetry.proto.collector.trace.v1.TraceService/Export`) and
Zipkin v2 JSON (`POST /api/v2/spans`) into one bounded `TraceStore`, plus a JSON read API.

Mounted by the control plane (or a `mizzen telemetry` process) in phase 2; runnable on its own:
    python -m mizzen.telemetry.otlp_server [--unix PATH] [--grpc HOST:PORT] [--http HOST:PORT]
prints "ready" when it listens and serves until SIGTERM.

HTTP (the `--http` port, or `routes()` mounted elsewhere):
    POST /api/v2/spans                   Zipkin v2 JSON list (what Envoy's Zipkin tracer sends)
    GET  /api/v1/traces?limit=&service=&errors=1&minMs=    recent trace summaries, newest first
    GET  /api/v1/traces/{id}             {"summary", "spans": waterfall rows}; 404 when unknown
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal

import grpc
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from ..unixpath import serve_app
from .traces import TraceStore, spans_from_otlp, spans_from_zipkin

log = logging.getLogger("mizzen.telemetry.traces")
MAX_ZIPKIN_BODY = 4 * 1024 * 1024


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, store: TraceStore) -> None:
        self.store = store

    async def Export(self, request, context):  # noqa: N802 (gRPC method name)
        self.store.add(spans_from_otlp(request))
        return trace_service_pb2.ExportTraceServiceResponse()


class TraceReceiver:
    def __init__(self, store: TraceStore | None = None) -> None:
        # `is None`, not `or`: an empty TraceStore is falsy (it has a length), and the store passed in is shared
        # (the control plane's console reads the one its receiver fills)
        self.store = store if store is not None else TraceStore()
        self._server: grpc.aio.Server | None = None
        self.grpc_port: int | None = None

    async def start_grpc(self, unix_path: str | None = None, address: str | None = None) -> None:
        self._server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self.store), self._server)
        if unix_path:
            try:
                os.unlink(unix_path)
            except FileNotFoundError:
                pass
            self._server.add_insecure_port("unix:" + unix_path)
        if address:
            self.grpc_port = self._server.add_insecure_port(address)
        await self._server.start()
        if unix_path:
            os.chmod(unix_path, 0o666)  # sidecar Envoys run as uid 1337

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0.5)
            self._server = None

    # ------------------------------------------------------------------ HTTP
    async def _zipkin(self, request: web.Request) -> web.Response:
        if request.content_length and request.content_length > MAX_ZIPKIN_BODY:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_ZIPKIN_BODY, actual_size=request.content_length)
        try:
            items = json.loads(await request.read())
            if not isinstance(items, list):
                raise ValueError("expected a JSON list of spans")
            self.store.add(spans_from_zipkin(items))
        except ValueError as e:
            return web.json_response({"message": f"bad Zipkin v2 JSON: {e}"}, status=400)
        return web.Response(status=202)

    async def _list(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            limit = max(1, min(int(q.get("limit", "50")), 1000))
            min_ms = float(q.get("minMs", "0"))
        except ValueError:
            return web.json_response({"message": "limit and minMs must be numbers"}, status=400)
        return web.json_response({"items": self.store.recent(limit, q.get("service", ""), q.get("errors") == "1",
                                                              min_ms)})

    async def _one(self, request: web.Request) -> web.Response:
        t = self.store.get(request.match_info["trace_id"])
        if t is None:
            return web.json_response({"message": f"trace {request.match_info['trace_id']} not found "
                                                 "(unknown, or evicted from the bounded store)"}, status=404)
        return web.json_response({"summary": t.summary(), "spans": self.store.waterfall(t.trace_id)})

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/v2/spans", self._zipkin), web.get("/api/v1/traces", self._list),
                web.get("/api/v1/traces/{trace_id}", self._one)]


async def _main(a: argparse.Namespace) -> None:
    rx = TraceReceiver(TraceStore(a.max_traces))
    await rx.start_grpc(a.unix, a.grpc)
    runner = None
    if a.http:
        app = web.Application(client_max_size=MAX_ZIPKIN_BODY)
        app.add_routes(rx.routes())
        host, port = a.http.rsplit(":", 1)
        runner = await serve_app(app, tcp=(host, int(port)))
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    await stop.wait()
    await rx.stop()
    if runner is not None:
        await runner.cleanup()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--unix")
    ap.add_argument("--grpc")
    ap.add_argument("--http")
    ap.add_argument("--max-traces", type=int, default=2000)
    asyncio.run(_main(ap.parse_args()))
