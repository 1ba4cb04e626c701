"""Tap sessions of one sidecar, shared: Envoy allows one admin tap session per config id, so the agent holds
at most one (matching every request, bodies off) while at least one watcher is attached, fans its rows out to
the watchers whose filter (path prefix, method) they match, and closes it when the last watcher leaves:
nothing is tapped while nobody watches.

Every watch is bounded: rows (`max_events`, at most tap.MAX_EVENTS), time (`max_seconds`, at most
tap.MAX_SECONDS) and bytes of rows delivered (`max_bytes`, at most MAX_BYTES); at most MAX_WATCHERS watch at
once (another gets TapBusy). A watcher that reads too slowly loses rows (counted in its end line), never
holds the session back.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from ..telemetry.peers import Directory
from ..telemetry.tap import MAX_EVENTS, MAX_SECONDS, TapError, tap_request
from .telemetry import tap_events

log = logging.getLogger("mizzen.agent.tap")

MAX_WATCHERS = 8
LOOPBACK = ("127.", "[::1]", "::1")
MAX_BYTES = 16 * 1024 * 1024
QUEUE = 1000


class TapBusy(RuntimeError):
    pass


@dataclass(eq=False)
class _Watcher:
    path: str
    method: str
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(QUEUE))
    dropped: int = 0

    def wants(self, ev: dict[str, Any]) -> bool:
        if self.path and not str(ev.get("path", "")).startswith(self.path):
            return False
        return not self.method or ev.get("method") == self.method


class TapHub:
    """`admin_socket`: the Envoy admin pipe; `directory()`: the current peer directory (names peers)."""

    def __init__(self, admin_socket: str, directory: Callable[[], Directory | None], reporter: str = "",
                 me: str = "") -> None:
        self.admin_socket = admin_socket
        self.directory = directory
        self.reporter = reporter
        self.me = me  # "<workload>.<namespace>": the destination of inbound requests (the app, on loopback)
        self._watchers: set[_Watcher] = set()
        self._session: asyncio.Task | None = None
        self.sessions = 0  # admin sessions opened since start (tests: none without a watcher)
        self.error: str | None = None

    @property
    def watching(self) -> int:
        return len(self._watchers)

    def check(self, path: str = "", method: str = "") -> None:
        """Raise TapError (bad filter) or TapBusy (too many watchers) now, before a watch starts."""
        tap_request(path, method)
        if len(self._watchers) >= MAX_WATCHERS:
            raise TapBusy(f"{MAX_WATCHERS} taps already watch this sidecar; try again later")

    async def watch(self, path: str = "", method: str = "", *, max_events: int = 100, max_seconds: float = 60.0,
                    max_bytes: int = 1024 * 1024) -> AsyncIterator[dict[str, Any]]:
        """Rows of tapped requests matching `path` (prefix) and `method`; the last item is
        {"event": "end", "reason": ..., "rows": n, "dropped": n}."""
        self.check(path, method)
        max_events = max(1, min(int(max_events), MAX_EVENTS))
        max_seconds = max(0.1, min(float(max_seconds), MAX_SECONDS))
        max_bytes = max(1024, min(int(max_bytes), MAX_BYTES))
        w = _Watcher(path, method.upper())
        self._watchers.add(w)
        self._ensure_session()
        deadline = time.monotonic() + max_seconds
        rows = sent = 0
        reason = "time"
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    ev = await asyncio.wait_for(w.queue.get(), left)
                except asyncio.TimeoutError:
                    break
                if ev is None:  # the session failed
                    reason = f"error: {self.error}"
                    break
                sent += len(json.dumps(ev))
                if sent > max_bytes:
                    reason = "bytes"
                    break
                yield ev
                rows += 1
                if rows >= max_events:
                    reason = "count"
                    break
            yield {"event": "end", "reason": reason, "rows": rows, "dropped": w.dropped}
        finally:
            self._watchers.discard(w)
            if not self._watchers:
                await self._stop_session()

    def _ensure_session(self) -> None:
        if self._session is None or self._session.done():
            self._session = asyncio.get_running_loop().create_task(self._run(), name="tap-session")

    async def _stop_session(self) -> None:
        task, self._session = self._session, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    async def _run(self) -> None:
        """One admin session (matching everything) for as long as anybody watches; reopened when Envoy ends it
        (its own bounds, a hot restart)."""
        self.error = None
        while self._watchers:
            self.sessions += 1
            try:
                async for ev in tap_events("http://envoy/tap", tap_request(), max_events=MAX_EVENTS,
                                           max_seconds=MAX_SECONDS, directory=self.directory(),
                                           reporter=self.reporter, unix_socket=self.admin_socket):
                    if self.me and str(ev.get("destination", "")).startswith(LOOPBACK):
                        ev["destination"] = self.me  # an inbound request, to our app
                    for w in list(self._watchers):
                        if w.wants(ev):
                            try:
                                w.queue.put_nowait(ev)
                            except asyncio.QueueFull:
                                w.dropped += 1
                    if not self._watchers:
                        return
            except asyncio.CancelledError:
                raise
            except (TapError, OSError, Exception) as e:  # noqa: BLE001 - told to every watcher
                self.error = str(e) or type(e).__name__
                log.warning("tap session failed: %s", self.error)
                for w in list(self._watchers):
                    try:
                        w.queue.put_nowait(None)
                    except asyncio.QueueFull:
                        pass
                return
