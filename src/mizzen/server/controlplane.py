"""The control plane process: store + registry → snapshot → renderer → ADS, plus the REST API.

Change flow: a store commit or registry change marks its half dirty and wakes the push loop; the loop
debounces (xds.PushQueue: quiet period + max wait), rebuilds only the dirty half of the snapshot (the
config half incrementally, from the store's change log: `ConfigIndex.updated`), computes what changed
(`model.diff`), makes a new Renderer that reuses everything of unchanged hosts, and notifies the ADS server
with `model.affected` as the predicate: a proxy is pushed when the change touches something its config
depends on (`model.dependencies`: the hosts it sees, its own services, its routes' destinations, the
Sidecar, Telemetry and EnvoyPatches that apply to it).

Never answers xDS before the store is loaded: the initial snapshot is built from the durable store and
registry before the ADS server reports ready, so a restarted control plane resumes with full config.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..model.dependencies import affected, diff
from ..model.router import conflicts as router_conflicts
from ..model.snapshot import ConfigIndex, EndpointIndex, Snapshot
from ..model.types import Proxy, ProxyResources
from ..registry.embedded import EmbeddedRegistry
from ..store.base import ConfigStore, HistoryCompacted
from ..store.sqlite import SqliteStore
from ..translate import Renderer
from ..xds.pushqueue import PushEvent, PushQueue
from .ads import AdsServer
from .core import ControlPlaneCore
from .debounce import run_debounced
from .patchcheck import envoy_patch_validator
from ..envoybin import find_envoy
from ..client.layout import StateLayout, replica_name
from .observability import Observability, ObservabilitySettings
from .rest import make_app, serve
from ..telemetry.cpmetrics import ControlPlaneMetrics

log = logging.getLogger("mizzen.controlplane")

FULL_REBUILD_AT = 200  # changed resources above which the config index is rebuilt whole (cheaper then)


def next_config(store: ConfigStore, old: ConfigIndex) -> ConfigIndex:
    """The store's state as a ConfigIndex: `old` updated with what the store's change log says changed since
    `old.revision`, or rebuilt whole when the log no longer reaches back (compacted) or the change is large.
    Values come from the store's cache, which is consistent at `store.revision`."""
    revision = store.revision
    if revision == old.revision:
        return old
    try:
        keys = {c.key for c in store.changes_since(old.revision)}
    except HistoryCompacted:
        return ConfigIndex(store.list(), revision)
    except Exception as e:  # e.g. an etcd store that cannot read its history now: its cache still serves
        log.warning("reading the store's change log failed (%s); rebuilding the config index whole", e)
        return ConfigIndex(store.list(), revision)
    if len(keys) > FULL_REBUILD_AT:
        return ConfigIndex(store.list(), revision)
    return ConfigIndex.updated(old, {k: store.get(k) for k in keys}, revision)


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    xds_tcp: tuple[str, int] | None = None
    api_tcp: tuple[str, int] | None = None
    debounce_quiet: float = 0.1
    debounce_max_wait: float = 1.0
    # Envoy runs as uid 1337 and must reach the xDS socket: the runner may put it in a runtime dir
    # every parent of which uid 1337 can traverse (the state dir may sit under a 0700 home).
    xds_socket: Path | None = None
    api_socket: Path | None = None
    # Which control-plane replica this is (0: "controlplane" on api.sock/xds.sock, i: "controlplane-<i>" on
    # api-<i>.sock/xds-<i>.sock, as client.layout names them); the sockets above override its defaults.
    replica: int = 0
    # Other control-plane replicas may write the same store and registry: poll for their commits.
    refresh_interval: float = 0.5
    # monitoring port, console, trace collector (server/observability.py)
    observability: ObservabilitySettings = ObservabilitySettings()


