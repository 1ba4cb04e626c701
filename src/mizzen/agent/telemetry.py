"""The sidecar agent's telemetry: receives its Envoy's access-log stream (gRPC, envoy.service.accesslog.v3,
batched by Envoy) on a unix socket, computes Istio's standard metrics, a golden-metrics window and the top
paths, and serves the merged Prometheus scrape (Envoy's stats + these + the app's own metrics).

Mounted by the agent's main loop (phase 2): `Telemetry.start()` next to the health server, `routes()` added
to the :15020 app. Everything it learns about peers comes from `fetch_directory` (the control plane's
instances and services), refreshed periodically and soon after an unknown peer address shows up.

A peer that registered after the last refresh (pods start together: a caller's first requests often come
before its callee's agent has heard of it) must not be counted as `unknown`: Istio learns its peers in-band,
so its series never show a known workload as unknown. Records of a peer address the directory does not know
are therefore held (bounded in count and time) until the refresh they wake, then counted with its answer;
an address that refresh still does not name (a caller outside the mesh) is counted as unknown from then on
without being held again.

HTTP (JSON unless said otherwise):
    GET /stats/prometheus     text: Envoy's /stats/prometheus + istio_* + mizzen_agent_* + the app's metrics
                              (Envoy's native `envoy_mizzen_*` request series, if any, become istio_* series,
                              added to the access-log ones: telemetry/native.py)
    GET /telemetry/window     the golden-metrics window (aggregate.Window.snapshot); the requests Envoy counted
                              in its native series, if any, are in it too: what they grew by since the previous
                              reading of Envoy's stats (at each scrape, each window read, and every
                              `native_seconds` while there are such series: native.WindowFeed)
    GET /telemetry/top?n=20   the busiest paths (top.TopPaths.snapshot)
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import grpc
from aiohttp import web
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from ..telemetry import envoy as tel
from ..telemetry import exposition, native
from ..telemetry.aggregate import Aggregator, SelfInfo
from ..telemetry.istio import UNKNOWN
from ..telemetry.peers import Directory
from ..telemetry.records import INBOUND, RequestRecord, TcpRecord, direction_of, from_http_entry, from_tcp_entry
from ..telemetry.tap import MAX_EVENTS, MAX_SECONDS, TapError, TapStream, event_of
from ..telemetry.top import TopPaths

log = logging.getLogger("mizzen.agent.telemetry")
# how long one `mizzen top` read keeps the sampled stream of an envoy-stats proxy on (each read extends it)
TOP_SAMPLING_SECONDS = 120.0

Fetch = Callable[[], Awaitable[str]]


class _AccessLogService(als_pb2_grpc.AccessLogServiceServicer):
    def __init__(self, owner: "Telemetry") -> None:
        self.owner = owner

    async def StreamAccessLogs(self, request_iterator, context):  # noqa: N802 (gRPC method name)
        direction, sampled = "outbound", False
        self.owner.streams += 1
        try:
            async for msg in request_iterator:
                if msg.HasField("identifier"):
                    direction = direction_of(msg.identifier.log_name)
                    sampled = tel.is_sampled(msg.identifier.log_name)
                self.owner.ingest(msg, direction, sampled)
        finally:
            self.owner.streams -= 1
        return als_pb2.StreamAccessLogsResponse()


class Telemetry:
    """One sidecar's telemetry. `clock` is injectable for tests; everything runs on the agent's loop."""

    def __init__(self, me: SelfInfo, socket_path: str, *,
                 fetch_directory: Callable[[], Awaitable[Directory]] | None = None,
                 envoy_stats: Fetch | None = None, envoy_native: Fetch | None = None,
                 app_metrics: Fetch | None = None,
                 extra_metrics: Callable[[], str] | None = None, tcp_address: str | None = None, refresh_seconds: float = 15.0, min_refresh_seconds: float = 3.0,
                 top_capacity: int = 200, max_series: int = 5000, clock: Callable[[], float] = time.time,
                 max_held: int = 10000, max_hold_seconds: float = 10.0, native_seconds: float = 5.0,
                 native_probe_seconds: float = 30.0, envoy_runtime: Callable[[str, int], Awaitable[None]] | None = None,
                 top_sampling_seconds: float = TOP_SAMPLING_SECONDS) -> None:
        self.socket_path = socket_path
        self.tcp_address = tcp_address
        self.clock = clock
        self.agg = Aggregator(me, max_series=max_series)
        self.agg.window.started = clock()
        self.top = TopPaths(capacity=top_capacity)
        self.fetch_directory = fetch_directory
        self.envoy_stats = envoy_stats
        self.extra_metrics = extra_metrics  # the agent's other gauges (e.g. its certificate's), rendered per scrape
        self.app_metrics = app_metrics
        self.refresh_seconds, self.min_refresh_seconds = refresh_seconds, min_refresh_seconds
        self.streams = 0
        self.entries = 0
        self.bad_entries = 0
        self.directory_refreshes = 0
        self._last_refresh = float("-inf")
        self._unknown_seen = 0
        # records of not-yet-known peers, waiting for a refresh: (record, now), in arrival order
        self._held: list[tuple[RequestRecord | TcpRecord, float]] = []
        self._settled: set[str] = set()  # peer addresses a refresh did not name: counted at once from then on
        self.max_held, self.max_hold_seconds = max_held, max_hold_seconds
        self.held_records = 0  # records that waited for a refresh (since start)
        # Envoy-native request metrics (renamed at scrape time, see telemetry/native.py)
        self.native = native.Converter(max_series=max_series)
        self.native_total = native.Cumulative()
        self._native_waiting: dict[str, tuple[float, int]] = {}  # unknown peer -> (first seen, refreshes then)
        self._native_unknown = 0  # requests of native series with an unknown peer, at the last scrape
        self.native_series = 0  # Istio series of the last scrape that came from Envoy's stats alone
        self.native_dropped = 0  # requests of the Envoy series the cap left out of the last scrape
        # ... and their share of the golden window: `envoy_native` fetches Envoy's native series alone
        # (native.STATS_PATH), else `envoy_stats` (all of Envoy's stats) is read
        self.envoy_native = envoy_native
        w = self.agg.window
        self.native_window = native.WindowFeed(since=w.started, max_gap=w.slots * w.slot_seconds)
        self.native_seconds, self.native_probe_seconds = native_seconds, native_probe_seconds
        self._native_on = asyncio.Event()  # the last reading had native series: the feed loop reads every few s
        self._native_fetches = 0  # readings started (they may end out of order)
        self._native_applied = 0  # the latest reading fed to the window
        self._native_read_at = float("-inf")  # when (self.clock) Envoy's native series were last read (or tried)
        self._native_task: asyncio.Task | None = None
        # `mizzen top` on demand for such a proxy: a top read raises the sampled stream's runtime key to 100 % for
        # `top_sampling_seconds` (`envoy_runtime(key, percent)`: Envoy's admin /runtime_modify), then back to 0
        self.envoy_runtime, self.top_sampling_seconds = envoy_runtime, top_sampling_seconds
        self.sampled_entries = 0
        self.top_sampling_until = float("-inf")
        self._sampling_task: asyncio.Task | None = None
        self._server: grpc.aio.Server | None = None
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self.bound_port: int | None = None

    # ------------------------------------------------------------------ ingest (pure work, on the loop)
    def ingest(self, msg: als_pb2.StreamAccessLogsMessage, direction: str, sampled: bool = False) -> None:
        """`sampled`: entries of the stream `mizzen top` turns on for a proxy whose metrics Envoy counts itself
        (telemetry/envoy.http_access_log): they feed the top paths only, never a series or the window."""
        now = self.clock()
        if sampled:
            self._top_only(msg, direction, now)
            return
        if msg.HasField("http_logs"):
            for e in msg.http_logs.log_entry:
                self.entries += 1
                try:
                    rec: RequestRecord | TcpRecord = from_http_entry(e, direction)
                    if not self._hold(rec, now):
                        self._count(rec, now)
                except Exception:  # one odd entry must not end the stream
                    self.bad_entries += 1
                    log.exception("cannot read an access-log entry")
        elif msg.HasField("tcp_logs"):
            for e in msg.tcp_logs.log_entry:
                self.entries += 1
                try:
                    rec = from_tcp_entry(e, direction)
                    if not self._hold(rec, now):
                        self._count(rec, now)
                except Exception:
                    self.bad_entries += 1
                    log.exception("cannot read a TCP access-log entry")
        if self.agg.unknown_peers != self._unknown_seen:
            self._unknown_seen = self.agg.unknown_peers
            self._wake.set()

    def _top_only(self, msg: als_pb2.StreamAccessLogsMessage, direction: str, now: float) -> None:
        for e in msg.http_logs.log_entry:
            self.sampled_entries += 1
            try:
                rec = from_http_entry(e, direction)
                key = self.agg.labels_of(rec)
                self.top.add_record(rec, key[1] if rec.direction == INBOUND else key[12], now)
            except Exception:
                self.bad_entries += 1
                log.exception("cannot read a sampled access-log entry")

    def _count(self, rec: RequestRecord | TcpRecord, now: float) -> None:
        if isinstance(rec, TcpRecord):
            self.agg.add_tcp(rec)
            return
        key = self.agg.add_request(rec, now)
        self.top.add_record(rec, key[1] if rec.direction == INBOUND else key[12], now)

    def _hold(self, rec: RequestRecord | TcpRecord, now: float) -> bool:
        """Keep a record of a peer the directory does not know (yet) for the refresh it wakes; False: count it
        now (a known peer, no directory source, an address a refresh already failed to name, or the hold full).
        Records of the same connection or peer stay in order: once one is held, the next ones are too."""
        if self.fetch_directory is None:
            return False
        addr = self.agg.unknown_peer_address(rec)
        if not addr or addr in self._settled or len(self._held) >= self.max_held:
            return False
        self._held.append((rec, now))
        self.held_records += 1
        self._wake.set()
        return True

    def _release(self, refreshed: bool) -> None:
        """Count held records: all of them after a refresh (with its directory; the addresses it still does not
        name are settled as unknown), only those held longer than max_hold_seconds when the refresh failed."""
        if not self._held:
            return
        if refreshed:
            ready, self._held = self._held, []
            for rec, _ in ready:
                addr = self.agg.unknown_peer_address(rec)
                if addr:
                    self._settle(addr)
        else:
            oldest = self.clock() - self.max_hold_seconds
            ready = [h for h in self._held if h[1] <= oldest]
            self._held = [h for h in self._held if h[1] > oldest]
        for rec, at in ready:
            try:
                self._count(rec, at)
            except Exception:
                self.bad_entries += 1
                log.exception("cannot count a held access-log entry")
        if self._held:
            self._wake.set()  # try again (rate-limited by min_refresh_seconds)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._server = grpc.aio.server()
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(_AccessLogService(self), self._server)
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        self._server.add_insecure_port("unix:" + self.socket_path)
        if self.tcp_address:
            self.bound_port = self._server.add_insecure_port(self.tcp_address)
        await self._server.start()
        os.chmod(self.socket_path, 0o666)  # Envoy runs as uid 1337
        if self.fetch_directory is not None:
            self._task = asyncio.get_running_loop().create_task(self._refresh_loop())
        if self.envoy_native is not None or self.envoy_stats is not None:
            self._native_task = asyncio.get_running_loop().create_task(self._native_loop())
        log.info("access-log receiver on unix:%s", self.socket_path)

    async def stop(self) -> None:
        for task in (self._task, self._native_task, self._sampling_task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._task = self._native_task = self._sampling_task = None
        for rec, at in self._held:  # nothing received is lost: counted with the directory there is
            self._count(rec, at)
        self._held = []
        if self._server is not None:
            await self._server.stop(0.5)
            self._server = None

    async def refresh_directory(self) -> bool:
        assert self.fetch_directory is not None
        self._last_refresh = time.monotonic()
        try:
            d = await self.fetch_directory()
        except Exception as e:  # the control plane may be away: keep the last directory and say so
            log.warning("cannot refresh the peer directory (metrics keep the last one; peers new since then "
                        "show as unknown until the control plane answers): %s", e)
            self._release(refreshed=False)
            return False
        self.agg.set_directory(d)
        self.directory_refreshes += 1
        self._release(refreshed=True)
        return True

    async def _refresh_loop(self) -> None:
        while True:
            await self.refresh_directory()
            try:
                await asyncio.wait_for(self._wake.wait(), self.refresh_seconds)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            wait = self.min_refresh_seconds - (time.monotonic() - self._last_refresh)
            if wait > 0:  # an unknown caller (e.g. outside the mesh) must not cause a refresh per request
                await asyncio.sleep(wait)

    # ------------------------------------------------------------------ HTTP
    def self_metrics(self) -> str:
        return exposition.render_gauges("mizzen_agent", [
            ("accesslog_streams", "Access-log streams open from Envoy.", self.streams),
            ("accesslog_entries", "Access-log entries received since start.", self.entries),
            ("accesslog_bad_entries", "Access-log entries that could not be read.", self.bad_entries),
            ("accesslog_sampled_entries", "Entries of the sampled stream (`mizzen top` of a proxy counting in Envoy).",
             self.sampled_entries),
            ("telemetry_native_resets", "Envoy request series found reset or freed (a listener update, a restart) "
             "and kept counting from their last values.", self.native_total.resets),
            ("telemetry_series", "Istio series held.", self.agg.series_count + self.native_series),
            ("telemetry_dropped_records", "Records not stored because of the series cap.",
             self.agg.dropped_records + self.native_dropped),
            ("telemetry_unknown_peers", "Records whose peer address was not in the directory.", self.agg.unknown_peers),
            ("telemetry_held_records", "Records that waited for a directory refresh (their peer was new).",
             self.held_records),
            ("telemetry_directory_refreshes", "Peer directory refreshes.", self.directory_refreshes),
        ])

    async def _fetch(self, name: str, fetch: Fetch | None) -> tuple[str, bool]:
        """(the text, whether it was fetched): a failure is a comment line in the merged scrape."""
        if fetch is None:
            return "", False
        try:
            return await fetch(), True
        except Exception as e:
            log.warning("merged scrape: %s metrics unavailable: %s", name, e)
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            return f"# {name} metrics unavailable: {first}\n", False

    async def prometheus_text(self) -> str:
        self._native_fetches += 1
        reading = self._native_fetches
        (envoy_text, envoy_ok), (app_text, _) = await asyncio.gather(self._fetch("envoy", self.envoy_stats),
                                                                     self._fetch("app", self.app_metrics))
        extra = self.extra_metrics() if self.extra_metrics is not None else ""
        envoy_text, converted = self._native(envoy_text, reading if envoy_ok else 0)
        return exposition.merge(envoy_text, exposition.render(self.agg, converted), self.self_metrics(), extra,
                                app_text)

    def _native(self, envoy_text: str, reading: int) -> tuple[str, dict]:
        """Envoy's text -> (the text without its native series, those as Istio's series); the golden window is fed
        with what they grew by (`reading`: the fetch's number, 0 when it failed)."""
        envoy_text, raw = native.split_envoy_text(envoy_text)
        fresh = reading > self._native_applied  # not older than the reading applied last (fetches may overlap)
        # cumulative: what Envoy freed or reset keeps counting (native.Cumulative); an older reading shows the
        # newest state, and a failed one (reading 0) none
        series = self.native_total.update(raw) if fresh else self.native_total.view() if reading else {}
        out = self._convert(series) if series else None
        if out is None:
            self.native_series = self.native_dropped = 0
        if fresh:
            self._native_applied = reading
            now = self._native_read_at = self.clock()
            window = self.agg.window
            for key, inc in self.native_window.update(series, out.labels if out else {}, now).items():
                window.observe_many(key, inc.requests, inc.successes, inc.counts, inc.sum, now)
            if raw:
                self._native_on.set()
            else:
                self._native_on.clear()
        return envoy_text, out.http if out else {}

    async def read_native(self) -> bool:
        """One reading of Envoy's native series for the golden window (the filtered fetch if there is one);
        False if Envoy could not be read."""
        fetch = self.envoy_native or self.envoy_stats
        if fetch is None:
            return False
        self._native_fetches += 1
        reading = self._native_fetches
        self._native_read_at = self.clock()  # tried: a failing Envoy is not asked again at every window read
        try:
            text = await fetch()
        except Exception as e:
            log.debug("cannot read Envoy's native request series: %s", e)
            return False
        self._native(text, reading)
        return True

    async def _native_loop(self) -> None:
        """While Envoy has native series (the last reading said so), read them every `native_seconds` (unless a
        scrape or a window read just did), so that the window's time slots follow them closely."""
        while True:
            await self._native_on.wait()
            await asyncio.sleep(self.native_seconds)
            if self._native_on.is_set() and self.clock() - self._native_read_at >= self.native_seconds / 2:
                try:
                    await self.read_native()
                except Exception:
                    log.exception("cannot feed the golden window from Envoy's native series")

    def _convert(self, series: dict) -> native.Converted:
        """Envoy's native request series -> Istio's (with the directory of the moment). A new series of a peer
        address the directory does not know waits for the refresh it wakes (as a held record does), at most
        max_hold_seconds; the scrape itself never waits."""
        agg = self.agg
        hold = self._hold_native if self.fetch_directory is not None else None
        out = self.native.convert(series, agg.me, agg.directory, existing=agg.http, taken=agg.series_count, hold=hold)
        self._native_waiting = {a: self._native_waiting[a] for a in out.held if a in self._native_waiting}
        self.native_series = sum(1 for k in out.http if k not in agg.http)
        self.native_dropped = out.dropped_requests
        if out.held or out.unknown_requests > self._native_unknown:
            self._wake.set()
        self._native_unknown = out.unknown_requests
        return out

    def _hold_native(self, addr: str) -> bool:
        if addr in self._settled:
            return False
        now = self.clock()
        seen = self._native_waiting.get(addr)
        if seen is None:
            if len(self._native_waiting) >= self.max_held:
                return False
            self._native_waiting[addr] = (now, self.directory_refreshes)
            return True
        if self.directory_refreshes > seen[1] or now - seen[0] >= self.max_hold_seconds:
            # a refresh since did not name it (a caller outside the mesh), or it cannot: shown as unknown
            self._settle(addr)
            return False
        return True

    def _settle(self, addr: str) -> None:
        """A peer address no refresh names: counted (shown) as unknown at once from then on."""
        if len(self._settled) > 4096:  # bounded: a settled address is at worst held once more
            self._settled.clear()
        self._settled.add(addr)

    async def _prometheus(self, request: web.Request) -> web.Response:
        return web.Response(text=await self.prometheus_text(), headers={"Content-Type": exposition.CONTENT_TYPE})

    async def _window(self, request: web.Request) -> web.Response:
        # Envoy's native series: read now while there are some, else at most every native_probe_seconds (a
        # window read is how a workload whose metrics moved to Envoy is found when nothing scrapes it)
        if self._native_on.is_set() or self.clock() - self._native_read_at >= self.native_probe_seconds:
            await self.read_native()
        snap = self.agg.window.snapshot(self.clock())
        me = self.agg.me.workload
        snap.update(workload=me.workload, namespace=me.namespace, version=me.version)
        return web.json_response(snap)

    async def _top(self, request: web.Request) -> web.Response:
        try:
            n = max(1, min(int(request.query.get("n", "20")), self.top.capacity))
        except ValueError:
            raise web.HTTPBadRequest(text="n must be an integer\n")
        snap = self.top.snapshot(n)
        if await self.sample_for_top():
            snap["sampling"] = {"percent": 100, "seconds": self.top_sampling_seconds}
        return web.json_response(snap)

    async def sample_for_top(self) -> bool:
        """(Re)start sampling this proxy's top stream for `top_sampling_seconds` (set again at every read: an
        Envoy restarted since forgot the runtime value). The key is set whatever the agent knows of the proxy's
        metrics provider: a proxy on the access-log stream has no sampled stream (the key does nothing there),
        and one on `envoy-stats` that has served no request yet has no native series to tell it by. True when
        the proxy is known to count natively (the top then says it samples)."""
        if self.envoy_runtime is None:
            return False
        native_known = self._native_on.is_set() or bool(self.native_series)
        if not native_known:
            await self.read_native()  # nothing scraped this agent yet: does its Envoy count natively?
            native_known = self._native_on.is_set()
        try:
            await self.envoy_runtime(tel.TOP_RUNTIME_KEY, 100)
        except Exception as e:
            (log.warning if native_known else log.debug)(
                "cannot turn on the sampled access-log stream for `mizzen top` (%s): top paths stay empty for "
                "this proxy if it counts its metrics in Envoy; check the Envoy admin socket", e)
            return False
        self.top_sampling_until = self.clock() + self.top_sampling_seconds
        if self._sampling_task is None or self._sampling_task.done():
            self._sampling_task = asyncio.get_running_loop().create_task(self._sampling_off(), name="top-sampling")
        return native_known

    async def _sampling_off(self) -> None:
        while (left := self.top_sampling_until - self.clock()) > 0:
            await asyncio.sleep(left)
        try:
            await self.envoy_runtime(tel.TOP_RUNTIME_KEY, 0)  # type: ignore[misc]
        except Exception as e:
            log.warning("cannot turn the sampled access-log stream off (%s): Envoy keeps streaming every "
                        "request to the agent for `mizzen top` until it restarts", e)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/stats/prometheus", self._prometheus), web.get("/telemetry/window", self._window),
                web.get("/telemetry/top", self._top)]


