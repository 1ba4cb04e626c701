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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
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


def _client(args: tuple[str, str, int, float, int]) -> tuple[int, int, list[float]]:
    target, limit, streams, seconds, seed = args
    import grpc
    from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
    from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

    reqs = [rls_pb2.RateLimitRequest(domain="mizzen", descriptors=[ratelimit_pb2.RateLimitDescriptor(entries=[
        ratelimit_pb2.RateLimitDescriptor.Entry(key="mizzen_limit", value=limit),
        ratelimit_pb2.RateLimitDescriptor.Entry(key="header:x-user", value=f"user-{(seed * 7919 + i) % 1000}")])])
        for i in range(1000)]

    async def run() -> tuple[int, int, list[float]]:
        lat: list[float] = []
        errors = 0
        async with grpc.aio.insecure_channel(target) as ch:
            stub = rls_pb2_grpc.RateLimitServiceStub(ch)
            await stub.ShouldRateLimit(reqs[0], timeout=5)
            end = time.monotonic() + seconds

            async def loop(k: int) -> None:
                nonlocal errors
                i = k
                while time.monotonic() < end:
                    t = time.perf_counter()
                    try:
                        await stub.ShouldRateLimit(reqs[i % 1000], timeout=5)
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


def _measure(pid: int, target: str, limit: str, procs: int, streams: int, seconds: float) -> tuple[float, float, list[float], int, int]:
    ctx = mp.get_context("spawn")
    with ctx.Pool(procs) as pool:
        c0, t0 = _cpu_seconds(pid), time.monotonic()
        res = pool.map(_client, [(target, limit, streams, seconds, k) for k in range(procs)])
        c1, t1 = _cpu_seconds(pid), time.monotonic()
    n = sum(r[0] for r in res)
    lat = [x for r in res for x in r[2]]
    return n / (t1 - t0), c1 - c0, lat, sum(r[1] for r in res), n


class _Proc:
    def __init__(self, cmd: list[str], port: int, log: str):
        with open(log, "ab") as f:
            self.p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_port(port, self.p)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)


def _rls(workdir: str, redis_url: str | None) -> tuple[_Proc, int]:
    port = _free_port()
    cmd = [sys.executable, "-m", "mizzen.cli.main", "ratelimit", "--limits", f"{workdir}/limits.yaml",
           "--port", f"127.0.0.1:{port}", "--log-level", "warning"]
    if redis_url:
        cmd += ["--redis", redis_url, "--redis-timeout", "1"]
    return _Proc(cmd, port, f"{workdir}/rls.log"), port


def run(seconds: float = 5.0, procs: int = 2, streams: int = 32, log=print) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="mizzen-rl-bench-")
    rows: list[Row] = []
    extra: dict[str, Any] = {}
    try:
        with open(f"{workdir}/limits.yaml", "w") as f:
            f.write(LIMITS)
        backends: list[tuple[str, str | None]] = [("memory", None)]
        redis = None
        if shutil.which("redis-server"):
            rport = _free_port()
            redis = _Proc(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no", "--dir", workdir], rport, f"{workdir}/redis.log")
            backends.append(("redis", f"redis://127.0.0.1:{rport}/0"))
        try:
            for backend, url in backends:
                rls, port = _rls(workdir, url)
                try:
                    cases = [("baseline (no limit)", "b/none/x"), ("token_bucket", "b/bench/tb"),
                             ("gcra", "b/bench/gcra"), ("sliding_window", "b/bench/sw")]
                    for case, limit in cases if backend == "memory" else cases[1:3]:
                        log(f"  rls {backend}: {case}, {procs}×{streams} streams, {seconds:g} s")
                        rate, cpu, lat, errs, n = _measure(rls.p.pid, f"127.0.0.1:{port}", limit, procs, streams,
                                                           seconds)
                        rows.append(Row(backend, case, procs, streams, rate, cpu, n / cpu if cpu else float("nan"),
                                        _pct(lat, 0.5), _pct(lat, 0.99), errs))
                    # latency when not saturated: one client, one stream
                    rate, cpu, lat, errs, n = _measure(rls.p.pid, f"127.0.0.1:{port}", "b/bench/tb", 1, 1, seconds)
                    rows.append(Row(backend, "token_bucket, 1 stream", 1, 1, rate, cpu,
                                    n / cpu if cpu else float("nan"), _pct(lat, 0.5), _pct(lat, 0.99), errs))
                    if backend == "memory":
                        extra["envoy"] = _envoy_added_latency(workdir, port, seconds)
                finally:
                    rls.stop()
        finally:
            if redis is not None:
                redis.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"rows": rows, "seconds": seconds, "load": os.getloadavg()[0], **extra}


def _envoy_added_latency(workdir: str, rls_port: int, seconds: float) -> dict[str, Any] | None:
    """wrk through a real Envoy: a route with the rate-limit action vs one without, same Envoy, same run."""
    if not shutil.which("wrk"):
        return None
    from ..envoybin import find_envoy

    lport, aport, eport = _free_port(), _free_port(), _free_port()
    app = _Proc([sys.executable, "-c", _APP, str(aport)], aport, f"{workdir}/app.log")
    cfg = _envoy_config(lport, aport, rls_port)
    with open(f"{workdir}/envoy.json", "w") as f:
        json.dump(cfg, f)
    env = _Proc([find_envoy(), "-c", f"{workdir}/envoy.json", "--concurrency", "1", "--base-id", str(eport),
                 "--log-level", "warning"], lport, f"{workdir}/envoy.log")
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
    base = next((r for r in rows if r.case.startswith("baseline")), None)
    lines = ["| backend | case | client procs × streams | decisions/s | vs baseline | RLS CPU s | decisions per RLS "
             "CPU-s (per core) | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r.decisions_s / base.decisions_s:.2f}" if base and r.streams == base.streams else "-"
        lines.append(f"| {r.backend} | {r.case} | {r.procs} × {r.streams} | {r.decisions_s:.0f} | {ratio} | "
                     f"{r.rls_cpu_s:.2f} | {r.per_cpu_s:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} |")
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
                  f"Added p50: {lim.get('p50', 0) - f.get('p50', 0):.2f} ms. (The two-hop mesh figure at 1000 rps "
                  "needs the sidecar integration of phase 2.)"]
    return "\n".join(lines)


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--streams", type=int, default=32)
    ap.add_argument("--output")
    a = ap.parse_args()
    md = markdown(run(a.seconds, a.procs, a.streams))
    print(md)
    if a.output:
        import datetime
        import platform

        with open(a.output, "a") as f:
            f.write(f"\n## {datetime.datetime.now().isoformat(timespec='seconds')} — {platform.node()}, "
                    f"{os.cpu_count()} cores, Python {platform.python_version()}\n\n"
                    f"Command: `python -m mizzen.server.ratelimit_bench --seconds {a.seconds:g} --procs {a.procs} "
                    f"--streams {a.streams}` (the rate-limit part of `make bench`, run alone)\n\n"
                    "### Rate-limit service (mizzen ratelimit)\n\n" + md + "\n")


if __name__ == "__main__":
    main()
