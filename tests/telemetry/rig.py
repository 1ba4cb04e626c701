"""Two sidecar Envoys and an app Envoy from static bootstraps, on distinct loopback addresses, with the
telemetry config of `mizzen.telemetry.envoy` switched on or off. Used by the e2e tests and by `cost.py`.

    client --> A (productpage's sidecar, 127.0.0.2, outbound) --> B (reviews-v1's sidecar, 127.0.0.3, inbound)
           --> app (127.0.0.4, an Envoy answering 200 itself)

A's upstream connections leave from 127.0.0.2 (upstream_bind_config), so B sees its caller's address, as
in a mesh where every pod has its own IP.
"""
from __future__ import annotations

import http.server
import json
import os
import threading
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mizzen.telemetry import envoy as tenvoy
from mizzen.telemetry import istio
from tests.envoy_bin import envoy_binary

A_IP, B_IP, APP_IP = "127.0.0.2", "127.0.0.3", "127.0.0.4"
REVIEWS = "reviews.default.svc.cluster.local"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

INSTANCES = [
    {"id": "default.productpage-v1-0", "namespace": "default", "workload": "productpage-v1", "address": A_IP,
     "ports": [9080], "labels": {"app": "productpage", "version": "v1"}, "serviceAccount": "bookinfo-productpage"},
    {"id": "default.reviews-v1-0", "namespace": "default", "workload": "reviews-v1", "address": B_IP,
     "ports": [9080], "labels": {"app": "reviews", "version": "v1"}, "serviceAccount": "bookinfo-reviews"},
]
SERVICES = [
    {"name": "productpage", "namespace": "default", "hostname": "productpage.default.svc.cluster.local",
     "vip": "10.96.0.10", "ports": [{"port": 9080, "name": "http", "protocol": "HTTP"}]},
    {"name": "reviews", "namespace": "default", "hostname": REVIEWS, "vip": "10.96.0.11",
     "ports": [{"port": 9080, "name": "http", "protocol": "HTTP"}]},
]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class Options:
    metrics: bool = False  # access-log stream to each sidecar's receiver
    native_metrics: bool = False  # Istio's metrics counted inside Envoy (the envoy-stats provider)
    tracing: str = ""  # "" | "otel" | "zipkin"
    sampling: float = 100.0
    tap: bool = False
    telemetry_sockets: tuple[str, str] = ("", "")  # A's and B's receiver sockets
    traces_address: dict = field(default_factory=dict)  # Envoy address of the trace receiver
    flush_interval: str = "1s"
    echo_app: bool = False  # the app is a Python server echoing the request headers it got (JSON)


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _hcm(name: str, direction: str, route: dict, opts: Options, service: str) -> dict:
    cfg: dict = {"@type": HCM, "stat_prefix": name, "codec_type": "AUTO", "route_config": route,
                 "http_filters": ([tenvoy.tap_filter()] if opts.tap else []) + [ROUTER]}
    if opts.native_metrics:  # as translate/filters/stats.py: the native counts + the stream sampled for top
        cfg["access_log"] = [tenvoy.native_metrics_log(direction, authority=direction == "outbound")] + ([tenvoy.http_access_log(
            direction, flush_interval=opts.flush_interval, sampled=True)] if opts.metrics else [])
    elif opts.metrics:
        cfg["access_log"] = [tenvoy.http_access_log(direction, flush_interval=opts.flush_interval)]
    if opts.tracing == "otel":
        cfg["tracing"] = tenvoy.otel_tracing(service, opts.sampling)
    elif opts.tracing == "zipkin":
        cfg["tracing"] = tenvoy.zipkin_tracing(opts.sampling)
    if direction == "outbound" and opts.tracing:
        cfg["tracing"]["spawn_upstream_span"] = False
    return cfg


def _listener(name: str, ip: str, port: int, hcm: dict, direction: str = "UNSPECIFIED") -> dict:
    # Envoy names span kinds from the listener's direction: OUTBOUND -> CLIENT (egress), INBOUND -> SERVER
    return {"name": name, "address": {"socket_address": {"address": ip, "port_value": port}},
            "traffic_direction": direction,
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}]}


def _cluster(name: str, ip: str, port: int, bind: str | None = None) -> dict:
    c = {"name": name, "type": "STATIC", "connect_timeout": "1s",
         "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
             {"endpoint": {"address": {"socket_address": {"address": ip, "port_value": port}}}}]}]}}
    if bind:
        c["upstream_bind_config"] = {"source_address": {"address": bind, "port_value": 0}}
    return c


def _bootstrap(node: str, admin_port: int, listeners: list, clusters: list, opts: Options, sock: str) -> dict:
    clusters = list(clusters)
    if opts.metrics:
        clusters.append(tenvoy.grpc_unix_cluster(tenvoy.TELEMETRY_CLUSTER, sock))
    if opts.tracing == "otel":
        clusters.append(tenvoy.grpc_cluster(tenvoy.TRACES_CLUSTER, opts.traces_address))
    elif opts.tracing == "zipkin":
        clusters.append(tenvoy.http_cluster(tenvoy.TRACES_CLUSTER, opts.traces_address))
    boot: dict = {} if not opts.native_metrics else {  # as the sidecar's bootstrap (agent/bootstrap.py)
        "stats_config": {"histogram_bucket_settings": (
            tenvoy.native_histogram_buckets(istio.DURATION_BUCKETS_MS, istio.BYTES_BUCKETS))},
        "layered_runtime": {"layers": [{"name": "admin", "admin_layer": {}}]}}
    return {**boot, "node": {"id": node, "cluster": node.split("~")[0]},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
            "static_resources": {"listeners": listeners, "clusters": clusters}}


