"""xDS load test: N real gRPC ADS streams against a real control plane process, EDS push latency.

Driver (`run_bench`):
  1. temp state dir; start `<python> -m mizzen.cli.main controlplane --state-dir D --xds-port P` (REST on
     D/api.sock, as the admin: D/admin.token)
  2. POST /api/v1/apply M `v1 Service`s (svc-<i>, port 8080 `http`, selector app=svc-<i>);
     PUT /api/v1/instances/default.svc-<i>-<j> two instances each (127.0.x.y; nothing connects to them)
  3. start W worker processes (`python -m mizzen.bench.xds_load worker`), together N ADS streams (Delta or
     SotW), one TCP connection each, node ids/metadata from `Proxy(...).node_metadata()` (netns)
  4. each stream behaves like Envoy: CDS+LDS wildcard, EDS/RDS by name for what it received, ACK everything;
     workers report when every stream has its initial config
  5. K times: re-PUT instance default.svc-0-0 with a new address; the time until each stream received an
     EDS update carrying it (p50/p99 across proxies, and until all had it)
  6. control-plane CPU seconds (/proc/<pid>/stat) and peak RSS (VmHWM); everything is torn down.
Workers and driver talk JSON lines over the workers' stdin/stdout; times are CLOCK_MONOTONIC, which is
shared by all processes of the machine.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp

from . import xds_extra
from .xds_common import (NAMESPACE, _Parsers, _addr, _free_port, _raise_nofile, instance_dict,  # noqa: F401
                         node_id, node_metadata, percentile, _profile, proc_cpu_seconds, proc_peak_rss_mb,
                         proc_rss_mb, services_yaml)

WATCH_SERVICE = "svc-0"


# ---------------------------------------------------------------------------------------------------------
# worker side: N_i streams in one process
# ---------------------------------------------------------------------------------------------------------
RETRY_BASE, RETRY_MAX = 0.5, 5.0  # the sidecar bootstrap's ADS retry_back_off (agent/bootstrap.py)
MARKER = re.compile(rb"mzbench-[0-9]+")  # a route change's marker (a header value set by a VirtualService)
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


class LoadStream:
    """One simulated Envoy: subscribes like Envoy, ACKs everything, records when addresses appear."""

    def __init__(self, w: "Worker", index: int) -> None:
        self.w = w
        self.index = index
        self.node_id = node_id(index)
        self.metadata = node_metadata(index, w.scoped, w.workloads)
        self.clusters: dict[str, str | None] = {}  # cluster name -> eds name
        self.listeners: dict[str, frozenset[str]] = {}
        self.eds_names: set[str] = set()
        self.rds_names: set[str] = set()
        self.have_eds: set[str] = set()
        self.have_rds: set[str] = set()
        self.got: set[str] = set()  # types that had a response
        self.sotw_state: dict[str, tuple[str, str]] = {}  # type -> (version_info, nonce)
        self.synced_at: float | None = None
        self.seen: set[str] = set()  # addresses of the watched cluster seen
        self.responses = 0
        self.call: Any = None
        self.channel: Any = None
        self.attempt_at = 0.0  # when the current stream was opened (its connect attempt began)

    def _req(self, type_url: str, names=None, sub=(), unsub=(), nonce: str = "", version: str = "",
             first: bool = False, initial: dict[str, str] | None = None):
        d = self.w.pb
        if self.w.delta:
            r = d.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=list(sub),
                                        resource_names_unsubscribe=list(unsub), response_nonce=nonce,
                                        initial_resource_versions=initial or {})
        else:
            r = d.DiscoveryRequest(type_url=type_url, resource_names=sorted(names or ()), response_nonce=nonce,
                                   version_info=version)
        if first:
            r.node.id = self.node_id
            r.node.cluster = "bench"
            r.node.metadata.update(self.metadata)
        return r

    def _reset(self) -> None:
        """A new SotW stream knows nothing (Delta keeps its config and sends initial versions: `_resume`)."""
        self.versions: dict[str, dict[str, str]] = {}  # Delta: type -> name -> version held
        self.clusters, self.listeners = {}, {}
        self.eds_names, self.rds_names = set(), set()
        self.have_eds, self.have_rds = set(), set()
        self.got = set()
        self.sotw_state = {}

    async def run(self, new_channel) -> None:
        """Keep one ADS stream open; when it breaks, reconnect like Envoy with the sidecar bootstrap's ADS retry
        policy (agent/bootstrap.py XDS_RETRY_POLICY): each wait drawn at random below an interval that starts at
        0.5 s and doubles per failed attempt up to 5 s, reset once a stream gets a response; every attempt on a
        fresh connection (Envoy's stream retry opens one; a reused grpc channel would add grpc core's own
        connect back-off on top, up to 5 s more than Envoy waits)."""
        import random

        w = self.w
        method = "DeltaAggregatedResources" if w.delta else "StreamAggregatedResources"
        req_cls = w.pb.DeltaDiscoveryRequest if w.delta else w.pb.DiscoveryRequest
        resume = False
        interval = RETRY_BASE
        while True:
            if not (resume and w.delta):
                self._reset()
            if self.channel is None:
                self.channel = new_channel()
            stub = self.channel.stream_stream(f"/envoy.service.discovery.v3.AggregatedDiscoveryService/{method}",
                                              request_serializer=req_cls.SerializeToString,
                                              response_deserializer=w.summary)
            self.attempt_at = time.monotonic()
            self.call = stub()
            try:
                if resume and w.delta:
                    await self._resume()
                else:
                    await self.call.write(self._req(CDS, first=True))
                    await self.call.write(self._req(LDS))
                resume = True
                async for resp in self.call:
                    self.responses += 1
                    interval = RETRY_BASE
                    await self._on_response(resp)
                why = "ended by the server"
            except Exception as e:  # noqa: BLE001 - any stream failure: reconnect, like Envoy
                why = repr(e).splitlines()[0]
            w.reconnects += 1
            if w.reconnects <= 3:
                print(f"stream {self.index}: {why}; reconnecting", file=sys.stderr)
            channel, self.channel = self.channel, None
            await channel.close()
            await asyncio.sleep(random.random() * interval)
            interval = min(2 * interval, RETRY_MAX)

    async def _resume(self) -> None:
        """Like Envoy on a new Delta ADS stream: keep the config, subscribe again to everything it holds, with
        `initial_resource_versions`, so the server sends only what changed."""
        v = self.versions
        await self.call.write(self._req(CDS, first=True, initial=v.get(CDS)))
        await self.call.write(self._req(LDS, initial=v.get(LDS)))
        for t, names in ((EDS, self.eds_names), (RDS, self.rds_names)):
            if names:
                held = {n: x for n, x in v.get(t, {}).items() if n in names}
                await self.call.write(self._req(t, sub=sorted(names), initial=held))

    async def _on_response(self, resp: "_Summary") -> None:
        w, t = self.w, resp.type_url
        now = time.monotonic()
        self.got.add(t)
        removed = resp.removed
        if w.delta:
            held = self.versions.setdefault(t, {})
            held.update(resp.versions)
            for n in removed or ():
                held.pop(n, None)
        if t == CDS:
            if removed is None:
                self.clusters = {}
            for n in removed or ():
                self.clusters.pop(n, None)
            self.clusters.update(resp.clusters)
            want = {e for e in self.clusters.values() if e}
            await self._resubscribe(EDS, self.eds_names, want)
            self.eds_names = want
            self.have_eds &= want
        elif t == LDS:
            if removed is None:
                self.listeners = {}
            for n in removed or ():
                self.listeners.pop(n, None)
            self.listeners.update(resp.listeners)
            want = set().union(*self.listeners.values()) if self.listeners else set()
            await self._resubscribe(RDS, self.rds_names, want)
            self.rds_names = want
            self.have_rds &= want
        elif t == EDS:
            self.have_eds.update(resp.names)
            for a in resp.watched:
                if a not in self.seen:
                    self.seen.add(a)
                    w.saw(a, now, self.attempt_at)
            for n in removed or ():
                self.have_eds.discard(n)
        elif t == RDS:
            self.have_rds.update(resp.names)
            for a in resp.watched:  # route markers (xds_extra.route_change)
                if a not in self.seen:
                    self.seen.add(a)
                    w.saw(a, now, self.attempt_at)
        # ACK
        if w.delta:
            await self.call.write(self._req(t, nonce=resp.nonce))
        else:
            self.sotw_state[t] = (resp.version_info, resp.nonce)
            names = self.eds_names if t == EDS else self.rds_names if t == RDS else ()
            await self.call.write(self._req(t, names, nonce=resp.nonce, version=resp.version_info))
        if self.synced_at is None and CDS in self.got and LDS in self.got and \
                self.eds_names <= self.have_eds and self.rds_names <= self.have_rds:
            self.synced_at = now
            w.on_synced()

    async def _resubscribe(self, t: str, old: set[str], new: set[str]) -> None:
        if old == new:
            return
        if self.w.delta:
            await self.call.write(self._req(t, sub=sorted(new - old), unsub=sorted(old - new)))
        else:
            version, nonce = self.sotw_state.get(t, ("", ""))
            await self.call.write(self._req(t, new, nonce=nonce, version=version))


class _Summary:
    """What a stream needs from one response, computed once per distinct response bytes in a worker process
    (servers that share responses send the same bytes to every stream: the load client then parses them
    once, so its CPU goes to the protocol, not to protobuf parsing of identical messages)."""

    __slots__ = ("type_url", "nonce", "version_info", "names", "removed", "clusters", "listeners", "watched",
                 "versions")

    def __init__(self, w: "Worker", data: bytes) -> None:
        resp = (w.pb.DeltaDiscoveryResponse if w.delta else w.pb.DiscoveryResponse).FromString(data)
        t = self.type_url = resp.type_url
        self.nonce = resp.nonce
        self.version_info = "" if w.delta else resp.version_info
        if w.delta:
            items = [(r.name, r.resource.value) for r in resp.resources]
            self.removed: list[str] | None = list(resp.removed_resources)
            self.versions = {r.name: r.version for r in resp.resources}
        else:
            items = [(w.name_of(t, a.value), a.value) for a in resp.resources]
            self.removed = None  # SotW: CDS/LDS carry the full set
            self.versions = {}
        P = w.parsers
        self.names = [n for n, _ in items]
        self.clusters = {n: P.eds_name(v) for n, v in items} if t == CDS else {}
        self.listeners = {n: P.rds_names(v) for n, v in items} if t == LDS else {}
        self.watched: frozenset[str] = frozenset()
        if t == EDS:
            for n, v in items:
                if n == w.watch_name or (w.watch_name is None and n.endswith(w.watch_suffix)):
                    w.watch_name = n
                    self.watched = P.addresses(v)
        elif t == RDS:
            self.watched = frozenset(m.decode() for _, v in items for m in MARKER.findall(v))


class Worker:
    def __init__(self, xds: str, delta: bool, start: int, count: int, scoped: bool = False, workloads: int = 1) -> None:
        from envoy.service.discovery.v3 import discovery_pb2

        self.pb = discovery_pb2
        self.scoped, self.workloads = scoped, workloads
        self.xds = xds
        self.delta = delta
        self.parsers = _Parsers()
        self.streams = [LoadStream(self, start + i) for i in range(count)]
        self.watch_suffix = f"|{WATCH_SERVICE}.{NAMESPACE}.svc.cluster.local"
        self.watch_name: str | None = None
        self.synced = 0
        self.reconnects = 0
        self.synced_event = asyncio.Event()
        self.seen_times: dict[str, list[float]] = {}
        self.seen_events: dict[str, asyncio.Event] = {}
        self.seen_attempts: dict[str, list[float]] = {}  # per address: when the stream that got it was opened
        self._names: dict[bytes, str] = {}
        self._summaries: dict[bytes, _Summary] = {}

    def summary(self, data: bytes) -> _Summary:
        """The response deserializer: one parse per distinct response (bounded cache)."""
        s = self._summaries.get(data)
        if s is None:
            if len(self._summaries) > 64:
                self._summaries.clear()
            s = self._summaries[data] = _Summary(self, data)
        return s

    def name_of(self, type_url: str, value: bytes) -> str:
        n = self._names.get(value)
        if n is None:
            P = self.parsers
            if type_url == CDS:
                n = P.Cluster.FromString(value).name
            elif type_url == EDS:
                n = P.CLA.FromString(value).cluster_name
            elif type_url == LDS:
                n = P.Listener.FromString(value).name
            else:
                from envoy.config.route.v3 import route_pb2
                n = route_pb2.RouteConfiguration.FromString(value).name
            self._names[value] = n
        return n

    def on_synced(self) -> None:
        self.synced += 1
        if self.synced == len(self.streams):
            self.synced_event.set()

    def saw(self, addr: str, now: float, attempt_at: float) -> None:
        lst = self.seen_times.setdefault(addr, [])
        lst.append(now)
        self.seen_attempts.setdefault(addr, []).append(attempt_at)
        if len(lst) == len(self.streams):
            self.seen_events.setdefault(addr, asyncio.Event()).set()

    async def main(self) -> None:
        import grpc

        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        # one connection per stream; a broken stream is retried on a new one (LoadStream.run: Envoy's back-off)
        opts = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", -1)]

        def new_channel():
            return grpc.aio.insecure_channel(self.xds, options=opts)

        t_start = time.monotonic()
        cpu0 = time.process_time()
        tasks = [asyncio.create_task(s.run(new_channel)) for s in self.streams]
        _emit({"event": "started", "t": t_start})
        try:
            while not self.synced_event.is_set():
                try:
                    await asyncio.wait_for(self.synced_event.wait(), 2.0)
                except asyncio.TimeoutError:
                    _emit({"event": "progress", "synced": self.synced, "streams": len(self.streams),
                           "responses": sum(s.responses for s in self.streams),
                           "reconnects": self.reconnects,
                           "silent": sum(1 for s in self.streams if s.responses == 0),
                           "states": sorted({str(s.channel.get_state()) for s in self.streams
                                             if s.responses == 0 and s.channel is not None})})
            _emit({"event": "synced", "t0": t_start, "times": [s.synced_at for s in self.streams],
                   "cpu": time.process_time() - cpu0, "reconnects": self.reconnects})
            while True:
                line = await reader.readline()
                if not line:
                    break
                cmd = json.loads(line)
                if cmd["cmd"] == "expect":
                    addr = cmd["address"]
                    ev = self.seen_events.setdefault(addr, asyncio.Event())
                    if len(self.seen_times.get(addr, ())) >= len(self.streams):
                        ev.set()
                    try:
                        await asyncio.wait_for(ev.wait(), cmd.get("timeout", 30))
                    except asyncio.TimeoutError:
                        pass
                    _emit({"event": "seen", "address": addr, "times": self.seen_times.get(addr, []),
                           "attempts": self.seen_attempts.get(addr, []),
                           "missing": len(self.streams) - len(self.seen_times.get(addr, ())),
                           "reconnects": self.reconnects,
                           "cpu": time.process_time() - cpu0})
                elif cmd["cmd"] == "stop":
                    break
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(s.channel.close() for s in self.streams if s.channel is not None),
                                 return_exceptions=True)


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def worker_entry(argv: list[str]) -> None:
    xds, mode, start, count = argv[0], argv[1], int(argv[2]), int(argv[3])
    _raise_nofile()
    k = [int(a.split("=", 1)[1]) for a in argv[4:] if a.startswith("workloads=")]
    w = Worker(xds, mode == "delta", start, count, scoped="scoped" in argv[4:], workloads=k[0] if k else 1)
    try:
        import uvloop  # type: ignore

        uvloop.run(w.main())
    except ImportError:  # pragma: no cover
        asyncio.run(w.main())


# ---------------------------------------------------------------------------------------------------------
# driver side
# ---------------------------------------------------------------------------------------------------------
@dataclass
class BenchOptions:
    proxies: int = 100
    services: int = 50
    delta: bool = True
    changes: int = 5
    workers: int = 1
    timeout: float = 300.0
    debounce_ms: int | None = None
    python: str = sys.executable
    keep_state: bool = False
    cp_log_level: str = "warning"
    store_url: str | None = None  # the control plane's --store (None: SQLite in the temp state dir)
    via: str = "rest"  # how the watched instance changes: "rest" (PUT /api/v1/instances, as agents do) or
    # "consul" (PUT /v1/agent/service/register on the control plane's Consul API)
    profile_dir: str | None = None  # py-spy the control plane: DIR/sync.txt, DIR/changes.txt (bench/profile.py)
    floor: bool = False  # then the same load against a bare gRPC server writing the same bytes (bench/xds_floor.py)
    scoped: bool = False  # half the proxies (odd indexes) selected by a Sidecar allowing a few hosts (xds_extra)
    workloads: int = 1  # proxies spread over K workloads (app=bench-<i>): K distinct views, as in a real mesh
    route_changes: int = 0  # then K VirtualService changes of svc-0's routes: time until every proxy has each
    restart: bool = False  # then restart the control plane: time until every proxy has a change made at ready
    instances: int = 2  # per service
    churn_rate: int = 0  # then instance changes per second (paced) for churn_seconds (xds_extra.churn)
    churn_seconds: float = 60.0
    debounce_leading: bool = False  # the control plane's --debounce-leading (xds.PushQueue leading edge)
    client: str = "python"  # the load worker: "python" (the reference) or "native" (build/mizzen-xdsload)


@dataclass
class BenchResult:
    options: BenchOptions
    initial_sync_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)  # every proxy, every change
    all_ms: list[float] = field(default_factory=list)  # per change: until the last proxy had it
    missing: int = 0
    cp_cpu_sync_s: float = 0.0
    cp_cpu_changes_s: float = 0.0
    cp_cpu_total_s: float = 0.0
    cp_peak_rss_mb: float = 0.0
    client_cpu_s: float = 0.0
    client_cpu_sync_s: float = 0.0  # the load workers' CPU seconds from their start to every stream synced
    connected: int = 0
    reconnects: int = 0  # streams that broke and were reopened (like Envoy would)
    pids: list[int] = field(default_factory=list)  # every process started (all reaped at the end)
    state_dir: str = ""  # the temp state dir (removed at the end unless keep_state)
    profiles: dict[str, str] = field(default_factory=dict)  # phase -> py-spy collapsed stacks
    floor: "BenchResult | None" = None  # the same load against the bare gRPC floor, right after
    cp_rss_before_mb: float = 0.0  # the control plane's RSS with the mesh loaded, before any proxy connected
    route_latencies_ms: list[float] = field(default_factory=list)  # every proxy, every route change
    route_missing: int = 0
    cp_cpu_routes_s: float = 0.0  # the server's CPU seconds over the route changes (apply to last stream)
    restart_ready_s: float = 0.0  # SIGTERM -> the new control plane is ready
    restart_push_s: float = 0.0  # ready -> every proxy has the change made at ready (reconnect storm included)
    restart_missing: int = 0
    restart_stop_s: float = 0.0  # SIGTERM -> the old control plane exited
    restart_cp_cpu_s: float = 0.0  # the new control plane's CPU seconds, start to every proxy having the change
    restart_client_cpu_s: float = 0.0  # the load clients' CPU seconds over the same window (from SIGTERM)
    restart_last_open_s: float = 0.0  # ready -> the last stream (re)opened (the clients' retry back-off)
    restart_serve_max_s: float = 0.0  # max over streams: (re)opened -> has the change (the server's part)
    churn_sent: int = 0
    churn_failed: int = 0
    churn_elapsed_s: float = 0.0
    churn_latencies_ms: list[float] = field(default_factory=list)  # the timed changes (one a second)
    churn_missing: int = 0

    def pct(self, p: float) -> float:
        return percentile(self.latencies_ms, p)

    def row(self, label: str = "") -> str:
        o = self.options
        mode = ('delta' if o.delta else 'sotw') + label + (", native client" if o.client == "native" else "")
        return (f"| {mode} | {o.proxies} | {o.services} | {o.workers} | "
                f"{self.initial_sync_s:.2f} | {self.pct(50):.1f} | {self.pct(99):.1f} | "
                f"{(sum(self.all_ms) / len(self.all_ms)) if self.all_ms else float('nan'):.1f} | {self.missing} | "
                f"{self.reconnects} | "
                f"{self.cp_cpu_sync_s:.2f} | {self.cp_cpu_changes_s:.2f} | {self.cp_peak_rss_mb:.0f} | "
                f"{self.client_cpu_s:.1f} |")


TABLE_HEADER = ("| mode | proxies | services | client procs | initial sync s | EDS p50 ms | EDS p99 ms | "
                "EDS all ms (mean) | missed | reconnects | CP CPU s (sync) | CP CPU s (changes) | CP peak RSS MB | "
                "client CPU s (total) |\n" + "|---" * 14 + "|")


class _WorkerProc:
    def __init__(self, proc: asyncio.subprocess.Process, count: int) -> None:
        self.proc = proc
        self.count = count

    async def next_event(self, timeout: float) -> dict:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"load worker exited (code {await self.proc.wait()})")
        return json.loads(line)

    async def send(self, obj: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        await self.proc.stdin.drain()


class _Ctx:
    """What the run started, for teardown."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.cp: subprocess.Popen | None = None
        self.floor: asyncio.subprocess.Process | None = None
        self.workers: list[_WorkerProc] = []