# ---------------------------------------------------------------------- helpers for the agent's wiring
def unix_get(socket_path: str, path: str, timeout: float = 2.0) -> Fetch:
    """An async fetch of `path` over a unix socket (Envoy's admin pipe): e.g. `/stats/prometheus`."""
    async def fetch() -> str:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=socket_path, force_close=True),
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.get("http://local" + path) as r:
                if r.status != 200:
                    raise RuntimeError(f"GET {path}: HTTP {r.status}")
                return await r.text()
    return fetch


def envoy_runtime_setter(admin: str, timeout: float = 2.0) -> Callable[[str, int], Awaitable[None]]:
    """`set(key, value)`: Envoy's admin `POST /runtime_modify?key=value`; `admin`: its unix socket's path, or an
    `http://host:port` base URL."""
    http = admin.startswith("http://")

    async def set_value(key: str, value: int) -> None:
        conn = aiohttp.TCPConnector(force_close=True) if http else aiohttp.UnixConnector(path=admin, force_close=True)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.post((admin if http else "http://local") + "/runtime_modify", params={key: str(value)}) as r:
                if r.status != 200:
                    raise RuntimeError(f"POST /runtime_modify: HTTP {r.status}: {(await r.text())[:200]}")
    return set_value


def http_get(url: str, timeout: float = 2.0) -> Fetch:
    """An async fetch of an HTTP URL (the app's metrics port/path)."""
    async def fetch() -> str:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.get(url) as r:
                if r.status != 200:
                    raise RuntimeError(f"GET {url}: HTTP {r.status}")
                return await r.text()
    return fetch


