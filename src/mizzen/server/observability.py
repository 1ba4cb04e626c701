"""What a control plane serves for observability (docs/observability.md), next to xDS and the REST API:

- its own metrics (`ControlPlaneMetrics`, prometheus-client) at `/metrics` on a monitoring port of its own
  (15014 as Istio; replica i: 15014 + i; a port in use -> any free one, logged) and on the API socket;
- on that port too, each sidecar's merged scrape relayed from its agent's socket:
  `/pods/<pod>/stats/prometheus` (pods live in network namespaces the host cannot route to: this is how a
  Prometheus on the host reaches them, as the Kubernetes API server's pod proxy does);
- Prometheus file-based service discovery in `STATE/prometheus/`: `sidecars.json` (replica 0, rewritten
  whenever the set of sidecars changes) and `controlplane-<i>.json` (each replica);
- replica 0 only: the embedded trace collector (Zipkin v2 on `STATE/traces.sock` for the sidecars, OTLP/gRPC on
  `STATE/otlp.sock` and optionally TCP, one bounded TraceStore, read through `/api/v1/traces`), and the
  console on a loopback port (15080; a port in use -> any free one) behind a token (`STATE/console.token`);
- `STATE/controlplane[-<i>].endpoints.json`: the addresses actually bound (`mizzen dashboard`,
  `mizzen prometheus-config` read them).
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import web

from ..client.aio import AsyncAgentControl, AsyncApiClient
from ..client.auth import FileToken
from ..client.errors import ClientError
from ..client.layout import StateLayout, replica_name
from ..telemetry.cpmetrics import ControlPlaneMetrics
from ..telemetry.otlp_server import MAX_ZIPKIN_BODY, TraceReceiver
from ..telemetry.traces import TraceStore
from ..unixpath import serve_app
from .telemetry_api import Agents, metrics_middleware, routes as telemetry_routes

log = logging.getLogger("mizzen.telemetry")
_POD = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


@dataclass(frozen=True)
class ObservabilitySettings:
    monitoring_host: str = "127.0.0.1"
    monitoring_port: int | None = 15014  # replica i listens on port + i; None: no monitoring port
    console_port: int | None = 15080  # replica 0 only; None: no console
    otlp_tcp: tuple[str, int] | None = None  # OTLP/gRPC on TCP too (apps' SDKs); the unix socket always
    max_traces: int = 2000


def write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


async def _serve_tcp(app: web.Application, host: str, port: int, what: str) -> tuple[web.AppRunner, int]:
    """Serve on host:port, or on any free port when that one is taken (several meshes on one machine)."""
    try:
        runner = await serve_app(app, tcp=(host, port))
    except OSError as e:
        if port == 0:
            raise
        log.warning("%s: port %d is in use (%s); using a free port instead (see the endpoints file)", what, port, e)
        runner = await serve_app(app, tcp=(host, 0))
    bound = [a for a in runner.addresses if isinstance(a, tuple)]
    return runner, int(bound[0][1]) if bound else port


class Observability:
    """`mount(rest_app)` before the REST API serves; `start()` after; `on_snapshot(...)` after each rebuild."""

    def __init__(self, layout: StateLayout, replica: int, metrics: ControlPlaneMetrics,
                 instances: Callable[[], list], api_socket: str, settings: ObservabilitySettings | None = None):
        self.layout, self.replica, self.metrics = layout, replica, metrics
        self.settings = settings or ObservabilitySettings()
        self.api_socket = api_socket
        self.agents = Agents(layout, instances)
        self.store = TraceStore(self.settings.max_traces) if replica == 0 else None
        self.receiver = TraceReceiver(self.store) if self.store is not None else None
        self._runners: list[web.AppRunner] = []
        self.monitoring: str | None = None  # host:port bound
        self.console: str | None = None  # base URL
        self._sidecars_doc = ""

    # ------------------------------------------------------------------ REST API additions
    def mount(self, app: web.Application) -> None:
        app.middlewares.insert(0, metrics_middleware(self.metrics))
        app.add_routes(telemetry_routes(self.agents, self.metrics))
        if self.receiver is not None:
            app.add_routes([r for r in self.receiver.routes() if r.method == "GET"])
        else:
            async def elsewhere(request: web.Request) -> web.Response:
                return web.json_response({"message": "traces are kept by the first control-plane replica "
                                                     "(controlplane, api.sock)"}, status=503)
            app.add_routes([web.get("/api/v1/traces", elsewhere), web.get("/api/v1/traces/{trace_id}", elsewhere)])

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        s = self.settings
        if s.monitoring_port is not None:
            runner, port = await _serve_tcp(self._monitoring_app(), s.monitoring_host,
                                            s.monitoring_port + self.replica if s.monitoring_port else 0,
                                            "monitoring")
            self._runners.append(runner)
            self.monitoring = f"{s.monitoring_host}:{port}"
            log.info("monitoring on http://%s/metrics", self.monitoring)
        if self.receiver is not None:
            await self._start_collector()
        if self.replica == 0 and s.console_port is not None:
            await self._start_console()
        self._write_endpoints()
        self._write_controlplane_targets()

    async def stop(self) -> None:
        for r in reversed(self._runners):
            try:
                await r.cleanup()
            except Exception:  # noqa: BLE001
                log.debug("cleanup failed", exc_info=True)
        self._runners.clear()
        if self.receiver is not None:
            await self.receiver.stop()

    async def _start_collector(self) -> None:
        assert self.receiver is not None
        zipkin = web.Application(client_max_size=MAX_ZIPKIN_BODY)
        zipkin.add_routes([r for r in self.receiver.routes() if r.method == "POST"])
        # Envoys (uid 1337) post spans here: world-writable, like xds.sock; it accepts spans and nothing else
        self._runners.append(await serve_app(zipkin, self.layout.traces_socket, mode=0o666))
        otlp = self.settings.otlp_tcp
        await self.receiver.start_grpc(self.layout.otlp_socket, f"{otlp[0]}:{otlp[1]}" if otlp else None)
        log.info("trace collector: zipkin %s, otlp %s%s", self.layout.traces_socket, self.layout.otlp_socket,
                 f" and {otlp[0]}:{self.receiver.grpc_port}" if otlp else "")

    async def _start_console(self) -> None:
        from ..console.app import make_app
        from ..console.sources import ClientRest, LocalTraces

        token = self._console_token()
        assert self.store is not None

        async def windows() -> list[dict[str, Any]]:
            return (await self.agents.windows())[0]

        def tap(workload: str, namespace: str, path: str, method: str, max_events: int, max_seconds: float):
            async def rows():
                async for row in self.agents.tap(workload, namespace, {"path": path, "method": method,
                                                                       "max": max_events, "seconds": max_seconds}):
                    if row.get("event") != "end":
                        yield row
            return rows()

        # the REST API asks every caller for a token: the console reads as the mesh's admin (STATE/admin.token,
        # written by the API security before anything answers); its own visitors need the console token
        rest = AsyncApiClient(f"unix:{self.api_socket}", timeout=30.0, token=FileToken(self.layout.admin_token))
        app = make_app(ClientRest(rest), windows=windows,
                       traces=LocalTraces(self.store), tap=tap, token=token)
        runner, port = await _serve_tcp(app, "127.0.0.1", self.settings.console_port or 0, "console")
        self._runners.append(runner)
        self.console = f"http://127.0.0.1:{port}/"
        log.info("console on %s (mizzen dashboard prints the URL with its token)", self.console)

    def _console_token(self) -> str:
        """The console's access token: kept across restarts of the control plane (an open dashboard stays
        logged in), readable by its owner only. Hook: when the REST API has tokens (security), the console
        can accept those instead."""
        path = self.layout.console_token
        try:
            with open(path) as f:
                tok = f.read().strip()
            if len(tok) >= 32:
                return tok
        except OSError:
            pass
        tok = secrets.token_urlsafe(32)
        write_atomic(path, tok + "\n", mode=0o600)
        return tok

    # ------------------------------------------------------------------ monitoring port
    def _monitoring_app(self) -> web.Application:
        async def metrics(request: web.Request) -> web.Response:
            body, ctype = self.metrics.exposition()
            return web.Response(body=body, headers={"Content-Type": ctype})

        async def pod_scrape(request: web.Request) -> web.Response:
            pod = request.match_info["pod"]
            if not _POD.match(pod) or not any(p.name == pod for _, p in self.agents.pods()):
                return web.Response(status=404, text=f"no sidecar {pod!r} in this mesh\n")
            try:
                text, ctype = await AsyncAgentControl(self.layout.pod(pod).agent_socket, timeout=5.0).prometheus()
            except ClientError as e:
                return web.Response(status=502, text=f"agent of {pod} did not answer: {e}\n")
            return web.Response(text=text, headers={"Content-Type": ctype or "text/plain; version=0.0.4"})

        app = web.Application()
        app.add_routes([web.get("/metrics", metrics), web.get("/pods/{pod}/stats/prometheus", pod_scrape)])
        return app

    # ------------------------------------------------------------------ files
    def _write_endpoints(self) -> None:
        doc = {"replica": replica_name(self.replica), "pid": os.getpid(), "monitoring": self.monitoring,
               "console": self.console, "traces": self.layout.traces_socket if self.receiver else None,
               "otlp": self.layout.otlp_socket if self.receiver else None}
        write_atomic(self.layout.controlplane_endpoints(self.replica), json.dumps(doc, indent=1) + "\n")

    def _write_controlplane_targets(self) -> None:
        if self.monitoring is None:
            return
        doc = [{"targets": [self.monitoring], "labels": {"instance": replica_name(self.replica),
                                                         "component": "controlplane"}}]
        write_atomic(self.layout.prometheus_controlplane_targets(self.replica), json.dumps(doc, indent=1) + "\n")

    def on_snapshot(self, instances: list) -> None:
        """Keep `prometheus/sidecars.json` current (replica 0; rewritten only when it changes)."""
        if self.replica != 0 or self.monitoring is None:
            return
        groups = []
        for inst, pod in self.agents.pods():
            labels = dict(inst.labels)
            groups.append({"targets": [self.monitoring], "labels": {
                "__metrics_path__": f"/pods/{pod.name}/stats/prometheus", "instance": pod.name, "pod": pod.name,
                "namespace": inst.namespace, "workload": inst.workload,
                "app": labels.get("app", inst.workload), "version": labels.get("version", "unknown")}})
        text = json.dumps(groups, indent=1, sort_keys=True) + "\n"
        if text != self._sidecars_doc:
            try:
                write_atomic(self.layout.prometheus_sidecar_targets, text)
                self._sidecars_doc = text
            except OSError as e:
                log.warning("cannot write %s (Prometheus keeps the last targets): %s",
                            self.layout.prometheus_sidecar_targets, e)

    def record_snapshot(self, snapshot: Any) -> None:
        """Gauges of the registry and the store, after each rebuild."""
        instances = snapshot.endpoints.instances
        healthy = sum(1 for i in instances if i.healthy)
        self.metrics.registry_size(healthy, len(instances) - healthy, len(snapshot.services))
        self.metrics.store_changed(snapshot.config.revision, {k: len(v) for k, v in snapshot.config.by_kind.items()})
        self.on_snapshot(list(instances))