async def run_bench(o: BenchOptions, log=lambda s: None) -> BenchResult:
    """Run the whole benchmark; bounded by `o.timeout`; tears everything down."""
    _raise_nofile()
    res = BenchResult(o)
    ctx = _Ctx(tempfile.mkdtemp(prefix="mizzen-bench-"))
    res.state_dir = ctx.state
    try:
        await asyncio.wait_for(_run(o, res, ctx, log), o.timeout)
        await _stop(ctx)
        path = os.path.join(ctx.state, "floor-resources.json")
        if o.floor and os.path.exists(path):
            fctx = _Ctx(ctx.state)
            res.floor = BenchResult(o)
            try:
                await asyncio.wait_for(_run_floor(o, res.floor, fctx, path, log), o.timeout)
            finally:
                await _stop(fctx)
                res.pids += res.floor.pids
    finally:
        await _stop(ctx)
        if o.keep_state:
            log(f"state dir kept: {ctx.state}")
        else:
            shutil.rmtree(ctx.state, ignore_errors=True)
    return res


async def _stop(ctx: "_Ctx") -> None:
    """Stop the workers and the server of one run (idempotent)."""
    for w in ctx.workers:
        if w.proc.returncode is None:
            try:
                await w.send({"cmd": "stop"})
                await asyncio.wait_for(w.proc.wait(), 5)
            except (Exception, asyncio.TimeoutError):
                w.proc.kill()
                await w.proc.wait()
    cp = ctx.cp
    if cp is not None and cp.poll() is None:
        cp.send_signal(signal.SIGTERM)
        try:
            cp.wait(10)
        except subprocess.TimeoutExpired:
            cp.kill()
            cp.wait()
    fl = ctx.floor
    if fl is not None and fl.returncode is None:
        fl.kill()
        await fl.wait()


