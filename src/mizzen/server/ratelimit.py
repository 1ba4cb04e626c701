"""`mizzen ratelimit`: the global rate-limit service — grpc.aio `envoy.service.ratelimit.v3.RateLimitService`.

Thin: the request's descriptors go through `ratelimit.engine.plan`, the backend (in-memory counters or Redis)
decides, `engine.respond` builds the answer (see engine.py for headers, table.py for the descriptor scheme).
Limits come from a file or the control plane (server/ratelimit_source.py) and are swapped atomically; the
gRPC port opens only once the first table is loaded. An admin HTTP endpoint serves `/healthz`, `/stats`
(JSON), `/stats/prometheus` and `/limits`.

Delay modes (docs/ratelimit.md): `header` (default) answers OK at once with `x-envoy-fault-delay-request`
for the fault filter placed after the rate-limit filter; `hold` keeps the answer back for the delay instead
(the filter's timeout must then exceed maxDelay).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import grpc
from aiohttp import web
from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf import duration_pb2

from ..ratelimit import engine, wire
from ..ratelimit.algorithms import Decision
from ..ratelimit.engine import Answer, BackendUnavailable, Check
from ..ratelimit.memory import MemoryCounters
from ..ratelimit.stats import Stats
from ..ratelimit.table import CompiledLimit, LimitTable, limits_body
from ..unixpath import UNIX_PATH_MAX

log = logging.getLogger("mizzen.ratelimit")
PLAN_CACHE = 50000  # distinct request byte strings remembered (decoded and planned) per table

_UNITS = ((1.0, rls_pb2.RateLimitResponse.RateLimit.SECOND), (60.0, rls_pb2.RateLimitResponse.RateLimit.MINUTE),
          (3600.0, rls_pb2.RateLimitResponse.RateLimit.HOUR), (86400.0, rls_pb2.RateLimitResponse.RateLimit.DAY))


class Backend(Protocol):
    async def run(self, checks: Sequence[Check]) -> list[Decision | None]: ...


class MemoryBackend:
    """The in-memory counters on this process's clock (one instance only)."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.counters = MemoryCounters()
        self.clock = clock

    def describe(self) -> str:
        return "memory"

    async def run(self, checks: Sequence[Check]) -> list[Decision | None]:
        return self.counters.run(checks, self.clock())

    async def close(self) -> None:
        pass


def current_limit(lim: CompiledLimit) -> rls_pb2.RateLimitResponse.RateLimit:
    """The limit as Envoy's (requests_per_unit, unit): the user's unit, else the smallest whole one."""
    per_s = lim.quota / lim.rate.period
    for secs, unit in _UNITS:
        if abs(lim.rate.period - secs) < 1e-9:
            return rls_pb2.RateLimitResponse.RateLimit(name=lim.id, requests_per_unit=lim.quota, unit=unit)
    for secs, unit in _UNITS:
        n = per_s * secs
        if n >= 1 and abs(n - round(n)) < 1e-6:
            return rls_pb2.RateLimitResponse.RateLimit(name=lim.id, requests_per_unit=int(round(n)), unit=unit)
    return rls_pb2.RateLimitResponse.RateLimit(name=lim.id, requests_per_unit=max(1, int(per_s * 86400)),
                                               unit=rls_pb2.RateLimitResponse.RateLimit.DAY)


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    if seconds != float("inf"):
        d.FromNanoseconds(int(max(0.0, seconds) * 1e9))
    else:
        d.FromSeconds(86400)
    return d


def to_proto(answer: Answer) -> rls_pb2.RateLimitResponse:
    R = rls_pb2.RateLimitResponse
    out = R(overall_code=R.OK if answer.ok else R.OVER_LIMIT)
    for s in answer.statuses:
        st = R.DescriptorStatus(code=R.OVER_LIMIT if s.over else R.OK)
        if s.limit is not None and s.decision is not None and not s.limit.shadow:
            st.current_limit.CopyFrom(current_limit(s.limit))
            st.limit_remaining = max(0, s.decision.remaining)
            st.duration_until_reset.CopyFrom(_duration(s.decision.reset_after))
        out.statuses.append(st)
    for k, v in answer.response_headers:
        out.response_headers_to_add.append(base_pb2.HeaderValue(key=k, value=v))
    for k, v in answer.request_headers:
        out.request_headers_to_add.append(base_pb2.HeaderValue(key=k, value=v))
    if not answer.ok and answer.body:
        out.raw_body = answer.body.encode()
    return out