async def tap_events(url: str, body: dict, *, max_events: int = 100, max_seconds: float = 60.0,
                     directory: Directory | None = None, reporter: str = "", unix_socket: str | None = None,
                     ) -> AsyncIterator[dict]:
    """Tap requests through Envoy's admin `/tap` (`url`, e.g. `http://envoy/tap` with `unix_socket` = the admin
    pipe): yields `tap.event_of` rows until `max_events` rows or `max_seconds` passed, then closes the admin
    stream, which detaches the tap (Envoy taps nothing while no session is attached). Both bounds are capped
    (tap.MAX_EVENTS, tap.MAX_SECONDS). Envoy allows one session per config id: a second caller gets TapError."""
    max_events = max(1, min(max_events, MAX_EVENTS))
    max_seconds = max(0.1, min(max_seconds, MAX_SECONDS))
    connector = aiohttp.UnixConnector(path=unix_socket, force_close=True) if unix_socket else None
    deadline = time.monotonic() + max_seconds
    n = 0
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as s:
        async with s.post(url, json=body) as r:
            if r.status != 200:
                raise TapError(f"Envoy refused the tap (HTTP {r.status}): {(await r.text()).strip()[:300]}")
            stream = TapStream()
            while n < max_events:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                try:
                    chunk = await asyncio.wait_for(r.content.readany(), left)
                except asyncio.TimeoutError:
                    return
                if not chunk:
                    return
                for doc in stream.feed(chunk):
                    ev = event_of(doc, directory, reporter)
                    if ev is None:
                        continue
                    yield ev
                    n += 1
                    if n >= max_events:
                        return


def directory_from_api(call: Callable[[str, str], Awaitable[Any]]) -> Callable[[], Awaitable[Directory]]:
    """`call(method, path)` -> JSON (the shared REST client's call): the directory from the control plane."""
    async def fetch() -> Directory:
        inst = await call("GET", "/api/v1/instances")
        svcs = await call("GET", "/api/v1/services")
        return Directory(inst.get("items", ()), svcs.get("items", ()))
    return fetch


__all__ = ["Telemetry", "tap_events", "unix_get", "http_get", "directory_from_api", "UNKNOWN"]
