"""A real Envoy running exactly what Mizzen renders for one loopback-mode proxy, in front of a small echo app.

`SidecarUnderTest(config_yaml, ports={8080: "http", 9000: "tcp"})` renders the proxy's view (Renderer, as the
control plane would), folds it into a static bootstrap (`translate.static`), starts Envoy with it and serves
an echo app (HTTP: the request's method, path and headers as JSON; TCP: echoes bytes) behind each inbound
port. `get(path, headers)` sends an HTTP request to the inbound listener of a port, as a caller would; the
caller's address is 127.0.0.1.
"""
from __future__ import annotations

import http.client
import http.server
import json
import shutil
import socket
import socketserver
import threading
from pathlib import Path
from typing import Any, Mapping

from mizzen.api import load_text
from mizzen.model import Snapshot
from mizzen.model.authz import Jwks
from mizzen.model.types import Proxy
from mizzen.translate import Renderer
from mizzen.translate.static import static_bootstrap
from tests.ca.harness import Envoy, free_port, short_tmpdir


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        n = int(self.headers.get("content-length") or 0)
        if n:
            self.rfile.read(n)
        body = json.dumps({"method": self.command, "path": self.path,
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = do_PUT = do_HEAD = _answer

    def log_message(self, *a: Any) -> None:
        pass


class _TcpEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def service_yaml(ports: Mapping[int, str], namespace: str = "shop", app: str = "web") -> str:
    items = ", ".join(f"{{port: {p}, name: {proto}-{p}}}" for p, proto in ports.items())
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {app}, namespace: {namespace}}}
spec:
  ports: [{items}]
  selector: {{app: {app}}}
"""


class SidecarUnderTest:
    def __init__(self, config: str, ports: Mapping[int, str], *, jwks: Mapping[str, Jwks] | None = None,
                 namespace: str = "shop", app: str = "web"):
        self.dir = Path(short_tmpdir("mzauthz-"))
        self.servers: list[_Server] = []
        port_map = {}
        for p, proto in ports.items():
            srv = _Server(("127.0.0.1", 0), _Echo if proto == "http" else _TcpEcho)
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            self.servers.append(srv)
            port_map[p] = srv.server_address[1]
        resources = load_text(service_yaml(ports, namespace, app) + "---\n" + config).resources
        snap = Snapshot.build([r.with_revision(i + 1) for i, r in enumerate(resources)], [], jwks=jwks)
        inbound = free_port()
        while any(_busy(inbound + i) for i in range(len(ports))):
            inbound = free_port()
        self.proxy = Proxy(id=f"sidecar~127.0.0.1~{app}-0.{namespace}~{namespace}.svc.cluster.local",
                           namespace=namespace, workload=app, labels=(("app", app),), ip="127.0.0.1",
                           interception="loopback", ports=tuple(sorted(ports)), outbound_port=free_port(),
                           inbound_port=inbound, port_map=tuple(sorted(port_map.items())))
        self.listen = {p: inbound + i for i, p in enumerate(sorted(ports))}
        self.view = Renderer(snap).resources_for(self.proxy)
        admin = free_port()
        self.envoy = Envoy(json.loads(json.dumps(static_bootstrap(self.view, admin_port=admin))), self.dir, admin)
        try:
            self.envoy.wait_live()
        except BaseException:
            self.close()
            raise

    def get(self, path: str = "/", headers: Mapping[str, str] | None = None, *, port: int | None = None,
            method: str = "GET") -> tuple[int, dict[str, Any] | str]:
        c = http.client.HTTPConnection("127.0.0.1", self.listen[port or min(self.listen)], timeout=10)
        try:
            c.request(method, path, headers=dict(headers or {}))
            r = c.getresponse()
            raw = r.read().decode()
            try:
                return r.status, json.loads(raw)
            except ValueError:
                return r.status, raw
        finally:
            c.close()

    def tcp_roundtrip(self, port: int, data: bytes = b"ping") -> bytes:
        """Send `data` over a TCP connection to the inbound listener of `port`; what comes back ("" when the
        sidecar closes the connection)."""
        with socket.create_connection(("127.0.0.1", self.listen[port]), timeout=5) as s:
            s.sendall(data)
            s.settimeout(5)
            try:
                return s.recv(4096)
            except ConnectionResetError:
                return b""

    def close(self) -> None:
        if hasattr(self, "envoy"):
            self.envoy.stop()
        for s in self.servers:
            s.shutdown()
            s.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "SidecarUnderTest":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _busy(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return False
        except OSError:
            return True