@dataclass
class RateLimitService:
    """Transport-independent: `should_rate_limit(request) -> response`."""

    backend: Any
    table: LimitTable = field(default_factory=LimitTable)
    delay_mode: str = "header"
    stats: Stats = field(default_factory=Stats)
    _plans: dict = field(default_factory=dict, repr=False)
    _plans_of: Any = field(default=None, repr=False)
    _lock: Any = field(default_factory=threading.Lock, repr=False)

    def set_table(self, table: LimitTable) -> None:
        if table.version != self.table.version:
            log.info("serving %d global limit(s) (version %s): %s", len(table), table.version,
                     ", ".join(table.limits) or "none")
        self.table = table

    async def should_rate_limit(self, req: rls_pb2.RateLimitRequest) -> rls_pb2.RateLimitResponse:
        return to_proto(await self.answer(req.domain, _descriptors(req), req.hits_addend))

    def _checks(self, request: bytes) -> list[Check]:
        """Decode and plan, memoized per request bytes and table: Envoy sends the same bytes for the same
        descriptors (same limit and key values), so most requests are a dict lookup here."""
        table = self.table
        if self._plans_of is not table:
            self._plans, self._plans_of = {}, table
        hit = self._plans.get(request)
        if hit is None:  # parsed by protobuf's C runtime (upb): faster than any Python-level decoder
            req = rls_pb2.RateLimitRequest.FromString(request)
            hit = engine.plan(table, req.domain, _descriptors(req), req.hits_addend)
            if len(self._plans) >= PLAN_CACHE:
                self._plans.clear()
            self._plans[request] = hit
        return hit

    async def should_rate_limit_bytes(self, request: bytes) -> bytes:
        """The same on the wire: a serialized RateLimitRequest in, a RateLimitResponse out (ratelimit/wire.py)."""
        return wire.encode_response(await self._answer(self._checks(request)))

    def should_rate_limit_sync(self, request: bytes) -> bytes:
        """For a thread-pool server, in-memory counters only (the benchmark's `sync` variant)."""
        checks = self._checks(request)
        with self._lock:  # the counters' read-modify-write must not interleave between threads
            decisions = self.backend.counters.run(checks, self.backend.clock()) \
                if any(c.limit is not None for c in checks) else [None] * len(checks)
            answer = engine.respond(checks, decisions)
            self.stats.record(checks, answer)
        return wire.encode_response(answer)

    async def answer(self, domain: str, descs: list, hits_addend: int) -> Answer:
        return await self._answer(engine.plan(self.table, domain, descs, hits_addend))

    async def _answer(self, checks: list[Check]) -> Answer:
        if not any(c.limit is not None for c in checks):
            answer = engine.respond(checks, [None] * len(checks))
            self.stats.record(checks, answer)
            return answer
        try:
            decisions = await self.backend.run(checks)
        except Exception as e:  # BackendUnavailable, or anything unexpected: never leave Envoy without an answer
            if not isinstance(e, BackendUnavailable):
                log.exception("rate-limit backend failed")
            self.stats.service["backend_errors"] += 1
            answer = engine.fail(checks)
            self.stats.record(checks, answer, failed=True)
            return answer
        answer = engine.respond(checks, decisions)
        self.stats.record(checks, answer)
        if answer.delay > 0 and self.delay_mode == "hold":
            await asyncio.sleep(answer.delay)
            answer.request_headers = [h for h in answer.request_headers if h[0] != engine.DELAY_HEADER]
        return answer


def _descriptors(req: rls_pb2.RateLimitRequest) -> list:
    return [([(e.key, e.value) for e in d.entries], d.hits_addend.value if d.HasField("hits_addend") else None)
            for d in req.descriptors]


class _Servicer(rls_pb2_grpc.RateLimitServiceServicer):
    def __init__(self, service: RateLimitService):
        self.service = service

    async def ShouldRateLimit(self, request: rls_pb2.RateLimitRequest,
                              context: grpc.aio.ServicerContext) -> rls_pb2.RateLimitResponse:
        return await self.service.should_rate_limit(request)


METHOD = "ShouldRateLimit"
SERVICE = "envoy.service.ratelimit.v3.RateLimitService"


def _raw_handler(service: RateLimitService) -> grpc.GenericRpcHandler:
    """ShouldRateLimit on raw bytes: no generated message classes on the hot path (ratelimit/wire.py)."""
    async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await service.should_rate_limit_bytes(request)

    return grpc.method_handlers_generic_handler(SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(call)})