async def _save_resources(http, api: str, path: str) -> None:
    """What the control plane sent proxy 0, per type, as JSON (the floor serves the same resources)."""
    import urllib.parse

    types = {"CDS": CDS, "EDS": EDS, "LDS": LDS, "RDS": RDS}
    out: dict[str, list] = {}
    for short, url in types.items():
        async with http.get(f"{api}/api/v1/proxies/{urllib.parse.quote(node_id(0), safe='')}/resources",
                            params={"type": short}) as r:
            if r.status != 200:
                raise RuntimeError(f"GET resources of proxy 0 failed: {r.status} {await r.text()}")
            out[url] = [{"name": x["name"], "resource": x["resource"]} for x in (await r.json())["resources"]
                        if "resource" in x]
    with open(path, "w") as f:
        json.dump(out, f)


async def _run_floor(o: BenchOptions, res: BenchResult, ctx: "_Ctx", path: str, log) -> None:
    port = _free_port()
    suffix = f"|{WATCH_SERVICE}.{NAMESPACE}.svc.cluster.local"
    p = await asyncio.create_subprocess_exec(
        o.python, "-m", "mizzen.bench.xds_floor", str(port), "delta" if o.delta else "sotw", path, suffix,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, start_new_session=True,
        limit=64 * 1024 * 1024)
    ctx.floor = p
    res.pids.append(p.pid)
    fw = _WorkerProc(p, 0)
    ev = await fw.next_event(60)
    assert ev["event"] == "ready", ev
    log(f"floor server pid {p.pid} ready")

    async def change(k: int, address: str) -> None:
        await fw.send({"cmd": "change", "address": address})
        await fw.next_event(30)

    await _drive(replace(o, profile_dir=None), res, ctx, f"127.0.0.1:{port}", p.pid, change, None, log, net="127.2")
    if o.route_changes:
        await xds_extra.floor_route_changes(o, res, ctx, fw, log)
    res.connected = o.proxies


