"""A service outside the mesh: an HTTP server on --listen that registers itself with the Consul API through
py-consul (unmodified), with an HTTP health check, and deregisters on SIGTERM (then keeps serving --drain
seconds before it exits, as a well-behaved Consul client does). Every answer carries `x-served-by: <id>`;
with --fail-every N, every N-th request answers 503 (for retries). Bounded: exits after --max-seconds."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import consul


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True, help="IP:PORT")
    ap.add_argument("--consul", required=True, help="HOST:PORT of the Consul API")
    ap.add_argument("--name", required=True)
    ap.add_argument("--id", required=True)
    ap.add_argument("--protocol", default="http")
    ap.add_argument("--fail-every", type=int, default=0)
    ap.add_argument("--drain", type=float, default=3.0)
    ap.add_argument("--max-seconds", type=float, default=900.0)
    a = ap.parse_args()
    ip, port = a.listen.rsplit(":", 1)
    count = [0]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            code = 200
            if self.path != "/healthz" and a.fail_every:
                with lock:
                    count[0] += 1
                    code = 503 if count[0] % a.fail_every == 0 else 200
            body = f"{a.id}\n".encode()
            self.send_response(code)
            self.send_header("x-served-by", a.id)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((ip, int(port)), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    chost, cport = a.consul.rsplit(":", 1)
    c = consul.Consul(host=chost, port=int(cport))
    c.agent.service.register(a.name, service_id=a.id, address=ip, port=int(port), meta={"protocol": a.protocol},
                             tags=[f"iface:com.example.{a.name}.Api{i}" for i in range(20)],
                             check=consul.Check.http(f"http://{ip}:{port}/healthz", interval="1s", timeout="1s"))
    print(f"{a.id}: serving on {a.listen}, registered as {a.name}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait(a.max_seconds)
    c.agent.service.deregister(a.id)
    print(f"{a.id}: deregistered; draining {a.drain}s", flush=True)
    time.sleep(a.drain)
    server.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
