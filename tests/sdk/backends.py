"""Real HTTP servers on loopback for the SDK tests: each answers `<name>\n` (and `x-served-by`), or 503 while
`failing` is set; `/slow` sleeps 1 s first, and every request sleeps `delay` seconds. Started in threads, stopped by `stop()`."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default backlog (5) drops SYNs under concurrency
    daemon_threads = True


class Backend:
    def __init__(self, name: str):
        self.name = name
        self.failing = False
        self.delay = 0.0
        self.hits = 0
        self.headers_seen: list[dict] = []
        backend = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

            def log_message(self, *a) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                backend.hits += 1
                backend.headers_seen = (backend.headers_seen + [dict(self.headers)])[-20:]
                if self.path.startswith("/slow"):
                    time.sleep(1.0)
                if backend.delay:
                    time.sleep(backend.delay)
                code, body = (503, f"{backend.name} failing\n") if backend.failing else (200, f"{backend.name}\n")
                data = body.encode()
                self.send_response(code)
                self.send_header("x-served-by", backend.name)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = _Server(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
