"""The runner's control channel: a small HTTP API on the unix socket `STATE/runner.sock` (mode 600).

Operations (JSON body) answer with a stream of JSON lines (`application/x-ndjson`), one per progress step,
and a last line `{"event": "done", "ok": true|false, "result"|"error": ...}`; the CLI
(`mizzen.client.RunnerClient`) prints the steps as they come and exits non-zero when `ok` is false. One
operation runs at a time (another gets 409).

    GET  /status                                                   the runner's status (as status.json)
    POST /rollout/restart   {"workload", "namespace"?}             replace replicas one at a time
    POST /scale             {"workload", "namespace"?, "replicas"} add / orderly-remove replicas
    POST /proxy/upgrade     {"workload", "namespace"?, "envoy"?}   hot-restart the workload's Envoys

Built like the mesh's other small servers (`unixpath.serve_app`: aiohttp on a safely bound socket), on an
event loop of its own thread; an operation runs in a worker thread and its progress lines are written as
they come. The server calls only the `ControlTarget` protocol (the runner implements it).
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any, Callable, Protocol

from aiohttp import web

from ..unixpath import serve_app
from .pods import OperationError
from .protocols import Progress

log = logging.getLogger("mizzen.local")


class ControlTarget(Protocol):
    """What the control channel needs from the runner."""

    op_lock: threading.Lock  # held while an operation (or a reconcile pass) runs

    @property
    def phase(self) -> str: ...
    def status(self) -> dict[str, Any]: ...
    def rollout_restart(self, workload: str, namespace: str | None, progress: Progress) -> list[str]: ...
    def scale(self, workload: str, namespace: str | None, replicas: int, progress: Progress) -> list[str]: ...
    def proxy_upgrade(self, workload: str, namespace: str | None, envoy: str | None,
                      progress: Progress) -> list[dict[str, Any]]: ...


BUSY_WAIT_SECONDS = 5.0  # how long an operation waits for the one lock before it is refused (409)


async def _acquire(lock: threading.Lock, seconds: float) -> bool:
    """`lock`, waited for up to `seconds` by polling on the loop, not in a worker thread: a request cancelled
    while it waits then holds nothing (a thread blocked in `acquire()` would take the lock after the
    cancellation, and nobody would release it)."""
    deadline = time.monotonic() + seconds
    while not lock.acquire(blocking=False):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, text=json.dumps(body) + "\n", content_type="application/json")


def make_app(target: ControlTarget) -> web.Application:
    async def status(request: web.Request) -> web.Response:
        return _json(200, await asyncio.to_thread(target.status))

    async def operation(request: web.Request) -> web.StreamResponse:
        path = request.path
        try:
            raw = await request.read()
            body = json.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as e:
            return _json(400, {"message": f"bad request: {e}"})
        ops: dict[str, Callable[[Progress], Any]] = {
            "/rollout/restart": lambda p: target.rollout_restart(str(body.get("workload")), body.get("namespace"), p),
            "/scale": lambda p: target.scale(str(body.get("workload")), body.get("namespace"),
                                             int(body.get("replicas", -1)), p),
            "/proxy/upgrade": lambda p: target.proxy_upgrade(str(body.get("workload")), body.get("namespace"),
                                                             body.get("envoy"), p),
        }
        op = ops.get(path)
        if op is None:
            return _json(404, {"message": f"no such operation {path}"})
        if not body.get("workload"):
            return _json(400, {"message": "workload: required"})
        if target.phase != "running":
            return _json(409, {"message": f"the mesh is {target.phase}"})
        # the lock is also held by short holders: a reconcile pass, or the operation before this one finishing
        # after its CLI has read "done" (a script's second `proxy upgrade` right after the first was refused,
        # e2e test_proxy_upgrade_hot_restart_under_load): wait for it a little before refusing
        if not await _acquire(target.op_lock, BUSY_WAIT_SECONDS):
            return _json(409, {"message": "another operation is running; try again when it is done"})
        try:
            resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await resp.prepare(request)
            loop = asyncio.get_running_loop()
            lines: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

            def post(doc: dict[str, Any] | None) -> None:  # from the operation's thread
                try:
                    loop.call_soon_threadsafe(lines.put_nowait, doc)
                except RuntimeError:
                    pass  # the server was stopped under a running operation: it completes all the same

            def progress(msg: str) -> None:
                log.info("%s", msg)
                post({"event": "progress", "message": msg})

            def run() -> None:
                try:
                    result = op(progress)
                    doc: dict[str, Any] = {"event": "done", "ok": True, "result": result}
                except OperationError as e:
                    log.error("%s failed: %s", path, e)
                    doc = {"event": "done", "ok": False, "error": str(e)}
                except Exception as e:  # noqa: BLE001 - a bug: report it, keep the runner alive
                    log.exception("%s failed", path)
                    doc = {"event": "done", "ok": False, "error": f"{type(e).__name__}: {e}"}
                post(doc)
                post(None)

            log.info("control: %s %s", path, json.dumps(body))
            worker = threading.Thread(target=run, name=f"runner-op{path.replace('/', '-')}", daemon=True)
            worker.start()
            gone = False
            while (doc := await lines.get()) is not None:
                if gone:
                    continue
                try:
                    await resp.write((json.dumps(doc) + "\n").encode())
                except (ConnectionError, RuntimeError):
                    gone = True  # the CLI went away: the operation still completes
            await asyncio.to_thread(worker.join)
            return resp
        finally:
            target.op_lock.release()

    app = web.Application()
    app.router.add_get("/status", status)
    app.router.add_post("/{operation:.*}", operation)
    return app


class ControlServer:
    """The control channel of a runner, served from a thread of its own."""

    def __init__(self, target: ControlTarget, path: str):
        self.target = target
        self.path = path
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="runner-control", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._runner = self._loop.run_until_complete(serve_app(make_app(self.target), self.path, mode=0o600))
        except BaseException as e:  # surfaced by start()
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def start(self) -> None:
        self.thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        log.info("control channel on %s", self.path)

    def stop(self, wait_op: float = 30.0) -> None:
        """Stop accepting; give a running operation (told to stop by the runner's stop flag) time to end."""
        if self.target.op_lock.acquire(timeout=wait_op):
            self.target.op_lock.release()
        if self.thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self.thread.join(10)
