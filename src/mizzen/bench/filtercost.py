"""What each per-request feature of a sidecar's HCM costs Envoy, one at a time (issue 15 goal 1: "find what in
the generated config costs"); never pass/fail.

One Envoy (the proxy, `--concurrency 1`, on CPU 0) between `wrk -t1 -c4` and an app Envoy answering 200 with a
1 KiB body (both on CPU 1, so their work does not take the proxy's core). The proxy's HCM is built with the
generators the mesh uses (`telemetry/envoy.py`), one variant per proxy process, all started at once:

    bare       the router only
    tap        + the tap filter, inert (no admin session), as every sidecar HCM has it
    tracing    + the HCM's Zipkin tracer at 1 % (B3 + W3C), as the mesh default
    metrics    + Istio's metrics counted in Envoy (the stats access logger: 3 histograms with 3 tags, one of them
               packing the values Mizzen controls; + the sampled stream's runtime filter at 0 %), as the mesh default
    stream     + the per-request access-log stream of `access-log-stream` instead (to a receiver that drains it)
    default    tap + tracing + metrics: what a default sidecar HCM has per request

Each round runs every variant for `seconds` (the order alternates between rounds); the figure is the proxy's CPU
time per request (/proc, user + system) — steadier than throughput on a shared machine — as the median over the
rounds, and its ratio to `bare` of the same run.

    python -m mizzen.bench.filtercost [--seconds 5] [--rounds 4]

CPU time on a shared 2-core machine swings ±10 % between rounds; `--instructions N` instead runs each variant's
proxy under valgrind's callgrind and counts the instructions its busiest thread (the worker) executes for N
keep-alive requests after a warm-up: deterministic to within a fraction of a percent, blind to cache misses and
syscalls (the same for every variant here), and no load on the other helpers' timing runs beyond one core.

    python -m mizzen.bench.filtercost --instructions 2000
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from typing import Any

from ..envoybin import find_envoy
from ..local.procs import free_ports
from ..telemetry import envoy as tel
from ..telemetry import istio
from .telemetry import cpu_seconds

VARIANTS = ("bare", "tap", "tracing", "metrics", "stream", "default")
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def _addr(port: int) -> dict:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _cluster(name: str, port: int, grpc: bool = False) -> dict:
    c: dict[str, Any] = {"name": name, "type": "STATIC", "connect_timeout": "1s",
                         "load_assignment": {"cluster_name": name,
                                             "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _addr(port)}}]}]}}
    if grpc:
        c["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}
    return c


def _listener(port: int, hcm: dict) -> dict:
    return {"name": "l", "address": _addr(port),
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}]}


def proxy_config(variant: str, port: int, app_port: int, sink_port: int, admin_port: int = 0) -> dict:
    """The proxy's bootstrap for one variant (see the module docstring); admin on `admin_port` (0: any)."""
    filters = ([tel.tap_filter()] if variant in ("tap", "default") else []) + [ROUTER]
    hcm: dict[str, Any] = {"@type": HCM, "stat_prefix": "out", "http_filters": filters, "route_config": {
        "virtual_hosts": [{"name": "app", "domains": ["*"],
                           "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]}}
    if variant in ("tracing", "default"):
        hcm["tracing"] = tel.zipkin_tracing(1.0)  # spans to the bootstrap cluster mizzen-traces (the sink)
    if variant in ("metrics", "default"):
        hcm["access_log"] = [tel.native_metrics_log("outbound", authority=True),
                             tel.http_access_log("outbound", sampled=True)]
    if variant == "stream":
        hcm["access_log"] = [tel.http_access_log("outbound")]
    return {
        "admin": {"address": _addr(admin_port)},
        "stats_config": {"histogram_bucket_settings": tel.native_histogram_buckets(istio.DURATION_BUCKETS_MS,
                                                                                   istio.BYTES_BUCKETS)},
        "static_resources": {
            "listeners": [_listener(port, hcm)],
            "clusters": [_cluster("app", app_port), _cluster(tel.TRACES_CLUSTER, sink_port),
                         _cluster(tel.TELEMETRY_CLUSTER, sink_port, grpc=True)]}}


def app_config(port: int) -> dict:
    hcm = {"@type": HCM, "stat_prefix": "app", "http_filters": [ROUTER], "route_config": {"virtual_hosts": [{
        "name": "app", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "direct_response": {
            "status": 200, "body": {"inline_string": "x" * 1024}}}]}]}}
    return {"static_resources": {"listeners": [_listener(port, hcm)]}}


class _Sink:
    """A gRPC access-log receiver that drains every stream (so `stream` pays what a live agent makes it pay) and
    answers span exports 202; nothing is kept."""

    def __init__(self) -> None:
        import grpc
        from envoy.service.accesslog.v3 import als_pb2_grpc

        class Svc(als_pb2_grpc.AccessLogServiceServicer):
            def StreamAccessLogs(self, request_iterator, context):  # noqa: N802
                for _ in request_iterator:
                    pass
                from envoy.service.accesslog.v3 import als_pb2
                return als_pb2.StreamAccessLogsResponse()

        from concurrent import futures
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(Svc(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(0)


PIN = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def _on_cpu(cpu: int) -> list[str]:
    """The command prefix that runs a process on `cpu` (taskset: no fork handler runs in this process, which has
    gRPC threads), or nothing on a one-core machine."""
    return ["taskset", "-c", str(cpu)] if PIN else []


def run(seconds: float = 5.0, rounds: int = 4, variants: tuple[str, ...] = VARIANTS, log=print) -> dict:
    envoy = find_envoy()
    seconds = max(1, round(seconds))  # wrk takes whole seconds
    work = tempfile.mkdtemp(prefix="mizzen-bench-filtercost-")
    procs: list[subprocess.Popen] = []
    own = os.sched_getaffinity(0)
    if PIN:
        os.sched_setaffinity(0, {1})  # this process (the sink's threads, made next) off the proxies' core
    sink = _Sink()
    out: dict[str, list[float]] = {v: [] for v in variants}
    rps: dict[str, list[float]] = {v: [] for v in variants}
    try:
        def start(name: str, cfg: dict, cpu: int) -> subprocess.Popen:
            path = os.path.join(work, f"{name}.json")
            with open(path, "w") as f:
                json.dump(cfg, f)
            p = subprocess.Popen([*_on_cpu(cpu), envoy, "-c", path, "--concurrency", "1", "--disable-hot-restart",
                                  "--log-level", "error"], stdout=subprocess.DEVNULL,
                                 stderr=open(os.path.join(work, f"{name}.log"), "wb"))
            procs.append(p)
            return p
        app_port, *picked = free_ports(1 + len(variants))
        start("app", app_config(app_port), 1)
        ports = dict(zip(variants, picked))
        proxies = {v: start(v, proxy_config(v, ports[v], app_port, sink.port), 0) for v in variants}
        deadline = time.monotonic() + 20
        for v, port in ports.items():
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.5).close()
                    break
                except OSError:
                    if proxies[v].poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"proxy {v} did not start: {open(os.path.join(work, v + '.log')).read()[-2000:]}")
                    time.sleep(0.1)
        for v in variants:  # warm-up: connections, first stats
            subprocess.run([*_on_cpu(1), "wrk", "-t1", "-c4", "-d1s", f"http://127.0.0.1:{ports[v]}/"],
                           capture_output=True, timeout=30)
        for r in range(rounds):
            order = variants if r % 2 == 0 else tuple(reversed(variants))
            for v in order:
                c0 = cpu_seconds(proxies[v].pid)
                w = subprocess.run([*_on_cpu(1), "wrk", "-t1", "-c4", f"-d{seconds:g}s", f"http://127.0.0.1:{ports[v]}/"],
                                   capture_output=True, text=True, timeout=seconds + 30)
                c1 = cpu_seconds(proxies[v].pid)
                m = re.search(r"(\d+) requests in", w.stdout)
                n = int(m.group(1)) if m else 0
                if n:
                    out[v].append((c1 - c0) / n * 1e6)
                    rps[v].append(n / seconds)
                log(f"  round {r + 1} {v}: {n} requests, {out[v][-1] if n else float('nan'):.1f} µs/request")
    finally:
        for p in procs:
            p.kill()
            p.wait()
        sink.stop()
        os.sched_setaffinity(0, own)
        shutil.rmtree(work, ignore_errors=True)
    return {"seconds": seconds, "rounds": rounds, "us": out, "rps": rps, "pinned": PIN}


def _load(port: int, n: int) -> None:
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for _ in range(n):
            c.request("GET", "/", headers={"Host": "reviews:9080"})
            c.getresponse().read()
    finally:
        c.close()


def instructions(n: int = 2000, variants: tuple[str, ...] = VARIANTS, log=print) -> dict:
    """Instructions per request of each variant's busiest proxy thread, under callgrind (module docstring)."""
    envoy = find_envoy()
    work = tempfile.mkdtemp(prefix="mizzen-bench-filtercost-cg-")
    sink = _Sink()
    out: dict[str, float] = {}
    procs: list[subprocess.Popen] = []
    try:
        app_port, *picked = free_ports(1 + len(variants))
        with open(os.path.join(work, "app.json"), "w") as f:
            json.dump(app_config(app_port), f)
        procs.append(subprocess.Popen([envoy, "-c", os.path.join(work, "app.json"), "--concurrency", "1",
                                       "--disable-hot-restart", "--log-level", "error"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(app_port, procs[0], 20)
        for v, port in zip(variants, picked):
            path = os.path.join(work, f"{v}.json")
            with open(path, "w") as f:
                json.dump(proxy_config(v, port, app_port, sink.port), f)
            p = subprocess.Popen(["valgrind", "--tool=callgrind", "--separate-threads=yes",
                                  f"--callgrind-out-file={work}/cg.{v}.%p", envoy, "-c", path, "--concurrency", "1",
                                  "--disable-hot-restart", "--log-level", "error"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(p)
            try:
                _wait(port, p, 300)
                _load(port, 200)  # warm-up: connections, first stats, every series created
                subprocess.run(["callgrind_control", "-z", str(p.pid)], capture_output=True, timeout=120)
                _load(port, n)
                subprocess.run(["callgrind_control", "-d", str(p.pid)], capture_output=True, timeout=120)
            finally:
                p.terminate()
                p.wait(timeout=120)
            busiest = busiest_thread_instructions(work, v, p.pid)
            out[v] = busiest / n if busiest is not None else float("nan")
            log(f"  {v}: {out[v]:,.0f} instructions/request")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        sink.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {"requests": n, "instructions": out}


def busiest_thread_instructions(work: str, tag: str, pid: int) -> int | None:
    """The instructions of the busiest thread in callgrind's dump of `pid` (`--callgrind-out-file=WORK/cg.TAG.%p`
    with `--separate-threads=yes`: one file per thread), None if there is no dump."""
    counts = []
    for fn in glob.glob(f"{work}/cg.{tag}.{pid}.1-*"):
        with open(fn, errors="replace") as f:
            m = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
        if m:
            counts.append(int(m.group(1)))
    return max(counts) if counts else None


def _wait(port: int, p: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"port {port} did not open (exit {p.poll()})")
            time.sleep(0.2)


def instructions_markdown(r: dict) -> str:
    ins = r["instructions"]
    base = ins.get("bare")
    lines = ["| proxy HCM | instructions per request (worker thread) | vs bare |", "|---|---|---|"]
    lines += [f"| {v} | {x:,.0f} | {x / base:.2f}× |" if base else f"| {v} | {x:,.0f} | - |" for v, x in ins.items()]
    lines += ["", f"callgrind, {r['requests']} keep-alive HTTP/1.1 requests per variant after 200 of warm-up, one "
              "connection; the proxy's busiest thread. Variants: bench/filtercost.py docstring."]
    return "\n".join(lines)


def markdown(r: dict) -> str:
    base = statistics.median(r["us"]["bare"]) if r["us"].get("bare") else None
    lines = ["| proxy HCM | CPU µs per request, median (min–max) | vs bare | requests/s (median) |",
             "|---|---|---|---|"]
    for v, xs in r["us"].items():
        if not xs:
            continue
        med = statistics.median(xs)
        lines.append(f"| {v} | {med:.1f} ({min(xs):.1f}–{max(xs):.1f}) | "
                     f"{med / base:.2f}× | {statistics.median(r['rps'][v]):.0f} |" if base else "| - |")
    lines += ["", f"{r['rounds']} rounds of `wrk -t1 -c4 -d{r['seconds']:g}s` per variant, order alternating; "
              + ("the proxies on CPU 0, wrk and the app Envoy on CPU 1. " if r["pinned"] else "")
              + "Variants: " + "; ".join(f"{v}" for v in r["us"]) + " (bench/filtercost.py docstring)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--instructions", type=int, default=0, metavar="N",
                    help="count instructions per request under callgrind over N requests instead of CPU time")
    a = ap.parse_args(argv)
    if a.instructions:
        print(instructions_markdown(instructions(a.instructions, tuple(a.variants.split(",")))))
        return 0
    print(markdown(run(a.seconds, a.rounds, tuple(a.variants.split(",")))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