async def _run(o: BenchOptions, res: BenchResult, ctx: _Ctx, log) -> None:
    state = ctx.state
    xds_port = _free_port()
    cmd = [o.python, "-m", "mizzen.cli.main", "controlplane", "--state-dir", state, "--xds-port", str(xds_port),
           "--log-level", o.cp_log_level]
    if o.debounce_ms is not None:
        cmd += ["--debounce-ms", str(o.debounce_ms)]
    if o.debounce_leading:
        cmd += ["--debounce-leading"]
    if o.store_url:
        cmd += ["--store", o.store_url]
    consul = f"127.0.0.1:{_free_port()}" if o.via == "consul" else None
    if consul:
        cmd += ["--consul-api", consul]
    logf = open(os.path.join(state, "controlplane.log"), "wb")
    cp = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    logf.close()
    ctx.cp = cp
    res.pids.append(cp.pid)
    # the REST API on its unix socket, as the admin (the credential the control plane writes at its start)
    api = "http://cp"
    xds = f"127.0.0.1:{xds_port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60),
                                     connector=aiohttp.UnixConnector(path=os.path.join(state, "api.sock"))) as http:
        deadline = time.monotonic() + 30
        while True:
            if cp.poll() is not None:
                raise RuntimeError(f"control plane exited with {cp.returncode}; see its log in {state}")
            try:
                async with http.get(f"{api}/healthz") as r:
                    if r.status == 200 and (await r.json()).get("ready"):
                        break
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("control plane not ready after 30 s")
            await asyncio.sleep(0.1)
        with open(os.path.join(state, "admin.token")) as f:
            http.headers["Authorization"] = f"Bearer {f.read().strip()}"
        log(f"control plane pid {cp.pid} ready; applying {o.services} services")
        text = services_yaml(o.services) + ("---\n" + xds_extra.SIDECAR if o.scoped else "")
        async with http.post(f"{api}/api/v1/apply", json={"files": [{"name": "bench.yaml", "text": text}],
                                                           "namespace": NAMESPACE}) as r:
            if r.status != 200:
                raise RuntimeError(f"apply failed: {r.status} {await r.text()}")
        sem = asyncio.Semaphore(32)

        async def put(i: int, j: int, address: str) -> None:
            async with sem:
                d = instance_dict(i, j, address)
                async with http.put(f"{api}/api/v1/instances/{d['id']}", json=d) as r:
                    if r.status != 200:
                        raise RuntimeError(f"PUT instance failed: {r.status} {await r.text()}")

        await asyncio.gather(*(put(i, j, _addr(o.instances * i + j)) for i in range(o.services)
                               for j in range(o.instances)))
        log(f"registered {o.instances * o.services} instances")
        await asyncio.sleep(0.3)  # let the registry change settle into a snapshot before proxies connect
        sampler = _profile(o, cp.pid, "sync", log)

        async def change(k: int, address: str) -> None:
            if consul is None:
                return await put(0, 0, address)
            body = {"Name": WATCH_SERVICE, "ID": f"{WATCH_SERVICE}-consul", "Address": address, "Port": 8080}
            async with http.put(f"http://{consul}/v1/agent/service/register", json=body) as r:
                if r.status != 200:
                    raise RuntimeError(f"Consul registration failed: {r.status} {await r.text()}")

        await _drive(o, res, ctx, xds, cp.pid, change, sampler, log)
        if o.floor:
            await _save_resources(http, api, os.path.join(state, "floor-resources.json"))
        if o.route_changes:
            await xds_extra.route_changes(o, res, ctx, http, api, log)
        if o.churn_rate:
            await xds_extra.churn(o, res, ctx, put, log)
        if o.restart:
            await xds_extra.restart(o, res, ctx, http, api, cmd, put, log)
        try:
            async with http.get(f"{api}/api/v1/proxies") as r:
                items = (await r.json()).get("items", [])
                res.connected = sum(1 for p in items if p.get("connected"))
        except (aiohttp.ClientError, ValueError):
            res.connected = -1


