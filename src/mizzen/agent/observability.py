"""The agent's telemetry, wired from its config (docs/observability.md):

- the access-log receiver (`Telemetry`) on `<workDir>/telemetry.sock`, started before Envoy and stopped after
  it; its peer directory comes from the control plane (instances and services), which also tells which
  service each of the pod's ports serves (the destination side's fallback);
- the merged scrape `GET /stats/prometheus` (Envoy's stats + Istio's metrics + the agent's own + the app's
  metrics when its Workload declares `metrics: {port, path}`) on the health port (:15020, as Istio) and on the
  control socket; `GET /telemetry/window` and `/telemetry/top` on both too (the window also counts the requests of
  Envoy's native series, read with the admin's filter, native.STATS_PATH, while there are some);
- tap on the control socket only (`POST /tap {path, method, max, seconds, bytes}` -> JSON lines), one shared
  Envoy session while anybody watches (`TapHub`).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Any, Callable

from aiohttp import web

from ..client.aio import AsyncApiClient
from ..model.labels import labels_match
from ..model.services import is_http
from ..telemetry import native
from ..telemetry.aggregate import SelfInfo
from ..telemetry.peers import Directory, WorkloadInfo, principal_of
from ..telemetry.tap import TapError
from .config import AgentConfig
from .tap import TapBusy, TapHub
from .telemetry import Telemetry, envoy_runtime_setter, http_get, unix_get

log = logging.getLogger("mizzen.agent.telemetry")


def port_services(services: list[dict[str, Any]], namespace: str, labels: dict[str, str],
                  http: bool = True) -> dict[int, str]:
    """container port -> hostname of the service that selects this pod on it. When several do (a port that
    backs an HTTP service and a `tcp-` one), the one whose declared protocol is of the kind asked for
    (`http`: HTTP, HTTP2, GRPC; else the others) wins, then the first by hostname."""
    cands: dict[int, list[tuple[bool, str]]] = {}
    for s in services:
        sel = s.get("selector") or {}
        if s.get("namespace") != namespace or not sel or not labels_match(sel, labels):
            continue
        for p in s.get("ports") or ():
            target = p.get("targetPort")
            port = target if isinstance(target, int) else p.get("port")
            if isinstance(port, int):
                proto = str(p.get("protocol") or "")
                other_kind = bool(proto) and is_http(proto) != http
                cands.setdefault(port, []).append((other_kind, str(s.get("hostname"))))
    return {port: min(c)[1] for port, c in cands.items()}


class AgentTelemetry:
    def __init__(self, cfg: AgentConfig, api: AsyncApiClient | None,
                 extra_metrics: Callable[[], str] | None = None) -> None:
        self.cfg = cfg
        self.api = api
        me = SelfInfo(WorkloadInfo.from_labels(cfg.workload, cfg.namespace, cfg.label_dict, cfg.service_account),
                      principal=principal_of(cfg.namespace, cfg.service_account, cfg.trust_domain))
        self.telemetry = Telemetry(
            me, cfg.telemetry_socket, fetch_directory=self._directory if api is not None else None,
            envoy_stats=unix_get(cfg.admin_socket, "/stats/prometheus"),
            envoy_native=unix_get(cfg.admin_socket, native.STATS_PATH),  # the golden window's reading
            envoy_runtime=envoy_runtime_setter(cfg.admin_socket),  # `mizzen top` on demand for envoy-stats
            app_metrics=http_get(cfg.app_metrics_url) if cfg.app_metrics_url else None,
            extra_metrics=extra_metrics)
        self.tap = TapHub(cfg.admin_socket, lambda: self.telemetry.agg.directory, reporter=cfg.workload,
                          me=f"{cfg.workload}.{cfg.namespace}")
        self.started = False

    async def _directory(self) -> Directory:
        assert self.api is not None
        inst, svcs = await asyncio.gather(self.api.request("GET", "/api/v1/instances"),
                                          self.api.request("GET", "/api/v1/services"))
        services = list(svcs.get("items", ()))
        ports = port_services(services, self.cfg.namespace, self.cfg.label_dict)
        tcp = port_services(services, self.cfg.namespace, self.cfg.label_dict, http=False)
        tcp = {} if tcp == ports else tcp
        agg = self.telemetry.agg
        if ports != dict(agg.me.port_services) or tcp != dict(agg.me.tcp_port_services):
            agg.me = dataclasses.replace(agg.me, port_services=ports, tcp_port_services=tcp)
        return Directory(inst.get("items", ()), services)

    async def start(self) -> None:
        if not self.cfg.telemetry:
            return
        await self.telemetry.start()
        self.started = True

    async def stop(self) -> None:
        await self.tap._stop_session()
        if self.started:
            await self.telemetry.stop()
            self.started = False

    # ------------------------------------------------------------------ HTTP
    def health_routes(self) -> list[web.RouteDef]:
        """For the health port (:15020): the merged scrape and the golden-metrics window and top paths."""
        return self.telemetry.routes() if self.cfg.telemetry else []

    def control_routes(self) -> list[web.RouteDef]:
        """For the control socket: the same, and tap."""
        return self.health_routes() + ([web.post("/tap", self._tap)] if self.cfg.telemetry else [])

    async def _tap(self, request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = {}
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                return web.json_response({"message": "body must be JSON"}, status=400)
        path, method = str(body.get("path") or ""), str(body.get("method") or "")
        try:
            self.tap.check(path, method)
            rows = self.tap.watch(path, method, max_events=int(body.get("max", 100)),
                                  max_seconds=float(body.get("seconds", 60)),
                                  max_bytes=int(body.get("bytes", 1024 * 1024)))
        except (TapError, ValueError, TypeError) as e:
            return web.json_response({"message": str(e)}, status=400)
        except TapBusy as e:
            return web.json_response({"message": str(e)}, status=429)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await resp.write(b"")
        try:
            async for row in rows:
                await resp.write((json.dumps(row) + "\n").encode())
        finally:
            await rows.aclose()
        return resp
