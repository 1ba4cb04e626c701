"""Benchmark of `mizzen ratelimit` (part of `make bench`; never pass/fail).

A real RLS process on loopback, asked by P client processes × S concurrent gRPC streams each (what Envoy's
rate-limit filter does: one ShouldRateLimit per request, many in flight on one HTTP/2 connection per worker)
for a fixed time. Each request carries one descriptor over 1000 distinct keys of a limit that is rarely hit.
Reported: decisions/s, the RLS's own CPU seconds (from /proc) and decisions per RLS CPU-second (= per core),
p50/p99 latency seen by the clients. Baseline in the same run: descriptors naming no limit (the gRPC and
protobuf cost alone, no counter touched). Clients and RLS share the machine's cores.

Optional: added latency of a global limit through a real Envoy (wrk, closed loop, route with vs without the
rate-limit action), when wrk is installed.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from ..local.procs import free_ports

LIMITS = """
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: bench, namespace: b}
spec:
  host: app
  mode: global
  limits:
  - {name: tb, requestsPerUnit: 100000, unit: second, key: [{header: x-user}]}
  - {name: gcra, requestsPerUnit: 100000, unit: second, algorithm: gcra, key: [{header: x-user}]}
  - {name: sw, requestsPerUnit: 100000, unit: second, algorithm: sliding_window, key: [{header: x-user}]}
  - {name: env, requestsPerUnit: 1000000, unit: second}
"""


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}) before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _client(args: tuple[list[str], str, int, float, int]) -> tuple[int, int, list[float]]:
    targets, limit, streams, seconds, seed = args
    import grpc

    from ..ratelimit.wire import encode_descriptors

    target = targets[seed % len(targets)]
    reqs = [encode_descriptors("mizzen", [[("mizzen_limit", limit),
                                           ("header:x-user", f"user-{(seed * 7919 + i) % 1000}")]])
            for i in range(1000)]

    async def run() -> tuple[int, int, list[float]]:
        lat: list[float] = []
        errors = 0
        async with grpc.aio.insecure_channel(target) as ch:
            call = ch.unary_unary("/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit")  # raw bytes
            await call(reqs[0], timeout=5)
            end = time.monotonic() + seconds

            async def loop(k: int) -> None:
                nonlocal errors
                i = k
                while time.monotonic() < end:
                    t = time.perf_counter()
                    try:
                        await call(reqs[i % 1000], timeout=5)
                    except grpc.aio.AioRpcError:
                        errors += 1
                        continue
                    lat.append(time.perf_counter() - t)
                    i += streams
            await asyncio.gather(*(loop(k) for k in range(streams)))
        return len(lat), errors, lat

    return asyncio.run(run())


@dataclass
class Row:
    backend: str
    case: str
    procs: int
    streams: int
    decisions_s: float
    rls_cpu_s: float
    per_cpu_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000


def _measure(pids: list[int], targets: list[str], limit: str, procs: int, streams: int, seconds: float
             ) -> tuple[float, float, list[float], int, int]:
    """Client processes spread over `targets`; CPU is the sum over the service processes `pids`."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(procs) as pool:
        pool.map(_noop, range(procs))  # the pool's interpreters are up before the clock starts
        c0, t0 = sum(_cpu_seconds(p) for p in pids), time.monotonic()
        res = pool.map(_client, [(targets, limit, streams, seconds, k) for k in range(procs)])
        c1, t1 = sum(_cpu_seconds(p) for p in pids), time.monotonic()
    n = sum(r[0] for r in res)
    lat = [x for r in res for x in r[2]]
    return n / (t1 - t0), c1 - c0, lat, sum(r[1] for r in res), n


_ADMIN: dict[int, int] = {}  # gRPC port -> admin port of each service started


def _admin_stats(port: int) -> dict[str, Any]:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{_ADMIN[port]}/stats", timeout=5) as r:
            return json.load(r).get("service", {})
    except OSError:
        return {}


def _noop(_: int) -> None:
    import grpc  # noqa: F401  (imported once per client process, before the measurement)


class _Proc:
    def __init__(self, cmd: list[str], port: int, log: str):
        with open(log, "ab") as f:
            self.p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_port(port, self.p)
        except BaseException:  # never leave a process behind that nobody will stop
            self.stop()
            raise

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)


