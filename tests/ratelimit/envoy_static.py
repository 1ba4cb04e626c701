"""A test-local Envoy with a static bootstrap: header_mutation (strips client-sent x-envoy-fault-*) →
envoy.filters.http.ratelimit (gRPC to the RLS) → fault (header delay) → router, in front of a tiny upstream.
Phase 2 generates the same chain through translate/filters; this is the reference it must reproduce."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from mizzen.local.procs import free_ports
from tests.envoy_bin import envoy_binary

from .procs import wait_port

UPSTREAM = r'''
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("ok " + self.path + " fault=" + str(self.headers.get("x-envoy-fault-delay-request"))).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer.daemon_threads = True
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''


def route(prefix: str, limit: str | None, *, header_key: str | None = None,
          class_header: str | None = None) -> dict[str, Any]:
    # the router drops the RLS's delay header after the fault filter has read it: the app never sees it
    r: dict[str, Any] = {"match": {"prefix": prefix}, "route": {"cluster": "app"},
                         "request_headers_to_remove": ["x-envoy-fault-delay-request"]}
    if limit:
        actions: list[dict[str, Any]] = [{"generic_key": {"descriptor_key": "mizzen_limit", "descriptor_value": limit}}]
        if header_key:
            actions.append({"request_headers": {"header_name": header_key, "descriptor_key": f"header:{header_key}",
                                                "skip_if_absent": True}})
        if class_header:
            actions.append({"request_headers": {"header_name": class_header, "descriptor_key": "mizzen_class",
                                                "skip_if_absent": True}})
        r["route"]["rate_limits"] = [{"actions": actions}]
    return r


def bootstrap(listen_port: int, app_port: int, rls_port: int, routes: list[dict[str, Any]], *,
              max_active_faults: int = 100, rls_timeout: str = "1s", failure_mode_deny: bool = False,
              admin_port: int = 0) -> dict[str, Any]:
    h2 = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}}}}

    def cluster(name: str, port: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"name": name, "type": "STATIC", "connect_timeout": "1s", **(extra or {}),
                "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}

    filters = [
        {"name": "envoy.filters.http.header_mutation", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [{"remove": h} for h in (
                "x-envoy-fault-delay-request", "x-envoy-fault-delay-request-percentage",
                "x-envoy-fault-abort-request", "x-envoy-fault-abort-grpc-request",
                "x-envoy-fault-abort-request-percentage", "x-envoy-fault-throughput-response",
                "x-envoy-fault-throughput-response-percentage")]}}},
        {"name": "envoy.filters.http.ratelimit", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            "domain": "mizzen", "timeout": rls_timeout, "failure_mode_deny": failure_mode_deny,
            "rate_limit_service": {"transport_api_version": "V3",
                                   "grpc_service": {"envoy_grpc": {"cluster_name": "rls"}}}}},
        {"name": "envoy.filters.http.fault", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            "delay": {"header_delay": {}, "percentage": {"numerator": 100, "denominator": "HUNDRED"}},
            "max_active_faults": max_active_faults}},
        {"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
    ]
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{"name": "in", "address": {"socket_address": {"address": "127.0.0.1",
                                                                        "port_value": listen_port}},
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                           "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                         "HttpConnectionManager",
                "stat_prefix": "in", "http_filters": filters,
                "route_config": {"name": "r", "virtual_hosts": [{"name": "all", "domains": ["*"],
                                                                 "routes": routes}]}}}]}]}],
            "clusters": [cluster("app", app_port), cluster("rls", rls_port, {"typed_extension_protocol_options": h2})],
        },
    }


class StaticEnvoy:
    def __init__(self, workdir: str, rls_port: int, routes: list[dict[str, Any]], **kw: Any):
        self.workdir = workdir
        self.port, self.app_port, self.admin_port = free_ports(3)
        self.config = bootstrap(self.port, self.app_port, rls_port, routes, admin_port=self.admin_port, **kw)
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        app = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(self.app_port)])
        self.procs.append(app)
        wait_port(self.app_port, proc=app)
        path = os.path.join(self.workdir, f"envoy-{self.port}.json")
        with open(path, "w") as f:
            json.dump(self.config, f)
        log = open(os.path.join(self.workdir, f"envoy-{self.port}.log"), "ab")
        env = subprocess.Popen([envoy_binary(), "-c", path, "--concurrency", "1", "--base-id",
                                str(self.port), "--disable-hot-restart", "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(env)
        wait_port(self.port, 30, env)

    def stats(self) -> dict[str, int]:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/stats?format=json", timeout=5) as r:
            data = json.load(r)
        return {s["name"]: s.get("value", 0) for s in data["stats"] if "value" in s}

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        self.procs.clear()