class ControlPlane:
    """Owns the snapshot; is the `source` the ADS server asks for resources."""

    def __init__(self, settings: Settings):
        self.settings = settings
        sd = settings.state_dir
        sd.mkdir(parents=True, exist_ok=True)
        self.store = SqliteStore(sd / "store.db")
        self.registry = EmbeddedRegistry(sd / "registry.db")
        self.core = ControlPlaneCore(self.store, self.registry, validators=[
            router_conflicts, envoy_patch_validator(find_envoy, self.registry.list)])
        self.generation = 0
        self._snapshot: Snapshot | None = None
        self._renderer: Renderer | None = None
        self._dirty_config = False
        self._dirty_endpoints = False
        self._queue = PushQueue(settings.debounce_quiet, settings.debounce_max_wait)
        self._wake = asyncio.Event()
        self._ready = False
        self.metrics = ControlPlaneMetrics()
        self.ads = AdsServer(self, metrics=self.metrics)
        self.observability = Observability(self.layout, settings.replica, self.metrics, self.registry.list,
                                           str(self.api_socket), settings.observability)
        self._rest_runner = None
        self._loop_task: asyncio.Task | None = None
        self._refresh_task: asyncio.Task | None = None
        self.push_stats = {"pushes": 0, "last_build_ms": 0.0}
        self._problems: set[str] = set()  # render problems logged for the current snapshot
        self._problems_before: set[str] = set()  # ... and for the previous one (logged once, not per push)

    # ---- source interface used by the ADS server ------------------------------------------------
    def ready(self) -> bool:
        return self._ready

    def resources_for(self, proxy: Proxy) -> ProxyResources:
        assert self._renderer is not None
        return self._renderer.resources_for(proxy)

    @property
    def snapshot(self) -> Snapshot:
        assert self._snapshot is not None
        return self._snapshot

    # ---- lifecycle ----------------------------------------------------------------------------
    def _build_initial(self) -> None:
        t = time.perf_counter()
        self.generation = 1
        self._snapshot = Snapshot(ConfigIndex(self.store.list(), self.store.revision),
                                  EndpointIndex(self.registry.list(), self.registry.version), self.generation)
        self._renderer = Renderer(self._snapshot, on_problem=self._render_problem)
        log.info("loaded store revision %d (%d resources), registry version %d (%d instances) in %.1f ms",
                 self.store.revision, len(self.store.list()), self.registry.version,
                 len(self.registry.list()), (time.perf_counter() - t) * 1000)

    async def start(self) -> None:
        self._build_initial()
        self.store.subscribe(lambda rev: self._mark(config=True))
        self.registry.subscribe(lambda ver: self._mark(endpoints=True))
        self._ready = True
        xds_addrs = [f"unix:{self.xds_socket}"]
        if self.settings.xds_tcp:
            xds_addrs.append(f"{self.settings.xds_tcp[0]}:{self.settings.xds_tcp[1]}")
        await self.ads.start(xds_addrs)
        app = make_app(self.core, ready=self.ready, services=self.services, proxies=self.proxy_statuses,
                       proxy_resources=self.ads.sent_resources)
        self.observability.mount(app)
        self._rest_runner = await serve(app, str(self.api_socket), self.settings.api_tcp)
        await self.observability.start()
        self.observability.record_snapshot(self.snapshot)
        self._loop_task = asyncio.create_task(run_debounced(self._queue, self._wake, self._flush), name="push-loop")
        self._refresh_task = asyncio.create_task(self._refresh_loop(), name="store-refresh")
        log.info("control plane %s ready: xds %s, api %s%s", self.replica_name, xds_addrs, self.api_socket,
                 f" and {self.settings.api_tcp}" if self.settings.api_tcp else "")

    async def _refresh_loop(self) -> None:
        """Another replica's writes reach this one's subscribers (and so its proxies) within an interval."""
        while True:
            await asyncio.sleep(self.settings.refresh_interval)
            try:
                self.store.refresh()
                self.registry.refresh()
            except Exception:  # a locked or briefly unreadable database: try again next time
                log.exception("refreshing the store from disk failed")

    async def stop(self) -> None:
        if self._refresh_task:
            self._refresh_task.cancel()
        if self._loop_task:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
        await self.ads.stop(1.0)
        await self.observability.stop()
        if self._rest_runner is not None:
            await self._rest_runner.cleanup()
        self.store.close()
        self.registry.close()

    # ---- change handling ------------------------------------------------------------------------
    def _mark(self, config: bool = False, endpoints: bool = False) -> None:
        self._dirty_config |= config
        self._dirty_endpoints |= endpoints
        self._queue.add("config" if config else "endpoints", time.monotonic())
        self._wake.set()

    def _flush(self, event: PushEvent) -> None:
        self.metrics.debounce_merges.inc(event.count - 1)
        for cause in sorted(event.keys or ("config", "endpoints")):
            self.metrics.push_triggers.labels(cause).inc()
        try:
            self._rebuild_and_push(event.first)
        except Exception:  # a bad rebuild must not kill the loop; the previous snapshot stays
            log.exception("snapshot rebuild failed; keeping the previous snapshot")

    def _rebuild_and_push(self, changed_at: float | None = None) -> None:
        t = time.perf_counter()
        old = self._snapshot
        assert old is not None
        config = next_config(self.store, old.config) if self._dirty_config else old.config
        endpoints = EndpointIndex(self.registry.list(), self.registry.version) \
            if self._dirty_endpoints else old.endpoints
        self._dirty_config = self._dirty_endpoints = False
        self.generation += 1
        new = Snapshot(config, endpoints, self.generation)
        change = diff(old, new)
        self._snapshot = new
        self._problems_before, self._problems = self._problems, set()
        self._renderer = Renderer(new, self._renderer, change, on_problem=self._render_problem)
        self.push_stats["last_build_ms"] = (time.perf_counter() - t) * 1000
        self.observability.record_snapshot(new)
        self.push_stats["pushes"] += 1
        if change.empty:
            return
        log.info("generation %d: %s changed", self.generation, "everything" if change.everything else
                 f"{len(change.hosts)} host(s), {len(change.resources)} per-proxy resource(s)")
        self.ads.notify(None if change.everything else lambda proxy: affected(change, proxy, old, new), changed_at)

    def _render_problem(self, proxy: Proxy, message: str) -> None:
        """A rendered view had a problem (an EnvoyPatch skipped because it would make the view dangle)."""
        text = f"proxy {proxy.namespace}/{proxy.workload or proxy.id}: {message}"
        if text not in self._problems and text not in self._problems_before:
            log.warning("%s", text)
        self._problems.add(text)

    @property
    def replica_name(self) -> str:
        """controlplane, controlplane-1, ... (as given: `Settings.replica`)."""
        return replica_name(self.settings.replica)

    @property
    def layout(self) -> StateLayout:
        return StateLayout(str(self.settings.state_dir))

    @property
    def xds_socket(self) -> Path:
        return self.settings.xds_socket or Path(self.layout.xds_socket(self.settings.replica))

    @property
    def api_socket(self) -> Path:
        return self.settings.api_socket or Path(self.layout.api_socket(self.settings.replica))

    def proxy_statuses(self) -> list[dict[str, Any]]:
        """/api/v1/proxies: the ADS server's statuses, each naming this replica (`controlPlane`)."""
        name = self.replica_name
        return [dict(it, controlPlane=name) for it in self.ads.statuses()]

    def services(self) -> list[dict[str, Any]]:
        return [
            {"name": s.name, "namespace": s.namespace, "hostname": s.hostname, "vip": s.vip,
             "selector": dict(s.selector), "source": s.source,
             "ports": [{"port": p.port, "name": p.name, "protocol": p.protocol, "targetPort": p.target_for()}
                       for p in s.ports]}
            for s in sorted(self.snapshot.services.values(), key=lambda s: (s.namespace, s.hostname))
        ]


async def run(settings: Settings) -> None:
    cp = ControlPlane(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await cp.start()
    Path(cp.layout.controlplane_pid(settings.replica)).write_text(str(os.getpid()))  # one per replica
    await stop.wait()
    log.info("stopping")
    await cp.stop()
