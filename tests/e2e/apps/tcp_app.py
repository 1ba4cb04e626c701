"""Test app for TCP routes: a plain TCP server on $PORT (default 9000). Each connection is first sent
`<pod>\n`, then every line it sends comes back as `<pod>: <line>\n` (so a client sees which replica served it
and that bytes flow both ways). Stdlib only."""
from __future__ import annotations

import os
import socketserver

POD = os.environ.get("POD_NAME", "unknown")


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(f"{POD}\n".encode())
        for line in self.rfile:  # until the client closes
            self.wfile.write(f"{POD}: ".encode() + line.rstrip(b"\r\n") + b"\n")


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


if __name__ == "__main__":
    Server(("0.0.0.0", int(os.environ.get("PORT", "9000"))), Handler).serve_forever()
