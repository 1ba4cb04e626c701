"""A control plane whose store cannot be loaded serves nothing — never an empty config — and says why.

While the backend (an etcd cluster) does not answer, the control plane binds no xDS socket (proxies keep their
last config and their ADS streams go to another replica or retry), and its REST address answers only with the
reason: `GET /healthz` → 503 `{"ready": false, "store": {"available": false, "error": "store unavailable: …"}}`,
every other path → 503 `{"message": …, "storeNotLoaded": true}` (clients try another replica first:
client/failover.py). It retries every `RETRY_SECONDS` (opening runs in a worker thread, so
the loop keeps answering) and logs the reason when it first fails and when it changes, then every minute.
Once the store loads, this app is replaced by the real one on the same address.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Callable

from aiohttp import web

from ..store.base import StoreUnavailable

log = logging.getLogger("mizzen.controlplane")

RETRY_SECONDS = 1.0
LOG_EVERY_SECONDS = 60.0


def waiting_app(reason: Callable[[], str], store: Callable[[], dict[str, Any]]) -> web.Application:
    """The REST app of a control plane that has not loaded its store: only the reason, as 503s."""
    async def handler(request: web.Request) -> web.Response:
        why = reason()
        if request.path == "/healthz":
            body: dict[str, Any] = {"ready": False, "store": {**store(), "available": False, "error": why}}
        else:
            body = {"message": f"{why} (this control plane has not loaded its store yet and serves nothing "
                               f"until it can)", "storeNotLoaded": True}
        return web.Response(status=503, text=json.dumps(body), content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def open_when_available(open_fn: Callable[[], Any], on_error: Callable[[str], None],
                              stopping: Callable[[], bool] = lambda: False) -> Any:
    """Call `open_fn` (in a worker thread) until it does not raise StoreUnavailable; `on_error(reason)` after
    each failure. Returns what it returned."""
    first = time.monotonic()
    last_reason, last_log = "", 0.0
    while True:
        try:
            return await asyncio.to_thread(open_fn)
        except StoreUnavailable as e:
            reason = str(e)
            on_error(reason)
            now = time.monotonic()
            if reason != last_reason or now - last_log >= LOG_EVERY_SECONDS:
                log.error("%s; this control plane serves nothing (no xDS, no API) until the store answers — "
                          "proxies keep their last config meanwhile; retrying every %.0f s (waiting %.0f s so far)",
                          reason, RETRY_SECONDS, now - first)
                last_reason, last_log = reason, now
        if stopping():
            raise asyncio.CancelledError()
        await asyncio.sleep(RETRY_SECONDS)
