"""The ADS gRPC server (grpc.aio): a thin adapter between sockets and `xds.stream`.

    ads = AdsServer(source)                       # source: ready(), resources_for(proxy), generation
    await ads.start(["unix:/state/xds.sock", "127.0.0.1:15010"])
    ads.notify(lambda proxy: ...)                 # after each new snapshot (None = every proxy)
    ads.statuses(); ads.sent_resources(proxy_id, "CDS")
    await ads.stop(1.0)

Serves `envoy.service.discovery.v3.AggregatedDiscoveryService` StreamAggregatedResources (SotW) and
DeltaAggregatedResources (Delta) with generic handlers: requests are parsed by protobuf, responses are bytes
built by `xds.wire` (marshal once) and written with an identity serializer.

Per connection one task owns the `Stream`: requests (read by a helper task) and push wake-ups go through one
asyncio queue, so the sans-I/O state machine is never entered concurrently.  No request is answered before
`source.ready()`: the handler waits (polling), it does not fail.

Debouncing is the caller's (the control plane runs `xds.PushQueue`): `notify` pushes at once. Repeated
notifies for one proxy before its push runs collapse into one push.

A push to many proxies is re-targeted in slices of at most `slice_seconds` of event-loop time: between
slices the loop writes what the previous slice produced, so the first proxy hears of a change after one
slice, not after all of them.  Proxies with the same view share their responses (`xds.shared`): one
serialization and one nonce for all of them, the same bytes handed to every stream.

With `manage_gc`, automatic full garbage collections are moved out of pushes (`ads_heap.IdleCollector`).
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
import time
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Callable, Protocol

import grpc
from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401  (registers types for json dumps)
from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: F401
from envoy.config.listener.v3 import listener_pb2  # noqa: F401
from envoy.config.route.v3 import route_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import descriptor_pool, json_format, message_factory

from ..model.types import SHORT_TYPE, Proxy, ProxyResources, Rendered
from ..xds import shared
from ..xds.stream import Response, new_stream
from .ads_heap import IdleCollector

log = logging.getLogger("mizzen.xds")

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
SOTW_METHOD = f"/{SERVICE}/StreamAggregatedResources"
DELTA_METHOD = f"/{SERVICE}/DeltaAggregatedResources"
_TYPE_BY_SHORT = {v: k for k, v in SHORT_TYPE.items()}
_END = object()


class Source(Protocol):
    generation: int

    def ready(self) -> bool: ...

    def resources_for(self, proxy: Proxy) -> ProxyResources: ...


def _identity(b: bytes) -> bytes:
    return b


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class _Conn:
    """One ADS stream of one proxy."""

    def __init__(self, proxy: Proxy, mode: str, stream: Any, queue: asyncio.Queue, peer: str) -> None:
        self.proxy = proxy
        self.mode = mode
        self.stream = stream
        self.queue = queue
        self.peer = peer
        self.connected = True
        self.connected_since = time.time()
        self.disconnected_at: float | None = None
        self.disconnected_mono: float | None = None
        self.push_pending = False
        self.generation = 0
        self.pushes = 0
        # push latency (change -> ACK): the change behind the next re-target, the one being pushed now, and per
        # type the change behind the response in flight
        self.next_change: float | None = None
        self.current_change: float | None = None
        self.sent_change: dict[str, float | None] = {}

    def wake(self, loop: asyncio.AbstractEventLoop, retarget: Callable[["_Conn"], list[Response]],
             changed_at: float | None = None) -> None:
        """Schedule one re-target (repeated wakes before it runs collapse into one)."""
        if changed_at is not None and (self.next_change is None or changed_at < self.next_change):
            self.next_change = changed_at
        if self.connected and not self.push_pending:
            self.push_pending = True
            loop.call_soon(self._push, retarget)

    def _push(self, retarget: Callable[["_Conn"], list[Response]]) -> None:
        self.push_pending = False
        if not self.connected:
            return
        try:
            out = retarget(self)
        except Exception as e:  # a bug: end this stream rather than leave the proxy silently stale
            log.exception("push to %s failed", self.proxy.id)
            self.queue.put_nowait(e)
            return
        if out:
            self.queue.put_nowait(out)


class Metrics(Protocol):
    """What the ADS server reports (telemetry.cpmetrics.ControlPlaneMetrics implements it)."""

    def stream_opened(self, kind: str, protocol: str) -> None: ...
    def stream_closed(self, kind: str, protocol: str) -> None: ...
    def pushed(self, xds_type: str, nbytes: int) -> None: ...
    def acked(self, xds_type: str, since_change_seconds: float | None) -> None: ...
    def nacked(self, xds_type: str) -> None: ...


class AdsServer:
    def __init__(self, source: Source, *, forget_after: float = 600.0,
                 on_send: Callable[[str, Response], None] | None = None, ready_poll: float = 0.05,
                 metrics: Metrics | None = None, slice_seconds: float = 0.005, manage_gc: bool = False) -> None:
        self.source = source
        self.metrics = metrics
        self.slice_seconds = slice_seconds
        self.manage_gc = manage_gc
        self.last_activity = 0.0  # time.monotonic() of the last push or request (for idle-time GC)
        # conn -> [(predicate, changed_at)] of the notifies since it was queued (predicate None: push regardless),
        # oldest conn first
        self._todo: collections.OrderedDict = collections.OrderedDict()
        self._draining = False
        self._gc: IdleCollector | None = None
        self.forget_after = forget_after
        self.on_send = on_send  # observer (tests, debug): called with (proxy id, Response) before each write
        self.ready_poll = ready_poll
        self._conns: dict[str, _Conn] = {}
        self._queues: set[asyncio.Queue] = set()  # every open stream's writer queue (registered or not yet)
        self._server: grpc.aio.Server | None = None
        self._unix_paths: list[str] = []
        self.addresses: list[str] = []  # bound addresses (TCP port 0 resolved)
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self, addresses: list[str]) -> list[str]:
        server = grpc.aio.server(options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.max_send_message_length", -1),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            # A restarted control plane gets every proxy back at once. Calls the Python side has not picked
            # up yet are "pending"; past 1000 grpc core starts shedding them at random (the proxy sees
            # CANCELLED and backs off). Queue them instead: each costs little until served.
            ("grpc.server.max_pending_requests", 100_000),
            ("grpc.server.max_pending_requests_hard_limit", 200_000),
        ])
        handlers = {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._sotw, request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=_identity),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._delta, request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=_identity),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        bound: list[str] = []
        for addr in addresses:
            if addr.startswith("unix:"):
                path = addr[len("unix:"):]
                if os.path.exists(path):
                    os.unlink(path)  # stale socket of a previous run
                server.add_insecure_port(addr)
                self._unix_paths.append(path)
                bound.append(addr)
            else:
                port = server.add_insecure_port(addr)
                if port == 0:
                    raise OSError(f"cannot bind xDS address {addr}")
                bound.append(f"{addr.rsplit(':', 1)[0]}:{port}")
        await server.start()
        self._loop = asyncio.get_running_loop()
        if self.manage_gc:
            self._gc = IdleCollector(lambda: self.last_activity).start()
        for path in self._unix_paths:
            os.chmod(path, 0o666)  # Envoy runs as uid 1337
        self._server = server
        self.addresses = bound
        log.info("xDS (ADS sotw+delta) listening on %s", ", ".join(bound))
        return bound

    async def stop(self, grace: float | None = 1.0) -> None:
        if self._gc is not None:
            self._gc.stop()
            self._gc = None
        self._todo.clear()
        if self._server is not None:
            # End every stream ourselves (each proxy sees its stream close and reconnects, to another replica or to
            # this one restarted): xDS streams never end on their own, so grpc's grace would always run out in full
            # before the process can exit -- with 2000 streams, seconds of a restart spent waiting on nothing.
            for q in self._queues:
                q.put_nowait(_END)
            await self._server.stop(grace)
            self._server = None
        for c in self._conns.values():
            if c.connected:
                c.connected = False
                c.disconnected_at, c.disconnected_mono = time.time(), time.monotonic()
        for path in self._unix_paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self._unix_paths = []

    # -- pushes ----------------------------------------------------------------------------------------
    def notify(self, affected: Callable[[Proxy], bool] | None = None, changed_at: float | None = None) -> None:
        """A new snapshot exists: re-target the proxies for which `affected(proxy)` is true (None = all).
        `changed_at` (time.monotonic()) is when the change behind it happened: push latency is measured from
        there to each proxy's ACK.

        Safe to call from another thread (it hops to the server's loop)."""
        if self._loop is None:
            return  # not started: nobody is connected
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self._loop:
            self._loop.call_soon_threadsafe(self.notify, affected, changed_at)
            return
        self._push(affected, changed_at)

    def _push(self, affected: Callable[[Proxy], bool] | None, changed_at: float | None = None) -> None:
        """Queue every connected proxy for a re-target (the predicates are asked when its turn comes; notifies
        before that collapse into one re-target)."""
        self.last_activity = time.monotonic()
        shared.advance()  # a new snapshot: what only older ones used can go (bounded memory in a long run)
        todo = self._todo
        for c in self._conns.values():
            if c.connected:
                todo.setdefault(c, []).append((affected, changed_at))
        log.debug("push: %d proxies to check (generation %s)", len(todo), getattr(self.source, "generation", "?"))
        if not self._draining and todo and self._loop is not None:
            self._draining = True
            self._loop.call_soon(self._drain)

    @staticmethod
    def _wanted(c: "_Conn", preds: list) -> tuple[bool, float | None]:
        """Is the proxy affected by any queued notify, and the earliest change behind those that affect it."""
        hit, first = False, None
        for p, changed_at in preds:
            try:
                ok = p is None or p(c.proxy)
            except Exception:  # a bug in push scoping: push (a needless push is harmless, a missed one is not)
                log.exception("deciding whether to push %s failed; pushing it", c.proxy.id)
                ok = True
            if ok:
                hit = True
                if changed_at is not None and (first is None or changed_at < first):
                    first = changed_at
        return hit, first

    def _drain(self) -> None:
        """Re-target queued proxies for at most `slice_seconds`, then let the loop write what they produced
        (their writers were woken) before the next slice."""
        end = time.perf_counter() + self.slice_seconds
        todo = self._todo
        while todo:
            c, preds = todo.popitem(last=False)
            if c.connected:
                hit, changed_at = self._wanted(c, preds)
                if hit:
                    if changed_at is not None and (c.next_change is None or changed_at < c.next_change):
                        c.next_change = changed_at
                    c._push(self._retarget)
            if time.perf_counter() >= end:
                break
        self.last_activity = time.monotonic()
        if todo and self._loop is not None:
            self._loop.call_soon(self._drain)
        else:
            self._draining = False

    # -- gRPC handlers ---------------------------------------------------------------------------------
    async def _sotw(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for b in self._serve("sotw", requests, context):
            yield b

    async def _delta(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for b in self._serve("delta", requests, context):
            yield b

    async def _read(self, mode: str, stream: Any, requests: AsyncIterator[Any], queue: asyncio.Queue, peer: str,
                    box: list) -> None:
        """Feeds requests to the state machine; queues what it answers (ACKs usually need no answer, so the
        writer is not woken).  The Stream is only ever called synchronously, so the reader, the push callback
        and the writer never interleave inside it, and output order is the order it was produced."""
        conn: _Conn | None = None
        try:
            async for req in requests:
                self.last_activity = time.monotonic()
                if conn is None:
                    while not self.source.ready():  # never answer before the store is loaded
                        await asyncio.sleep(self.ready_poll)
                try:
                    if conn is None:
                        conn = self._register(stream, req, mode, queue, peer)
                        box.append(conn)
                        out = stream.on_request(req, time.monotonic())
                        out += self._retarget(conn)
                    else:
                        out = self._observed(conn, req)
                except Exception as e:  # a bug (ours or the source's): say so loudly, end the stream
                    log.exception("xDS processing failed for %s", conn.proxy.id if conn else peer)
                    queue.put_nowait(e)
                    return
                if req.HasField("error_detail"):
                    log.warning("%s NACK %s: %s", conn.proxy.id, SHORT_TYPE.get(req.type_url, req.type_url),
                                req.error_detail.message)
                if out:
                    queue.put_nowait(out)
            queue.put_nowait(_END)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # stream reset by the client, or a bug: end this stream, the proxy reconnects
            queue.put_nowait(e)

    async def _serve(self, mode: str, requests: AsyncIterator[Any],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        queue: asyncio.Queue = asyncio.Queue()
        box: list[_Conn] = []
        peer = context.peer() or ""
        reader = asyncio.create_task(self._read(mode, new_stream(mode), requests, queue, peer, box))
        self._queues.add(queue)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    log.info("ADS stream of %s ended: %r", box[0].proxy.id if box else peer, item)
                    return
                pid = box[0].proxy.id
                for r in item:
                    if self.on_send is not None:
                        self.on_send(pid, r)
                    if log.isEnabledFor(logging.DEBUG):
                        log.debug("-> %s %s", pid, r)
                    yield r.data
        finally:
            self._queues.discard(queue)
            reader.cancel()
            if box:
                conn = box[0]
                conn.connected = False
                conn.disconnected_at, conn.disconnected_mono = time.time(), time.monotonic()
                log.info("proxy %s disconnected (%s)", conn.proxy.id, mode)
                if self.metrics is not None:
                    self.metrics.stream_closed(conn.proxy.kind, mode)

    def _retarget(self, conn: _Conn) -> list[Response]:
        conn.generation = getattr(self.source, "generation", 0)
        conn.pushes += 1
        conn.current_change, conn.next_change = conn.next_change, None
        return self._sent(conn, conn.stream.set_target(self.source.resources_for(conn.proxy), time.monotonic()))

    def _sent(self, conn: _Conn, out: list[Response]) -> list[Response]:
        """Record what a push produced (metrics: pushes and bytes per type; the change each response carries)."""
        if self.metrics is not None:
            for r in out:
                conn.sent_change[r.type_url] = conn.current_change
                self.metrics.pushed(r.short, len(r.data))
        return out

    def _observed(self, conn: _Conn, req: Any) -> list[Response]:
        """`stream.on_request` for a connected proxy, reporting its ACK (with the time since the change that
        caused the push) or NACK per type."""
        st = conn.stream.types.get(req.type_url)
        acked_at, nacks = (st.acked_at, st.nacks) if st is not None else (None, 0)
        now = time.monotonic()
        out = conn.stream.on_request(req, now)
        if self.metrics is not None and st is not None:
            short = SHORT_TYPE.get(req.type_url, req.type_url)
            if st.acked_at != acked_at:
                since = conn.sent_change.pop(req.type_url, None)
                self.metrics.acked(short, None if since is None else now - since)
            elif st.nacks != nacks:
                conn.sent_change.pop(req.type_url, None)
                self.metrics.nacked(short)
        if conn.stream.phase_name == "DONE" and all(t.inflight is None for t in conn.stream.types.values()):
            conn.current_change = None
        return self._sent(conn, out)

    def _register(self, stream: Any, req: Any, mode: str, queue: asyncio.Queue, peer: str) -> _Conn:
        node = req.node if req.HasField("node") else None
        if node is not None and node.id:
            proxy = Proxy.from_node(node.id, json_format.MessageToDict(node.metadata))
        else:
            proxy = Proxy.from_node(f"unknown~{peer}", {})
        old = self._conns.get(proxy.id)
        if old is not None and old.connected and proxy.kind == "proxyless":
            # grpcio clients may share one bootstrap file (one node id): each stream is a client of its own
            n = 2
            while (c := self._conns.get(f"{proxy.id}#{n}")) is not None and c.connected:
                n += 1
            proxy = dataclasses.replace(proxy, id=f"{proxy.id}#{n}")
            old = None
        if old is not None and old.connected:
            log.info("proxy %s opened a new stream; the previous one is replaced", proxy.id)
            old.connected = False
        conn = _Conn(proxy, mode, stream, queue, peer)
        self._conns[proxy.id] = conn
        log.info("proxy %s connected (%s, %s)", proxy.id, mode, peer)
        if self.metrics is not None:
            self.metrics.stream_opened(proxy.kind, mode)
        return conn

    # -- introspection -----------------------------------------------------------------------------------
    def _prune(self) -> None:
        now = time.monotonic()
        for pid in [pid for pid, c in self._conns.items()
                    if not c.connected and c.disconnected_mono is not None
                    and now - c.disconnected_mono > self.forget_after]:
            del self._conns[pid]

    def statuses(self) -> list[dict[str, Any]]:
        """For /api/v1/proxies: one dict per known proxy (disconnected ones are kept for `forget_after`)."""
        self._prune()
        out = []
        for pid in sorted(self._conns):
            c = self._conns[pid]
            out.append({
                "id": pid, "namespace": c.proxy.namespace, "workload": c.proxy.workload,
                "connected": c.connected, "connectedSince": _iso(c.connected_since),
                "disconnectedAt": _iso(c.disconnected_at), "protocol": c.mode, "peer": c.peer,
                "generation": c.generation, "phase": c.stream.phase_name, "types": c.stream.status(),
                "pushPending": c.push_pending or c in self._todo,  # a re-target queued: its states may be old
            })
        return out

    def sent_resources(self, proxy_id: str, short_type: str) -> dict[str, Any] | None:
        """What was last sent to a proxy for one type, as JSON (None: unknown proxy or type)."""
        c = self._conns.get(proxy_id)
        type_url = _TYPE_BY_SHORT.get(short_type.upper(), short_type)
        if c is None or "/" not in type_url:
            return None
        st = c.stream.status().get(SHORT_TYPE.get(type_url, ""), {})
        return {
            "id": proxy_id, "type": SHORT_TYPE.get(type_url, type_url), "typeUrl": type_url,
            "version": st.get("sentVersion", ""), "ackedVersion": st.get("ackedVersion", ""),
            "resources": [_to_json(r) for _, r in sorted(c.stream.sent(type_url).items())],
        }

    def connected_count(self) -> int:
        return sum(1 for c in self._conns.values() if c.connected)


def _to_json(r: Rendered) -> dict[str, Any]:
    msg = r.message
    if msg is None and r.payload:
        try:
            desc = descriptor_pool.Default().FindMessageTypeByName(r.type_url.rsplit("/", 1)[-1])
            msg = message_factory.GetMessageClass(desc).FromString(r.payload)
        except Exception as e:  # unknown type: show what we know
            return {"name": r.name, "version": r.version, "error": f"cannot decode: {e}"}
    if msg is None:  # Delta: a version the proxy reported at connect, never sent on this stream
        return {"name": r.name, "version": r.version, "reportedByProxy": True}
    try:
        body = json_format.MessageToDict(msg)
    except Exception as e:  # e.g. an Any of a type not linked in
        body = {"error": f"cannot render as JSON: {e}"}
    return {"name": r.name, "version": r.version, "resource": body}