async def _drive(o: BenchOptions, res: BenchResult, ctx: _Ctx, xds: str, server_pid: int, change, sampler,
                 log, net: str = "127.1") -> None:
    """Start the load workers against `xds`, time the initial sync, then `o.changes` times: `change(k, address)`
    and the time until every stream has the new address; CPU and peak RSS of `server_pid`."""
    workers = ctx.workers
    cpu0 = proc_cpu_seconds(server_pid)
    res.cp_rss_before_mb = proc_rss_mb(server_pid)
    # workers
    n_w = max(1, min(o.workers, o.proxies))
    per = [o.proxies // n_w + (1 if k < o.proxies % n_w else 0) for k in range(n_w)]
    start = 0
    for cnt in per:
        mode = "delta" if o.delta else "sotw"
        if o.client == "native":
            from . import xds_native

            exe, why = xds_native.binary()
            if exe is None:
                raise RuntimeError(why)
            nodes = os.path.join(ctx.state, f"nodes-{net}-{start}.hex")
            xds_native.write_nodes(nodes, start, cnt, o.scoped, o.workloads)
            argv = [exe, xds, mode, str(start), str(cnt), nodes]
        else:
            argv = [o.python, "-m", "mizzen.bench.xds_load", "worker", xds, mode, str(start), str(cnt),
                    *(["scoped"] if o.scoped else []), f"workloads={o.workloads}"]
        p = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                 start_new_session=True, limit=64 * 1024 * 1024)
        workers.append(_WorkerProc(p, cnt))
        res.pids.append(p.pid)
        start += cnt
    starts, ends = [], []
    for w in workers:
        ev = await w.next_event(60)
        starts.append(ev["t"])
    for w in workers:
        while (ev := await w.next_event(o.timeout))["event"] == "progress":
            log(f"worker: {ev['synced']}/{ev['streams']} streams synced, {ev['responses']} responses, "
                f"{ev['reconnects']} reconnects, {ev['silent']} streams without any response {ev['states']}")
        assert ev["event"] == "synced", ev
        ends.append(max(ev["times"]))
        res.reconnects += ev["reconnects"]
        res.client_cpu_s += ev["cpu"]
    res.initial_sync_s = max(ends) - min(starts)
    res.client_cpu_sync_s = res.client_cpu_s
    cpu1 = proc_cpu_seconds(server_pid)
    res.cp_cpu_sync_s = cpu1 - cpu0
    log(f"{o.proxies} streams synced in {res.initial_sync_s:.2f} s")
    if sampler is not None:
        res.profiles["sync"] = sampler.stop()
    sampler = _profile(o, server_pid, "changes", log)
    cpu1 = proc_cpu_seconds(server_pid)

    client_cpu = 0.0
    for k in range(o.changes):
        address = f"{net}.{k // 250}.{k % 250 + 1}"
        t0 = time.monotonic()
        await change(k, address)
        for w in workers:
            await w.send({"cmd": "expect", "address": address, "timeout": 30})
        times: list[float] = []
        client_cpu = 0.0
        reconnects = 0
        for w in workers:
            ev = await w.next_event(60)
            assert ev["event"] == "seen", ev
            times += ev["times"]
            res.missing += ev["missing"]
            client_cpu += ev["cpu"]
            reconnects += ev["reconnects"]
        lat = [(t - t0) * 1000 for t in times]
        res.latencies_ms += lat
        if lat:
            res.all_ms.append(max(lat))
        log(f"change {k + 1}/{o.changes}: p50 {percentile(lat, 50):.1f} ms, all {max(lat) if lat else float('nan'):.1f} ms")
    res.client_cpu_s = client_cpu
    if o.changes:
        res.reconnects = reconnects
    cpu2 = proc_cpu_seconds(server_pid)
    res.cp_cpu_changes_s = cpu2 - cpu1
    if sampler is not None:
        res.profiles["changes"] = sampler.stop()
    res.cp_cpu_total_s = cpu2
    res.cp_peak_rss_mb = proc_peak_rss_mb(server_pid)


if __name__ == "__main__":  # worker processes: python -m mizzen.bench.xds_load worker XDS MODE START COUNT
    if len(sys.argv) >= 6 and sys.argv[1] == "worker":
        worker_entry(sys.argv[2:])
    else:
        print("usage: python -m mizzen.bench.xds_load worker XDS_ADDR sotw|delta START COUNT", file=sys.stderr)
        sys.exit(2)
