"""Test app for the mTLS e2e tests: HTTP on $PORT (default 8080) answering every GET with a JSON document of
what it received — {"pod", "path", "headers"} — so a test sees `x-forwarded-client-cert` as the app sees it.
Every answer carries `x-served-by: <pod>`. Stdlib only."""
from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

POD = os.environ.get("POD_NAME", "unknown")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        data = json.dumps({"pod": POD, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}
                          ).encode()
        self.send_response(200)
        self.send_header("x-served-by", POD)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512


if __name__ == "__main__":
    Server(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