def _rls(workdir: str, redis_url: str | None, extra: tuple[str, ...] = ()) -> tuple[_Proc, int]:
    port, _ADMIN[port] = free_ports(2)
    if "--engine" not in extra:  # the Python variants below are the Python engine's, whatever auto would pick
        extra = ("--engine", "python", *extra)
    cmd = [sys.executable, "-m", "mizzen.cli.main", "ratelimit", "--limits", f"{workdir}/limits.yaml",
           "--port", f"127.0.0.1:{port}", "--admin-port", f"127.0.0.1:{_ADMIN[port]}", "--log-level", "warning",
           *extra]
    if redis_url:
        cmd += ["--redis", redis_url, "--redis-timeout", "1"]
    return _Proc(cmd, port, f"{workdir}/rls.log"), port


# The floor: a grpc.aio server whose handler returns an empty answer at once (raw bytes, no work at all).
_EMPTY = r'''
import asyncio, sys, grpc
async def main():
    s = grpc.aio.server(options=[("grpc.so_reuseport", 0), ("grpc.max_concurrent_streams", 10000)])
    async def call(req, ctx): return b""
    s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("envoy.service.ratelimit.v3.RateLimitService",
        {"ShouldRateLimit": grpc.unary_unary_rpc_method_handler(call)}),))
    s.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await s.start()
    await s.wait_for_termination()
asyncio.run(main())
'''

# (name, backend, rls processes, extra arguments); each measured with the same clients in the same run
VARIANTS: list[tuple[str, str, int, tuple[str, ...]]] = [
    ("empty grpc.aio handler (floor)", "none", 1, ()),
    ("protobuf codec (phase 1)", "memory", 1, ("--codec", "protobuf")),
    ("wire codec, generic handler", "memory", 1, ()),
    ("wire codec, sync server, 8 threads", "memory", 1, ("--server", "sync")),
    ("wire codec, a Redis call per decision", "redis", 1, ("--no-redis-batch",)),
    ("wire codec, Redis calls batched per loop turn", "redis", 1, ()),
    ("wire codec, batched, 2 processes on one Redis", "redis", 2, ()),
]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


@dataclass
class NativeRow:
    engine: str
    case: str
    streams: int
    decisions_s: float
    rls_cpu_s: float
    per_cpu_s: float
    client_cpu_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    over_limit: int
    rate: float = 0
    not_sent: int = 0