async def start_grpc(service: RateLimitService, *, unix_path: str | None = None,
                     tcp: tuple[str, int] | None = None, codec: str = "wire") -> grpc.aio.Server:
    """codec `wire`: the hand-written codec on a generic handler (default); `protobuf`: the generated servicer."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0), ("grpc.max_concurrent_streams", 10000)])
    if codec == "wire":
        server.add_generic_rpc_handlers((_raw_handler(service),))
    else:
        rls_pb2_grpc.add_RateLimitServiceServicer_to_server(_Servicer(service), server)
    if unix_path:
        if len(os.fsencode(unix_path)) > UNIX_PATH_MAX:
            raise RuntimeError(f"unix socket path too long for gRPC ({len(unix_path)} > {UNIX_PATH_MAX} bytes): "
                               f"{unix_path}; "
                               "give a shorter --socket")
        os.makedirs(os.path.dirname(unix_path) or ".", exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(unix_path)
        server.add_insecure_port(f"unix:{unix_path}")
    if tcp:
        server.add_insecure_port(f"{tcp[0]}:{tcp[1]}")
    await server.start()
    if unix_path:
        os.chmod(unix_path, 0o666)  # sidecars run Envoy as uid 1337
    return server


def start_sync_grpc(service: RateLimitService, threads: int, *, unix_path: str | None = None,
                    tcp: tuple[str, int] | None = None) -> grpc.Server:
    """The synchronous gRPC server with a thread pool (the benchmark compares it with grpc.aio)."""
    from concurrent.futures import ThreadPoolExecutor

    if not isinstance(service.backend, MemoryBackend):
        raise RuntimeError("--server sync works with the in-memory backend only")
    server = grpc.server(ThreadPoolExecutor(max_workers=threads),
                         options=[("grpc.so_reuseport", 0), ("grpc.max_concurrent_streams", 10000)])
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: service.should_rate_limit_sync(request))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),))
    if unix_path:
        server.add_insecure_port(f"unix:{unix_path}")
    if tcp:
        server.add_insecure_port(f"{tcp[0]}:{tcp[1]}")
    server.start()
    return server


def admin_app(service: RateLimitService, ready: Callable[[], bool]) -> web.Application:
    app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        ok = ready()
        return web.json_response({"ready": ok, "backend": service.backend.describe(),
                                  "backendUp": getattr(service.backend, "up", True),
                                  "limits": len(service.table)}, status=200 if ok else 503)

    async def stats(_: web.Request) -> web.Response:
        service.stats.service["backend_up"] = 1 if getattr(service.backend, "up", True) else 0
        for k in ("batches", "batched"):  # the Redis backend's pipelines
            if hasattr(service.backend, k):
                service.stats.service[f"redis_{k}"] = getattr(service.backend, k)
        return web.json_response(service.stats.to_dict())

    async def prom(_: web.Request) -> web.Response:
        service.stats.service["backend_up"] = 1 if getattr(service.backend, "up", True) else 0
        return web.Response(text=service.stats.prometheus(), content_type="text/plain")

    async def limits(_: web.Request) -> web.Response:
        return web.json_response(limits_body(service.table))

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/stats", stats)
    app.router.add_get("/stats/prometheus", prom)
    app.router.add_get("/limits", limits)
    return app


@dataclass
class Settings:
    source: Any  # FileSource | ApiSource
    redis_url: str | None = None
    redis_timeout: float = 0.1
    unix_path: str | None = None
    tcp: tuple[str, int] | None = None
    admin_unix: str | None = None
    admin_tcp: tuple[str, int] | None = None
    poll_interval: float = 1.0
    delay_mode: str = "header"
    codec: str = "wire"
    server: str = "aio"  # aio | sync (a thread-pool gRPC server, in-memory counters only; for comparison)
    threads: int = 8
    redis_batch: bool = True
    engine: str = "python"  # python | native | auto (server/ratelimit_native.py)
    native_threads: int = 1
    first_table: LimitTable | None = None  # already loaded (engine auto that fell back to Python)


async def run(settings: Settings) -> None:
    from . import ratelimit_source
    from .rest import serve

    if settings.engine != "python":
        from . import ratelimit_native

        if await ratelimit_native.run(settings):
            return
    if settings.redis_url:
        from .ratelimit_redis import RedisCounters

        backend: Any = RedisCounters(settings.redis_url, timeout=settings.redis_timeout, batch=settings.redis_batch)
    else:
        backend = MemoryBackend()
    service = RateLimitService(backend, delay_mode=settings.delay_mode)
    ready = False
    admin = None
    if settings.admin_unix or settings.admin_tcp:
        admin = await serve(admin_app(service, lambda: ready), settings.admin_unix, settings.admin_tcp)
    if settings.first_table is None:
        log.info("loading limits from %s", settings.source.describe())
    service.set_table(settings.first_table or await ratelimit_source.first_load(settings.source))
    if settings.server == "sync":
        server: Any = start_sync_grpc(service, settings.threads, unix_path=settings.unix_path, tcp=settings.tcp)
    else:
        server = await start_grpc(service, unix_path=settings.unix_path, tcp=settings.tcp, codec=settings.codec)
    ready = True
    where = ", ".join(x for x in (settings.unix_path and f"unix:{settings.unix_path}",
                                  settings.tcp and f"{settings.tcp[0]}:{settings.tcp[1]}") if x)
    log.info("rate-limit service on %s (backend %s, delay mode %s)", where, backend.describe(), settings.delay_mode)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(ratelimit_source.watch(settings.source, service.set_table, settings.poll_interval))
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        stopped = server.stop(1.0)
        if asyncio.iscoroutine(stopped):
            await stopped
        if admin is not None:
            await admin.cleanup()
        await backend.close()
        log.info("rate-limit service stopped")
