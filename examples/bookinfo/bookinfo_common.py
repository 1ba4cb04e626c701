"""Shared plumbing of the Python Bookinfo apps (stdlib only).

Each app is a ThreadingHTTPServer speaking HTTP/1.1 with exact Content-Length (keep-alive works),
bound to 0.0.0.0:$PORT (default 9080). Every response is JSON, carries `"service"`/`"version"` in
the body and `x-served-by: <service>-<version>` as a header.

Outbound calls use plain urllib to the service name (http://reviews:9080/...): the app knows nothing
of the mesh. In a network namespace the name resolves via /etc/hosts to a service VIP and iptables
sends the connection through the sidecar; in loopback mode urllib honours HTTP_PROXY.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

# The headers Istio's productpage propagates (tracing, user identity, session).
PROPAGATED_HEADERS = (
    "x-request-id",
    "x-ot-span-context",
    "x-datadog-trace-id", "x-datadog-parent-id", "x-datadog-sampling-priority",
    "traceparent", "tracestate",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "b3",
    "end-user", "user-agent",
    "cookie", "authorization", "jwt",
)

VERSION = os.environ.get("SERVICE_VERSION", "v1")
PODNAME = os.environ.get("POD_NAME") or socket.gethostname()

# A route returns (status, body dict) or (status, body dict, extra headers).
Route = Callable[["Handler", list[str]], tuple]


def propagated(headers: Any) -> dict[str, str]:
    """The incoming headers to copy onto outbound calls."""
    out = {}
    for h in PROPAGATED_HEADERS:
        v = headers.get(h)
        if v is not None:
            out[h] = v
    return out


def call(url: str, headers: dict[str, str], timeout: float) -> tuple[int, dict[str, Any], str]:
    """GET url → (status, JSON body or {"error"}, x-served-by). status 0 = no response at all."""
    req = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            served = r.headers.get("x-served-by", "")
            status = r.status
    except urllib.error.HTTPError as e:
        try:
            raw = e.read()
        except Exception:
            raw = b""
        served = e.headers.get("x-served-by", "") if e.headers else ""
        status = e.code
    except Exception as e:  # refused, reset, timeout, DNS
        return 0, {"error": f"{type(e).__name__}: {e}"}, ""
    try:
        body = json.loads(raw.decode() or "null")
        if not isinstance(body, dict):
            body = {"body": body}
    except ValueError:
        body = {"body": raw.decode(errors="replace")[:500]}
    return status, body, served


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    service = "unknown"
    routes: list[tuple[str, Route]] = []  # (path prefix, handler); first match wins

    def log_message(self, fmt: str, *args: Any) -> None:  # one line per request, to stderr (app.log)
        sys.stderr.write("%s %s %s\n" % (self.service, self.address_string(), fmt % args))
        sys.stderr.flush()

    def send_json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        body = {"service": self.service, "version": VERSION, **body}
        data = (json.dumps(body, indent=None) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-served-by", f"{self.service}-{VERSION}")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _drain_body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _dispatch(self) -> None:
        self.body = self._drain_body()
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self.send_json(200, {"status": f"{self.service.capitalize()} is healthy"})
            return
        for prefix, fn in self.routes:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                rest = [p for p in path[len(prefix):].split("/") if p]
                try:
                    out = fn(self, rest)
                except Exception as e:  # a bug in the app: say so, keep serving
                    out = (500, {"error": f"{type(e).__name__}: {e}"})
                self.send_json(*out)
                return
        self.send_json(404, {"error": f"no route for {path}"})

    do_GET = _dispatch
    do_POST = _dispatch
    do_HEAD = _dispatch


def serve(service: str, routes: list[tuple[str, Route]]) -> None:
    handler = type(f"{service.capitalize()}Handler", (Handler,), {"service": service, "routes": routes})
    port = int(os.environ.get("PORT", "9080"))
    server = ThreadingHTTPServer(("0.0.0.0", port), handler)
    server.daemon_threads = True

    def _stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    sys.stderr.write(f"{service}-{VERSION} listening on 0.0.0.0:{port}\n")
    sys.stderr.flush()
    try:
        server.serve_forever(poll_interval=0.5)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.server_close()


def product_id(rest: list[str]) -> int | None:
    if not rest:
        return None
    try:
        return int(rest[0])
    except ValueError:
        return None