class Rig:
    """Start with `with Rig(opts) as rig:`; `rig.url` is the client's entry (A's outbound listener)."""

    def __init__(self, opts: Options, work: str | None = None) -> None:
        self.opts = opts
        self.work = work or tempfile.mkdtemp(prefix="mizzen-telemetry-rig-")
        self._own_work = work is None
        self.procs: list[subprocess.Popen] = []
        self.by_name: dict[str, subprocess.Popen] = {}
        self.pa, self.pb, self.papp = free_port(A_IP), free_port(B_IP), free_port(APP_IP)
        self.admin = {k: free_port() for k in ("a", "b", "app")}
        self.url = f"http://{A_IP}:{self.pa}/"
        self._echo: http.server.ThreadingHTTPServer | None = None

    def configs(self) -> dict[str, dict]:
        o = self.opts
        app_route = {"virtual_hosts": [{"name": "app", "domains": ["*"], "routes": [
            {"match": {"prefix": "/grpcfail"}, "direct_response": {"status": 200},
             "response_headers_to_add": [{"header": {"key": "grpc-status", "value": "14"}}]},
            {"match": {"prefix": "/fail"}, "direct_response": {"status": 503, "body": {"inline_string": "no"}}},
            {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}]}]}
        app_hcm = {"@type": HCM, "stat_prefix": "app", "route_config": app_route, "http_filters": [ROUTER]}
        a_route = {"name": "9080", "virtual_hosts": [{"name": f"{REVIEWS}:9080", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": f"outbound|9080|v1|{REVIEWS}"}}]}]}
        b_route = {"name": "inbound|9080||", "virtual_hosts": [{"name": "inbound", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "inbound|9080||"}}]}]}
        sa, sb = o.telemetry_sockets
        return {
            "app": _bootstrap("app~", self.admin["app"], [_listener("app", APP_IP, self.papp, app_hcm)], [], Options(), ""),
            "a": _bootstrap("productpage-v1~a", self.admin["a"],
                            [_listener("virtualOutbound", A_IP, self.pa, _hcm("outbound_9080", "outbound", a_route, o,
                                                                                "productpage.default"), "OUTBOUND")],
                            [_cluster(f"outbound|9080|v1|{REVIEWS}", B_IP, self.pb, bind=A_IP)], o, sa),
            "b": _bootstrap("reviews-v1~b", self.admin["b"],
                            [_listener("virtualInbound", B_IP, self.pb, _hcm("inbound_9080", "inbound", b_route, o,
                                                                               "reviews.default"), "INBOUND")],
                            [_cluster("inbound|9080||", APP_IP, self.papp)], o, sb),
        }

    def __enter__(self) -> "Rig":
        try:
            binary = envoy_binary()
            configs = self.configs()
            if self.opts.echo_app:
                self._echo = http.server.ThreadingHTTPServer((APP_IP, self.papp), _Echo)
                threading.Thread(target=self._echo.serve_forever, daemon=True).start()
                del configs["app"]
                del self.admin["app"]
            for name, cfg in configs.items():
                path = os.path.join(self.work, f"{name}.yaml")
                Path(path).write_text(yaml.safe_dump(cfg, sort_keys=False))
                log = open(os.path.join(self.work, f"{name}.log"), "wb")
                proc = subprocess.Popen(
                    [binary, "-c", path, "--concurrency", "1", "--base-id", str(free_port() % 60000 + 1000),
                     "--log-level", "warning", "--disable-hot-restart"], stdout=log, stderr=subprocess.STDOUT)
                self.procs.append(proc)
                self.by_name[name] = proc
            self.wait_ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        for name, port in self.admin.items():
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                        if r.read().strip() == b"LIVE":
                            break
                except OSError:
                    pass
                for p in self.procs:
                    if p.poll() is not None:
                        raise RuntimeError(f"envoy exited: {self.logs()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"envoy {name} not LIVE: {self.logs()}")
                time.sleep(0.1)

    def logs(self) -> str:
        out = []
        for name in ("a", "b", "app"):
            p = os.path.join(self.work, f"{name}.log")
            if os.path.exists(p):
                out.append(f"--- {name}\n" + Path(p).read_text()[-3000:])
        return "\n".join(out)

    def admin_get(self, who: str, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin[who]}{path}", timeout=5) as r:
            return r.read().decode()

    def get(self, path: str = "/", headers: dict | None = None) -> tuple[int, dict, str]:
        req = urllib.request.Request(self.url.rstrip("/") + path, headers={"Host": "reviews:9080", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()
        if self._echo is not None:
            self._echo.shutdown()
            self._echo.server_close()
            self._echo = None
        if self._own_work:
            shutil.rmtree(self.work, ignore_errors=True)


def dump(obj: object) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)
