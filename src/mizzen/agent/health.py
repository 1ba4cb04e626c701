"""Readiness: is Envoy configured (first CDS and LDS ACKed, server LIVE)? And the agent's health endpoint
(`GET /healthz/ready` on healthHost:healthPort) that answers from the agent's current view.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from aiohttp import web

from ..client.aio import AsyncEnvoyAdmin
from ..client.errors import ClientError
from ..unixpath import serve_app

log = logging.getLogger("mizzen.agent")

CDS_OK = "cluster_manager.cds.update_success"
LDS_OK = "listener_manager.lds.update_success"
_READY_FILTER = r"^(cluster_manager\.cds|listener_manager\.lds)\.update_success$"


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str  # human readable: "LIVE, cds=1 lds=1" or why not

    def __bool__(self) -> bool:
        return self.ready


async def envoy_readiness(admin: AsyncEnvoyAdmin) -> Readiness:
    """Ready once Envoy has accepted at least one CDS and one LDS update and `/ready` says LIVE."""
    try:
        stats = await admin.stats(_READY_FILTER)
        cds, lds = stats.get(CDS_OK, 0), stats.get(LDS_OK, 0)
        if cds < 1 or lds < 1:
            return Readiness(False, f"waiting for config: cds.update_success={cds} lds.update_success={lds}")
        live, state = await admin.ready()
        if not live:
            return Readiness(False, f"envoy server state {state or '?'}")
        return Readiness(True, f"LIVE, cds.update_success={cds} lds.update_success={lds}")
    except ClientError as e:
        return Readiness(False, f"envoy admin unreachable: {e}")


class HealthServer:
    """aiohttp server for the agent's health port. `status()` is the agent's current answer."""

    def __init__(self, host: str, port: int, status: Callable[[], Readiness],
                 routes: Callable[[], list[web.RouteDef]] | None = None) -> None:
        self.host, self.port = host, port
        self._status = status
        self._routes = routes  # more routes on the same port (the merged metrics scrape)
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz/ready", self._ready)
        app.router.add_get("/healthz/live", self._live)
        if self._routes is not None:
            app.add_routes(self._routes())
        return app

    async def _ready(self, request: web.Request) -> web.Response:
        r = self._status()
        return web.Response(status=200 if r.ready else 503, text=r.reason + "\n")

    async def _live(self, request: web.Request) -> web.Response:
        return web.Response(text="alive\n")

    async def start(self) -> int:
        self._runner = await serve_app(self.app(), tcp=(self.host, self.port))
        bound = [a for a in self._runner.addresses if isinstance(a, tuple)]
        port = int(bound[0][1]) if bound else self.port
        self.bound_port = port
        log.info("health endpoint on http://%s:%d/healthz/ready", self.host, port)
        return port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
