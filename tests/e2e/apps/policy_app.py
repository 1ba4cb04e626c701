"""Test app for DestinationRule policy e2e tests: HTTP on $PORT_8080 (default 8080) and, when grpcio is
importable, a gRPC server on $PORT_50051 (generic handler, no codegen).

HTTP: every answer carries `x-served-by: <pod>`. Switches, flipped from inside the pod (loopback):
  GET /fail?on=1|0     the app answers 500 to everything else while on
  GET /sick?on=1|0     /healthz answers 503 while on (active health checks see it; traffic still 200)
  GET /healthz         200 (or 503 when sick)
  GET /slow?ms=N       sleeps N ms (bounded to 5 s) then 200
  GET /grpcfail?on=1|0 gRPC calls fail with UNAVAILABLE while on
gRPC: /mizzen.Who/Call (unary, bytes in/out) → the pod name.
"""
from __future__ import annotations

import os
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

POD = os.environ.get("POD_NAME", "unknown")
STATE = {"fail": False, "sick": False, "grpcfail": False}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a) -> None:  # quiet
        pass

    def _send(self, code: int, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("x-served-by", POD)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        if u.path in ("/fail", "/sick", "/grpcfail"):
            STATE[u.path[1:]] = q.get("on", "1") == "1"
            return self._send(200, f"{u.path[1:]}={STATE[u.path[1:]]}\n")
        if u.path == "/healthz":
            return self._send(503 if STATE["sick"] else 200, "sick\n" if STATE["sick"] else "ok\n")
        if STATE["fail"]:
            return self._send(500, f"{POD} failing\n")
        if u.path == "/slow":
            time.sleep(min(5000, int(q.get("ms", "500"))) / 1000)
        self._send(200, f"{POD}\n")


def grpc_server(port: int):
    try:
        import grpc
    except ImportError:
        return None
    from concurrent import futures

    def call(req: bytes, ctx) -> bytes:
        if STATE["grpcfail"]:
            ctx.abort(grpc.StatusCode.UNAVAILABLE, f"{POD} failing")
        return POD.encode()

    handler = grpc.method_handlers_generic_handler("mizzen.Who", {
        "Call": grpc.unary_unary_rpc_method_handler(call)})  # bytes in, bytes out: no serializers
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    srv.add_generic_rpc_handlers((handler,))
    srv.add_insecure_port(f"0.0.0.0:{port}")
    srv.start()
    return srv


def main() -> None:
    g = grpc_server(int(os.environ.get("PORT_50051", "50051"))) if os.environ.get("PORT_50051") else None
    srv = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT_8080", os.environ.get("PORT", "8080")))), Handler)
    srv.daemon_threads = True
    try:
        srv.serve_forever()
    finally:
        if g is not None:
            g.stop(0)


if __name__ == "__main__":
    main()
