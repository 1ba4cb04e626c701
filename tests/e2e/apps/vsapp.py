"""A tiny HTTP app for VirtualService feature tests (stdlib only, HTTP/1.1 keep-alive, exact lengths).

Every response carries `x-served-by: $APP_NAME` and a JSON body describing the request as the app saw
it ({app, method, path, headers, version}). Requests are counted, per "METHOD /first-segment":
  GET  /stats            → {"count": {...}, "total": n}      (not counted)
  GET  /reset            → clears the counts                  (not counted)
  *    /flaky[/...]      → alternates 503, 200, 503, 200 ... (a global counter: the first of each pair fails)
  *    /sleep/<ms>       → answers after <ms> milliseconds (at most 10 s)
  *    anything else     → 200 with the description (OPTIONS too: a CORS preflight the sidecar forwards
                           reaches the app and is counted, without any access-control-* header)
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

APP = os.environ.get("APP_NAME", "app")
lock = threading.Lock()
counts: Counter = Counter()
flaky = [0]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:
        sys.stderr.write("%s %s\n" % (APP, fmt % args))

    def _send(self, status: int, body: dict) -> None:
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-served-by", APP)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _handle(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        if n > 0:
            self.rfile.read(n)
        path = self.path.split("?", 1)[0]
        if path == "/stats":
            with lock:
                self._send(200, {"app": APP, "count": dict(counts), "total": sum(counts.values())})
            return
        if path == "/reset":
            with lock:
                counts.clear()
                flaky[0] = 0
            self._send(200, {"app": APP, "reset": True})
            return
        first = "/" + (path.strip("/").split("/", 1)[0])
        with lock:
            counts[f"{self.command} {first}"] += 1
        desc = {"app": APP, "method": self.command, "path": self.path, "version": self.request_version,
                "headers": {k.lower(): v for k, v in self.headers.items()}}
        if first == "/flaky":
            with lock:
                flaky[0] += 1
                fail = flaky[0] % 2 == 1
            self._send(503 if fail else 200, desc)
            return
        if first == "/sleep":
            try:
                ms = min(int(path.rstrip("/").rsplit("/", 1)[-1]), 10000)
            except ValueError:
                ms = 0
            time.sleep(ms / 1000)
        self._send(200, desc)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = _handle


def main() -> None:
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(SystemExit(0)))
    try:
        server.serve_forever(poll_interval=0.5)
    except SystemExit:
        pass


if __name__ == "__main__":
    main()
