"""A real Envoy running exactly the config Mizzen generates for one loopback-mode sidecar (no mesh, no
namespaces): RateLimit resources + a registry → `Renderer` → a static bootstrap (`translate.static`) → Envoy.

The proxy is workload `hello` (labels app=hello, container port 8080 served by a tiny app on a free port); the
registry has `hello` at that app, so the sidecar's outbound HTTP proxy (`Host: hello:8080`) and its inbound
listener both reach the app. `mizzen_ratelimit` points at a real `mizzen ratelimit` on loopback TCP."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from mizzen.api import load_text
from mizzen.local.procs import free_ports
from mizzen.model import Instance, Proxy, Snapshot
from mizzen.translate import Renderer
from mizzen.translate.static import static_bootstrap
from tests.envoy_bin import envoy_binary

from .procs import wait_port

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: hello}
spec: {selector: {app: hello}, ports: [{port: 8080, name: http}]}
"""
LOAD = Path(__file__).with_name("rl_load.py")
APP = r'''
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


class GeneratedSidecar:
    def __init__(self, workdir: str, limits_yaml: str, rls_port: int | tuple[int, ...] | None = None,
                 workload: str = "hello"):
        self.workdir = workdir
        self.app_port, self.outbound_port, self.inbound_port, self.admin_port = free_ports(4)
        resources = [r.with_revision(i + 1) for i, r in enumerate(load_text(SERVICE + "---\n" + limits_yaml).resources)]
        inst = Instance(id="default.hello-0", namespace="default", workload="hello", address="127.0.0.1",
                        ports=(8080,), labels=(("app", "hello"),), port_map=((8080, self.app_port),))
        self.proxy = Proxy(id="sidecar~127.0.0.1~hello-0.default~default.svc.cluster.local", workload=workload,
                           labels=(("app", "hello"),), interception="loopback", ports=(8080,),
                           port_map=((8080, self.app_port),), outbound_port=self.outbound_port,
                           inbound_port=self.inbound_port,
                           ratelimit_address=tuple(f"127.0.0.1:{p}" for p in (
                               rls_port if isinstance(rls_port, tuple) else (rls_port,) if rls_port else ())))
        self.view = Renderer(Snapshot.build(resources, [inst])).resources_for(self.proxy)
        self.procs: list[subprocess.Popen] = []

    def start(self) -> "GeneratedSidecar":
        app = subprocess.Popen([sys.executable, "-c", APP, str(self.app_port)])
        self.procs.append(app)
        wait_port(self.app_port, proc=app)
        path = os.path.join(self.workdir, f"envoy-{self.admin_port}.json")
        with open(path, "w") as f:
            json.dump(static_bootstrap(self.view, admin_port=self.admin_port), f)
        log = open(os.path.join(self.workdir, f"envoy-{self.admin_port}.log"), "ab")
        env = subprocess.Popen([envoy_binary(), "-c", path, "--concurrency", "1", "--base-id", str(self.admin_port),
                                "--disable-hot-restart", "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(env)
        wait_port(self.inbound_port, 30, env)
        wait_port(self.outbound_port, 30, env)
        return self

    @property
    def inbound_url(self) -> str:
        return f"http://127.0.0.1:{self.inbound_port}"

    @property
    def outbound_url(self) -> str:
        return f"http://127.0.0.1:{self.outbound_port}"

    def get(self, url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        req = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()

    def load(self, url: str, rps: float, seconds: float, concurrency: int = 8,
             headers: dict[str, str] | None = None) -> dict[str, Any]:
        args = [sys.executable, str(LOAD), url, "--rps", str(rps), "--seconds", str(seconds),
                "--concurrency", str(concurrency)]
        for k, v in (headers or {}).items():
            args += ["-H", f"{k}: {v}"]
        p = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout.strip().splitlines()[-1])

    def stats(self, prefix: str = "") -> dict[str, int]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/stats?format=json", timeout=5) as r:
            data = json.load(r)
        return {s["name"]: s.get("value", 0) for s in data["stats"] if "value" in s and s["name"].startswith(prefix)}

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