def native_compare(workdir: str, seconds: float, streams: int = 64, log=print) -> dict[str, Any]:
    """The native engine against the Python one, both driven by the native load client (`mizzen-rls --bench`:
    N concurrent ShouldRateLimit calls on one HTTP/2 connection, the request mix of the rows above: one
    descriptor over 1000 keys of `b/bench/tb`), bounded in time and count. RLS CPU: the serving process and its
    children (the native engine's binary under its Python supervisor), from /proc."""
    from .ratelimit_native import binary

    exe, why = binary()
    if exe is None:
        return {"skipped": why}
    if not os.path.exists(f"{workdir}/limits.yaml"):
        with open(f"{workdir}/limits.yaml", "w") as f:
            f.write(LIMITS)
    rows: list[NativeRow] = []
    labels = {"python": "python engine (grpc.aio, wire codec)", "native": "native engine, 1 thread"}
    # (streams, open-loop rate or 0 for closed loop) per engine: saturated, a fixed moderate rate, unloaded
    cases = {"python": [(streams, 0), (256, 1000), (1, 0)], "native": [(streams, 0), (256, 1000), (256, 10000), (1, 0)]}
    # the service on one CPU and the load client on another (when there are two), so that the client's work does
    # not queue the service's answers: the latency measured is the service's
    pin = (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")
    client_cpu = (lambda: os.sched_setaffinity(0, {1})) if pin else None
    for engine in ("python", "native"):
        proc, port = _rls(workdir, None, ("--engine", engine))
        try:
            pids = [proc.p.pid, *_children(proc.p.pid)]
            if pin:
                for pid in pids:
                    with contextlib.suppress(OSError):
                        for task in os.listdir(f"/proc/{pid}/task"):  # every thread, not only the main one
                            os.sched_setaffinity(int(task), {0})
            subprocess.run([exe, "--bench", "--target", f"127.0.0.1:{port}", "--streams", "4", "--seconds", "0.5"],
                           capture_output=True, timeout=60, preexec_fn=client_cpu)  # warm-up: connections
            for n, rate in cases[engine]:
                case = labels[engine] + (f", open loop {rate}/s" if rate else
                                         (", 1 stream (unloaded latency)" if n == 1 else ", closed loop"))
                log(f"  rls {case}: native client, {n} stream(s), {seconds:g} s")
                ru0 = os.times()
                c0 = sum(_cpu_seconds(p) for p in pids)
                out = subprocess.run([exe, "--bench", "--target", f"127.0.0.1:{port}", "--streams", str(n),
                                      "--rate", str(rate), "--seconds", str(seconds), "--max-requests", "5000000"],
                                     capture_output=True, text=True, timeout=seconds + 60, preexec_fn=client_cpu)
                c1 = sum(_cpu_seconds(p) for p in pids)
                ru1 = os.times()
                if out.returncode != 0:
                    raise RuntimeError(f"mizzen-rls --bench failed: {out.stderr.strip()}")
                res = json.loads(out.stdout.strip().splitlines()[-1])
                cpu = c1 - c0
                rows.append(NativeRow(engine, case, n, res["rate"], cpu, res["requests"] / cpu if cpu else float("nan"),
                                      (ru1.children_user + ru1.children_system) - (ru0.children_user + ru0.children_system),
                                      res["p50_ms"], res["p99_ms"], res["errors"], res["over_limit"], rate,
                                      res.get("not_sent", 0)))
        finally:
            proc.stop()
    return {"rows": rows, "streams": streams, "pinned": pin}


def native_markdown(native: dict[str, Any], seconds: float) -> str:
    if "skipped" in native:
        return f"Native engine not measured: {native['skipped']}"
    rows: list[NativeRow] = native["rows"]
    base = {(r.streams, r.rate): r for r in rows if r.engine == "python"}
    lines = ["| engine, load | client streams | decisions/s | RLS CPU s | decisions per RLS CPU-s (per core) | vs python | "
             "client CPU s | p50 ms | p99 ms | errors | not sent (open loop behind) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b = base.get((r.streams, r.rate))
        ratio = f"{r.per_cpu_s / b.per_cpu_s:.1f}×" if b and b.per_cpu_s == b.per_cpu_s and b.per_cpu_s else "-"
        lines.append(f"| {r.case} | {r.streams} | {r.decisions_s:.0f} | {r.rls_cpu_s:.2f} | {r.per_cpu_s:.0f} | {ratio} | "
                     f"{r.client_cpu_s:.2f} | {r.p50_ms:.3f} | {r.p99_ms:.3f} | {r.errors} | {r.not_sent} |")
    lines += ["", f"{seconds:g} s per case, the same native load client (`mizzen-rls --bench`, one HTTP/2 connection) for "
              "both engines, in memory, the request mix above (one descriptor, 1000 keys of a limit never reached). "
              "Closed loop: that many calls in flight, a new one as each completes (saturation: p50/p99 are queueing); "
              "open loop: one call every 1/rate s, at most 256 in flight. "
              + ("The RLS (every thread) runs on CPU 0 and the client on CPU 1, so the client's work does not delay "
                 "the answers; " if native.get("pinned") else
                 f"The client and the RLS share the machine's {os.cpu_count()} cores; ")
              + "decisions/s is bounded by both; decisions per RLS CPU-second is the service's own "
              "capacity per core (native: the binary's CPU plus its idle Python supervisor's)."]
    return "\n".join(lines)


def run(seconds: float = 5.0, procs: int = 2, streams: int = 32, log=print, native_only: bool = False
        ) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="mizzen-rl-bench-")
    if native_only:
        try:
            return {"rows": [], "seconds": seconds, "native": native_compare(workdir, seconds, log=log),
                    "load": os.getloadavg()[0]}
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    rows: list[Row] = []
    extra: dict[str, Any] = {}
    redis = None
    try:
        with open(f"{workdir}/limits.yaml", "w") as f:
            f.write(LIMITS)
        redis_url = None
        if shutil.which("redis-server"):
            rport = free_ports(1)[0]
            redis = _Proc(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no", "--dir", workdir], rport, f"{workdir}/redis.log")
            redis_url = f"redis://127.0.0.1:{rport}/0"
        for name, backend, n, args in VARIANTS:
            if backend == "redis" and redis_url is None:
                continue
            servers: list[tuple[_Proc, int]] = []
            try:
                for _ in range(n):
                    if backend == "none":
                        port = free_ports(1)[0]
                        servers.append((_Proc([sys.executable, "-c", _EMPTY, str(port)], port,
                                              f"{workdir}/empty.log"), port))
                    else:
                        servers.append(_rls(workdir, redis_url if backend == "redis" else None, args))
                pids, targets = [p.p.pid for p, _ in servers], [f"127.0.0.1:{port}" for _, port in servers]
                log(f"  rls {name} ({backend}): {procs}×{streams} streams, {seconds:g} s")
                rate, cpu, lat, errs, count = _measure(pids, targets, "b/bench/tb", procs, streams, seconds)
                label = name
                if backend == "redis" and "--no-redis-batch" not in args:
                    b = [_admin_stats(port) for _, port in servers]
                    n_b = sum(x.get("redis_batches", 0) for x in b)
                    label += f" (mean batch {sum(x.get('redis_batched', 0) for x in b) / n_b:.1f})" if n_b else ""
                rows.append(Row(backend, label, procs, streams, rate, cpu, count / cpu if cpu else float("nan"),
                                _pct(lat, 0.5), _pct(lat, 0.99), errs))
                if name.startswith("wire codec, generic") :
                    rate, cpu, lat, errs, count = _measure(pids, targets, "b/bench/tb", 1, 1, seconds)
                    rows.append(Row(backend, "wire codec, 1 stream (unloaded latency)", 1, 1, rate, cpu,
                                    count / cpu if cpu else float("nan"), _pct(lat, 0.5), _pct(lat, 0.99), errs))
                    extra["envoy"] = _envoy_added_latency(workdir, servers[0][1], seconds)
            finally:
                for p, _ in servers:
                    p.stop()
        extra["native"] = native_compare(workdir, seconds, log=log)
    finally:
        if redis is not None:
            redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return {"rows": rows, "seconds": seconds, "load": os.getloadavg()[0], **extra}


def _envoy_added_latency(workdir: str, rls_port: int, seconds: float) -> dict[str, Any] | None:
    """wrk through a real Envoy: a route with the rate-limit action vs one without, same Envoy, same run."""
    if not shutil.which("wrk"):
        return None
    from ..envoybin import find_envoy

    lport, aport, eport = free_ports(3)
    app = _Proc([sys.executable, "-c", _APP, str(aport)], aport, f"{workdir}/app.log")
    cfg = _envoy_config(lport, aport, rls_port)
    with open(f"{workdir}/envoy.json", "w") as f:
        json.dump(cfg, f)
    env = _Proc([find_envoy(), "-c", f"{workdir}/envoy.json", "--concurrency", "1", "--base-id", str(eport),
                 "--disable-hot-restart", "--log-level", "warning"], lport, f"{workdir}/envoy.log")
    out: dict[str, Any] = {}
    try:
        for path in ("/free", "/limited", "/free", "/limited"):
            r = subprocess.run(["wrk", "-t1", "-c4", f"-d{int(seconds)}s", "--latency",
                                f"http://127.0.0.1:{lport}{path}"], capture_output=True, text=True,
                               timeout=seconds + 30)
            out[path] = _parse_wrk(r.stdout)  # the second run of each wins (first warms up)
    finally:
        env.stop()
        app.stop()
    return out


_APP = r'''
import asyncio, sys
from aiohttp import web
async def h(r): return web.Response(text="ok")
app = web.Application(); app.router.add_get("/{t:.*}", h)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
'''


def _envoy_config(lport: int, aport: int, rls_port: int) -> dict[str, Any]:
    def cluster(name: str, port: int, h2: bool) -> dict[str, Any]:
        c: dict[str, Any] = {"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
            "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": port}}}}]}]}}
        if h2:
            c["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}
        return c
    rl = [{"actions": [{"generic_key": {"descriptor_key": "mizzen_limit", "descriptor_value": "b/bench/env"}}]}]
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                    "HttpConnectionManager", "stat_prefix": "in",
           "http_filters": [
               {"name": "envoy.filters.http.ratelimit", "typed_config": {
                   "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
                   "domain": "mizzen", "timeout": "0.5s", "rate_limit_service": {
                       "transport_api_version": "V3", "grpc_service": {"envoy_grpc": {"cluster_name": "rls"}}}}},
               {"name": "envoy.filters.http.router", "typed_config": {
                   "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
               {"match": {"prefix": "/limited"}, "route": {"cluster": "app", "rate_limits": rl}},
               {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]}}
    return {"static_resources": {
        "listeners": [{"name": "in", "address": {"socket_address": {"address": "127.0.0.1", "port_value": lport}},
                       "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                       "typed_config": hcm}]}]}],
        "clusters": [cluster("app", aport, False), cluster("rls", rls_port, True)]}}


def _ms(v: str, unit: str) -> float:
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _parse_wrk(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        out["rps"] = float(m.group(1))
    for p in ("50", "99"):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if m:
            out[f"p{p}"] = _ms(m.group(1), m.group(2))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["non2xx"] = float(m.group(1)) if m else 0.0
    return out


def markdown(result: dict[str, Any]) -> str:
    rows: list[Row] = result["rows"]
    native = result.get("native")
    if not rows and native:
        return ("Native engine vs Python engine (`mizzen ratelimit --engine native|python`):\n\n"
                + native_markdown(native, result["seconds"]) + f"\n\nLoad average {result.get('load', 0):.1f} at the end.")
    base = next((r for r in rows if r.case.startswith("empty")), None)
    lines = ["| counters | server | client procs × streams | answers/s | RLS CPU s | answers per RLS CPU-s "
             "(per core) | vs empty handler | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r.per_cpu_s / base.per_cpu_s:.2f}" if base and base.per_cpu_s == base.per_cpu_s else "-"
        lines.append(f"| {r.backend} | {r.case} | {r.procs} × {r.streams} | {r.decisions_s:.0f} | "
                     f"{r.rls_cpu_s:.2f} | {r.per_cpu_s:.0f} | {ratio} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} |")
    lines.append("")
    lines.append(f"{result['seconds']:g} s per case; load average {result.get('load', 0):.1f} at the end; clients and "
                 f"the RLS share the machine's {os.cpu_count()} cores "
                 "(the clients' Python gRPC costs more CPU than the RLS, so decisions/s is client-bound; decisions "
                 "per RLS CPU-second is the service's own capacity per core). The reference Go service "
                 "(envoyproxy/ratelimit) cannot be installed here (no Go module downloads), so it is not compared.")
    env = result.get("envoy")
    if env:
        f, lim = env.get("/free", {}), env.get("/limited", {})
        lines += ["", "Added latency of a global limit through one real Envoy (wrk -t1 -c4, closed loop, same Envoy "
                  "and run; the limited route calls the in-memory RLS):", "",
                  "| route | requests/s | p50 ms | p99 ms | non-2xx |", "|---|---|---|---|---|",
                  f"| no limit | {f.get('rps', 0):.0f} | {f.get('p50', 0):.2f} | {f.get('p99', 0):.2f} | "
                  f"{f.get('non2xx', 0):.0f} |",
                  f"| global limit (RLS call) | {lim.get('rps', 0):.0f} | {lim.get('p50', 0):.2f} | "
                  f"{lim.get('p99', 0):.2f} | {lim.get('non2xx', 0):.0f} |", "",
                  f"Added p50: {lim.get('p50', 0) - f.get('p50', 0):.2f} ms (one hop, closed loop; the two-hop "
                  "figure at a fixed 1000 rps through a mesh is bench/ratelimit_mesh.py)."]
    if native:
        lines += ["", "Native engine vs Python engine (`mizzen ratelimit --engine native|python`):", "",
                  native_markdown(native, result["seconds"])]
    return "\n".join(lines)


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--streams", type=int, default=32)
    ap.add_argument("--output")
    ap.add_argument("--native-only", action="store_true", help="only the native engine vs the Python one")
    a = ap.parse_args()
    md = markdown(run(a.seconds, a.procs, a.streams, native_only=a.native_only))
    print(md)
    if a.output:
        import datetime
        import platform

        with open(a.output, "a") as f:
            f.write(f"\n## {datetime.datetime.now().isoformat(timespec='seconds')} — {platform.node()}, "
                    f"{os.cpu_count()} cores, Python {platform.python_version()}\n\n"
                    f"Command: `python -m mizzen.server.ratelimit_bench --seconds {a.seconds:g} --procs {a.procs} "
                    f"--streams {a.streams}{' --native-only' if a.native_only else ''}` (the rate-limit part of "
                    "`make bench`, run alone)\n\n"
                    "### Rate-limit service (mizzen ratelimit)\n\n" + md + "\n")


if __name__ == "__main__":
    main()
