"""`GET /api/v1/watch`: the SDK's view of the mesh as a long-poll (docs/sdk.md, "The feed").

The view is what `GET /api/v1/resources` and `GET /api/v1/instances` answer the same caller (the stored config
it may read — for a pod's app credential, what routes its calls — and the registry's instances); its
`version` is a digest of that view, so it is the same on every control-plane replica and across restarts,
and a change the caller cannot see (another tenant's config) does not wake it.

    GET /api/v1/watch                      -> 200 {"version", "changed": true, "revision", "registryVersion",
                                                   "resources": [...], "instances": [...]}   at once
    GET /api/v1/watch?version=V&wait=30    -> the same as soon as the caller's view differs from V; after `wait`
                                              seconds without a change: {"version": V, "changed": false, ...}
                                              (no items: the caller keeps what it has)

Consul's blocking queries (consulapi/server.py) are the model: `version` plays `index`, `wait` is bounded
(default 30 s, at most 300 s), a waiting request holds no thread — it sleeps on an asyncio.Event that the store's
and the registry's change notifications set (from whatever thread commits), and it re-reads the revisions every
second as well (a replica in another process). The view is rebuilt and digested in a worker thread, and only when
the store revision or the registry version moved since the request last looked: nothing slow on the loop, which
also serves xDS. Callers of one scope (role and namespaces) share that build, also when one change wakes
them all at once (`_shared_view`). At most `max_watchers` requests wait at a time per socket; one more is answered 429 with
Retry-After (the SDK polls meanwhile); a caller that disconnects frees its place within RECHECK seconds.
Shutting the API down answers every waiting request at once.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from typing import Any, Callable

from aiohttp import web

from ..api import InvalidConfig, Issue
from ..api.duration import duration_seconds
from .auth import Principal
from .core import ControlPlaneCore

log = logging.getLogger(__name__)

PATH = "/api/v1/watch"
DEFAULT_WAIT = 30.0
MAX_WAIT = 300.0
MAX_WATCHERS = 256
MAX_SCOPES = 1024  # views kept for sharing (one per role and namespaces)
RECHECK = 1.0  # seconds between looks at the revisions while waiting (changes made by another process)
WATCHES: web.AppKey["Watches"] = web.AppKey("watches")
_SECONDS = re.compile(r"\d+(?:\.\d+)?")


def view_version(resources: list[dict[str, Any]], instances: list[dict[str, Any]]) -> str:
    """The version of a view: a digest of its canonical JSON (the same data gives the same version anywhere)."""
    raw = json.dumps([resources, instances], sort_keys=True, separators=(",", ":")).encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def parse_wait(raw: str | None) -> float:
    """`wait`: seconds (`30`, `2.5`) or a Go/Istio duration (`30s`, `5m`, `1m30s`: `api.duration`, the one
    parser); bounded to MAX_WAIT."""
    if raw is None or raw == "":
        return DEFAULT_WAIT
    text = raw.strip().lower()
    try:
        value = float(text) if _SECONDS.fullmatch(text) else duration_seconds(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise InvalidConfig([Issue(f"wait must be a number of seconds (e.g. 30 or 30s), not {raw[:40]!r}",
                                   "<request>", path="wait")])
    return min(value, MAX_WAIT)


class Watches:
    """The watch route of one REST app: its waiting requests, their wake-up event and their bound."""

    def __init__(self, core: ControlPlaneCore, principal: Callable[[web.Request], Principal], *,
                 max_watchers: int = MAX_WATCHERS):
        self.core = core
        self.principal = principal
        self.max_watchers = max_watchers
        self.waiting = 0  # requests waiting now
        self.quiet_wakes = 0  # times a waiting request looked again and found its caller's view unchanged
        self.closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._views: dict[tuple[str, frozenset[str]], tuple[tuple[int, int], dict[str, Any]]] = {}
        self._building: dict[tuple, asyncio.Future] = {}  # (scope, marks) -> the build in flight

    def add_to(self, app: web.Application) -> None:
        app[WATCHES] = self
        app.router.add_get(PATH, self.handle)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)

    # ------------------------------------------------------------------ change notification
    async def _on_startup(self, app: web.Application) -> None:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._unsubscribe = [self.core.store.subscribe(self._wake_threadsafe),
                             self.core.registry.subscribe(self._wake_threadsafe)]

    async def _on_shutdown(self, app: web.Application) -> None:
        self.closing = True  # every waiting request answers now: a stopping control plane does not wait for them
        self._wake()

    async def _on_cleanup(self, app: web.Application) -> None:
        for u in self._unsubscribe:
            u()
        self._unsubscribe = []

    def _wake_threadsafe(self, _: int) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        ev, self._changed = self._changed, asyncio.Event()
        if ev is not None:
            ev.set()

    def _marks(self) -> tuple[int, int]:
        return self.core.store.revision, self.core.registry.version

    # ------------------------------------------------------------------ the route
    def _view(self, p: Principal) -> dict[str, Any]:
        """The caller's view and its version (in a worker thread: it reads and digests the whole view). Callers
        of one scope share it: what `core.list` and `core.instances` give a caller depends on its role and
        namespaces only (auth.readable, auth.visible), so many SDK processes of one namespace cost one build
        per change."""
        marks = self._marks()
        scope = (p.role, p.namespaces)
        hit = self._views.get(scope)
        if hit is not None and hit[0] == marks:
            return hit[1]
        resources = self.core.list(principal=p)
        instances = self.core.instances(principal=p)
        view = {"version": view_version(resources, instances), "revision": marks[0],
                "registryVersion": marks[1], "resources": resources, "instances": instances}
        if len(self._views) >= MAX_SCOPES:
            self._views.clear()
        self._views[scope] = (marks, view)
        return view

    async def _shared_view(self, p: Principal) -> dict[str, Any]:
        """`_view` in a worker thread, one build per scope and revisions however many waiting requests of that
        scope a change wakes at once (they await the same build instead of each starting one)."""
        key = (p.role, p.namespaces, self._marks())
        fut = self._building.get(key)
        if fut is None:
            fut = self._building[key] = asyncio.ensure_future(asyncio.to_thread(self._view, p))
            fut.add_done_callback(lambda _f: self._building.pop(key, None))
        return await asyncio.shield(fut)

    async def handle(self, request: web.Request) -> web.Response:
        p = self.principal(request)
        known = request.query.get("version") or None
        wait = parse_wait(request.query.get("wait"))
        view = await self._shared_view(p)
        if known is None or view["version"] != known or wait <= 0 or self.closing:
            return _answer(view, known)
        if self.waiting >= self.max_watchers:
            log.warning("watch refused: %d watches wait already (the bound); the caller polls meanwhile — many "
                        "SDK processes on one control plane: add replicas or raise the bound", self.waiting)
            resp = web.json_response({"message": f"too many watches wait ({self.waiting}); poll "
                                                 f"/api/v1/resources and /api/v1/instances, or retry later",
                                      "maxWatchers": self.max_watchers}, status=429)
            resp.headers["Retry-After"] = "5"
            return resp
        self.waiting += 1
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            looked_at = (view["revision"], view["registryVersion"])
            while not self.closing:
                left = deadline - loop.time()
                if left <= 0 or request.transport is None or request.transport.is_closing():
                    break  # (a caller that went away frees its place)
                ev = self._changed
                if self._marks() == looked_at and ev is not None:
                    try:  # woken by a commit in this process; every RECHECK s also look (another process)
                        await asyncio.wait_for(ev.wait(), min(left, RECHECK))
                    except asyncio.TimeoutError:
                        pass
                if self.closing or self._marks() == looked_at:
                    continue
                view = await self._shared_view(p)
                looked_at = (view["revision"], view["registryVersion"])
                if view["version"] != known:
                    break
                self.quiet_wakes += 1  # a change this caller does not see: wait on
        finally:
            self.waiting -= 1
        return _answer(view, known)


def _answer(view: dict[str, Any], known: str | None) -> web.Response:
    if view["version"] == known:  # nothing new: no items, the caller keeps its own
        body = {"version": known, "changed": False, "revision": view["revision"],
                "registryVersion": view["registryVersion"]}
    else:
        body = {**view, "changed": True}
    return web.json_response(body, dumps=lambda o: json.dumps(o, separators=(",", ":")))
