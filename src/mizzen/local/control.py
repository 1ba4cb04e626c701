"""The runner's control channel: a tiny HTTP/1.0 API on the unix socket `STATE/runner.sock`.

Operations (JSON body) answer with a stream of JSON lines (`application/x-ndjson`), one per progress step,
and a last line `{"event": "done", "ok": true|false, "result"|"error": ...}`; the CLI prints the steps as they
come and exits non-zero when `ok` is false. One operation runs at a time (another gets 409).

    GET  /status                                                   the runner's status (as status.json)
    POST /rollout/restart   {"workload", "namespace"?}             replace replicas one at a time
    POST /scale             {"workload", "namespace"?, "replicas"} add / orderly-remove replicas
    POST /proxy/upgrade     {"workload", "namespace"?, "envoy"?}   hot-restart the workload's Envoys
"""
from __future__ import annotations

import http.server
import json
import logging
import os
import socketserver
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    from .runner import Runner

log = logging.getLogger("mizzen.local")

CONTROL_SOCKET = "runner.sock"


class OperationError(Exception):
    """An operation failed; the message is for the user."""


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    runner: "Runner"
    op_lock: threading.Lock


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("control: " + fmt, *args)

    def address_string(self) -> str:  # a unix socket has no peer address
        return "runner.sock"

    def _json(self, status: int, body: Any) -> None:
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/status":
            with self.server.runner.lock:
                st = self.server.runner.status()
            return self._json(200, st)
        self._json(404, {"message": f"no such path {self.path}"})

    def do_POST(self) -> None:
        runner = self.server.runner
        try:
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n) or b"{}") if n else {}
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as e:
            return self._json(400, {"message": f"bad request: {e}"})
        path = self.path.split("?")[0]
        ops: dict[str, Callable[[Callable[[str], None]], Any]] = {
            "/rollout/restart": lambda p: runner.rollout_restart(str(body.get("workload")), body.get("namespace"), p),
            "/scale": lambda p: runner.scale(str(body.get("workload")), body.get("namespace"),
                                             int(body.get("replicas", -1)), p),
            "/proxy/upgrade": lambda p: runner.proxy_upgrade(str(body.get("workload")), body.get("namespace"),
                                                             body.get("envoy"), p),
        }
        op = ops.get(path)
        if op is None:
            return self._json(404, {"message": f"no such operation {path}"})
        if not body.get("workload"):
            return self._json(400, {"message": "workload: required"})
        if runner.phase != "running":
            return self._json(409, {"message": f"the mesh is {runner.phase}"})
        if not self.server.op_lock.acquire(blocking=False):
            return self._json(409, {"message": "another operation is running; try again when it is done"})
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.end_headers()

            def emit(doc: dict[str, Any]) -> None:
                try:
                    self.wfile.write((json.dumps(doc) + "\n").encode())
                    self.wfile.flush()
                except OSError:
                    pass  # the CLI went away: the operation still completes

            def progress(msg: str) -> None:
                log.info("%s", msg)
                emit({"event": "progress", "message": msg})

            log.info("control: %s %s", path, json.dumps(body))
            try:
                result = op(progress)
                emit({"event": "done", "ok": True, "result": result})
            except OperationError as e:
                log.error("%s failed: %s", path, e)
                emit({"event": "done", "ok": False, "error": str(e)})
            except Exception as e:  # noqa: BLE001 - a bug: report it, keep the runner alive
                log.exception("%s failed", path)
                emit({"event": "done", "ok": False, "error": f"{type(e).__name__}: {e}"})
        finally:
            self.server.op_lock.release()
            with runner.lock:
                runner.write_status()


class ControlServer:
    def __init__(self, runner: "Runner", path: str):
        self.path = path
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.server = _Server(path, _Handler)
        os.chmod(path, 0o600)
        self.server.runner = runner
        self.server.op_lock = threading.Lock()
        self.thread = threading.Thread(target=self.server.serve_forever, name="runner-control", daemon=True)

    def start(self) -> None:
        self.thread.start()
        log.info("control channel on %s", self.path)

    def stop(self, wait_op: float = 30.0) -> None:
        """Stop accepting; give a running operation (told to stop by runner.stop_requested) time to end."""
        self.server.shutdown()
        self.server.server_close()
        if self.server.op_lock.acquire(timeout=wait_op):
            self.server.op_lock.release()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def request_stream(sock_path: str, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """POST an operation to a runner and yield its JSON lines; raises OperationError on refusal."""
    from ..cli.client import UnixHTTPConnection

    conn = UnixHTTPConnection(sock_path, timeout=3600)
    try:
        data = json.dumps(body).encode()
        conn.request("POST", path, body=data, headers={"Content-Type": "application/json",
                                                        "Content-Length": str(len(data))})
        resp = conn.getresponse()
        if resp.status != 200:
            raw = resp.read()
            try:
                msg = json.loads(raw).get("message")
            except ValueError:
                msg = raw.decode(errors="replace")
            raise OperationError(msg or f"HTTP {resp.status}")
        while True:
            line = resp.readline()
            if not line:
                break
            try:
                yield json.loads(line)
            except ValueError:
                continue
    finally:
        conn.close()
