"""An SDK-based service in a pod without a sidecar: GET / calls http://echo:8080/ through `mizzen.sdk` (the
mesh's rules in process) and answers with echo's body and its `x-served-by`. Its own callers reach it like
any service (sidecar-less pods are registered by the runner)."""
from __future__ import annotations

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from mizzen.sdk import Mesh

POD = os.environ.get("POD_NAME", "sdkweb")
SNAPSHOT = os.path.join(os.environ.get("MIZZEN_STATE_DIR", "."), "pods", POD, "sdk-snapshot.json")  # goes with the mesh
mesh = Mesh(workload="sdkweb", labels={"app": "sdkweb"}, snapshot_file=SNAPSHOT).start()
client = httpx.Client(transport=mesh.httpx_transport(), timeout=5)


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *a) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        try:
            r = client.get("http://echo:8080/")
            code, body, by = r.status_code, r.content, r.headers.get("x-served-by", "-")
        except httpx.HTTPError as e:
            code, body, by = 502, str(e).encode(), "-"
        self.send_response(code)
        self.send_header("x-served-by", by)
        self.send_header("x-via", POD)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), H).serve_forever()
