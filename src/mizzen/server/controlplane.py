"""The control plane process: store + registry → snapshot → renderer → ADS, plus the REST API.

Change flow: a store commit or registry change marks its half dirty and wakes the push loop; the loop
debounces (xds.PushQueue: quiet period + max wait), rebuilds only the dirty half of the snapshot (the
config half incrementally, from the store's change log: `ConfigIndex.updated`), computes what changed
(`model.diff`), makes a new Renderer that reuses everything of unchanged hosts, and notifies the ADS server
with `model.affected` as the predicate: a proxy is pushed when the change touches something its config
depends on (`model.dependencies`: the hosts it sees, its own services, its routes' destinations, the
Sidecar, Telemetry, EnvoyPatches and security policies that apply to it). JWKS named by RequestAuthentication
`jwksUri`s are fetched here (`server/jwks.py`) and enter the snapshot as data; a change of fetched keys is
pushed like a change of the RequestAuthentications that use them.

Never answers xDS before the store is loaded: the initial snapshot is built from the durable store and
registry before the ADS server reports ready, so a restarted control plane resumes with full config.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..model.dependencies import affected, diff
from ..model.router import conflicts as router_conflicts
from ..api.virtual_service import duration_seconds
from ..model.snapshot import ConfigIndex, EndpointIndex, MeshSettings, Snapshot
from ..model.types import Proxy, ProxyResources, labels_tuple
from ..registry.embedded import EmbeddedRegistry
from ..store.base import ConfigStore, HistoryCompacted
from ..store.sqlite import SqliteStore
from ..translate import Renderer
from ..xds.pushqueue import PushEvent, PushQueue
from .ads import AdsServer
from .auth_setup import ApiSecurity
from .core import ControlPlaneCore
from .authzcheck import authz_warnings
from .debounce import run_debounced
from .jwks import DEFAULT_TIMEOUT, JwksFetcher
from .patchcheck import envoy_patch_validator
from ..envoybin import find_envoy
from ..client.layout import StateLayout, replica_name
from .mesh_ca import MeshCa
from .observability import Observability, ObservabilitySettings
from .rest import make_app, serve
from ..telemetry.cpmetrics import ControlPlaneMetrics

log = logging.getLogger("mizzen.controlplane")

FULL_REBUILD_AT = 200  # changed resources above which the config index is rebuilt whole (cheaper then)


def jwks_wanted(config: ConfigIndex) -> dict[str, float]:
    """The jwksUris to fetch, each with the longest timeout a rule naming it asks for."""
    out: dict[str, float] = {}
    for r in config.by_kind.get("RequestAuthentication", ()):
        for rule in r.spec.jwt_rules:
            if rule.jwks_uri and not rule.jwks:
                t = duration_seconds(rule.timeout) if rule.timeout else DEFAULT_TIMEOUT
                out[rule.jwks_uri] = max(out.get(rule.jwks_uri, 0.0), t)
    return out


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
    # The mesh CA (server/mesh_ca.py): SPIFFE trust domain, workload certificate TTLs, where the signing
    # service listens (default STATE/ca.sock, ca-<i>.sock for replica i; TLS also on ca_tcp when given).
    trust_domain: str = "cluster.local"
    workload_ttl_seconds: float = 24 * 3600.0
    max_workload_ttl_seconds: float = 90 * 24 * 3600.0
    ca_socket: Path | None = None
    ca_tcp: tuple[str, int] | None = None
    # Mesh-wide egress default for proxies whose Sidecar sets no outboundTrafficPolicy (Istio's MeshConfig
    # outboundTrafficPolicy): ALLOW_ANY (pass through) or REGISTRY_ONLY (refuse what the registry does not hold)
    outbound_traffic_policy: str = "ALLOW_ANY"
    # The REST API socket's group (0660; default: group `mizzen` if it exists) and the extra names its TCP
    # listener's TLS certificate carries (server/auth_setup.py)
    api_group: str | None = None
    api_tls_names: tuple[str, ...] = ()
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
            router_conflicts, envoy_patch_validator(find_envoy, self.registry.list)],
            advisors=[authz_warnings])
        if settings.outbound_traffic_policy not in ("ALLOW_ANY", "REGISTRY_ONLY"):
            raise ValueError(f"outbound traffic policy {settings.outbound_traffic_policy!r}: "
                             "use ALLOW_ANY or REGISTRY_ONLY")
        self.mesh = MeshSettings(outbound_traffic_policy=settings.outbound_traffic_policy)
        self.jwks = JwksFetcher(lambda: self._mark(jwks=True), cache_path=self.layout.jwks_cache)
        self.api_security = ApiSecurity(self.store, str(sd), group=settings.api_group,
                                        tls_names=settings.api_tls_names)
        self.generation = 0
        self._snapshot: Snapshot | None = None
        self._renderer: Renderer | None = None
        self._dirty_config = False
        self._dirty_endpoints = False
        self._dirty_jwks = False
        self._queue = PushQueue(settings.debounce_quiet, settings.debounce_max_wait)
        self._wake = asyncio.Event()
        self._ready = False
        self.metrics = ControlPlaneMetrics()
        self.ads = AdsServer(self, metrics=self.metrics)
        self.observability = Observability(self.layout, settings.replica, self.metrics, self.registry.list,
                                           str(self.api_socket), settings.observability)
        self.mesh_ca = MeshCa(sd, trust_domain=settings.trust_domain,
                              workload_ttl=dt.timedelta(seconds=settings.workload_ttl_seconds),
                              max_workload_ttl=dt.timedelta(seconds=settings.max_workload_ttl_seconds))
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
        config = ConfigIndex(self.store.list(), self.store.revision)
        self.jwks.preload(jwks_wanted(config))  # keys fetched before a restart: no window of 401s
        self._snapshot = Snapshot(config, EndpointIndex(self.registry.list(), self.registry.version),
                                  self.generation, self.jwks.current, self.mesh)
        self._renderer = Renderer(self._snapshot, on_problem=self._render_problem)
        log.info("loaded store revision %d (%d resources), registry version %d (%d instances) in %.1f ms",
                 self.store.revision, len(self.store.list()), self.registry.version,
                 len(self.registry.list()), (time.perf_counter() - t) * 1000)

    async def start(self) -> None:
        self.mesh_ca.start()  # a broken CA dir stops the start here, naming the file
        self._build_initial()
        self.store.subscribe(lambda rev: self._mark(config=True))
        self.registry.subscribe(lambda ver: self._mark(endpoints=True))
        self._ready = True
        xds_addrs = [f"unix:{self.xds_socket}"]
        if self.settings.xds_tcp:
            xds_addrs.append(f"{self.settings.xds_tcp[0]}:{self.settings.xds_tcp[1]}")
        await self.ads.start(xds_addrs)
        ca_addrs = [f"unix:{self.ca_socket}"]
        if self.settings.ca_tcp:
            ca_addrs.append(f"{self.settings.ca_tcp[0]}:{self.settings.ca_tcp[1]}")
        await self.mesh_ca.serve(ca_addrs)
        self.api_security.start(self.settings.api_tcp)
        app = make_app(self.core, auth=self.api_security.auth, ready=self.ready, services=self.services,
                       proxies=self.proxy_statuses, proxy_resources=self.ads.sent_resources, egress=self.egress,
                       credential_routes=False)
        app.add_routes(self.mesh_ca.routes())  # /api/v1/credentials (with SPIFFE IDs) and /api/v1/ca
        self.observability.mount(app)
        self._rest_runner = await serve(app, str(self.api_socket), self.settings.api_tcp,
                                        **self.api_security.serve_options())
        await self.observability.start()
        self.observability.record_snapshot(self.snapshot)
        self._loop_task = asyncio.create_task(run_debounced(self._queue, self._wake, self._flush), name="push-loop")
        self.jwks.want(jwks_wanted(self.snapshot.config))
        self._refresh_task = asyncio.create_task(self._refresh_loop(), name="store-refresh")
        log.info("control plane %s ready: xds %s, api %s%s, certificates %s", self.replica_name, xds_addrs,
                 self.api_socket, f" and {self.settings.api_tcp}" if self.settings.api_tcp else "",
                 ", ".join(self.mesh_ca.addresses))

    async def _refresh_loop(self) -> None:
        """Another replica's writes reach this one's subscribers (and so its proxies) within an interval."""
        while True:
            await asyncio.sleep(self.settings.refresh_interval)
            try:
                self.store.refresh()
                self.registry.refresh()
                self.mesh_ca.reload_if_changed()
                self.api_security.periodic()
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
        await self.jwks.close()
        await self.ads.stop(1.0)
        await self.observability.stop()
        if self._rest_runner is not None:
            await self._rest_runner.cleanup()
        await self.mesh_ca.stop()
        self.store.close()
        self.registry.close()
        self.api_security.close()

    # ---- change handling ------------------------------------------------------------------------
    def _mark(self, config: bool = False, endpoints: bool = False, jwks: bool = False) -> None:
        self._dirty_config |= config
        self._dirty_endpoints |= endpoints
        self._dirty_jwks |= jwks
        self._queue.add("config" if config or jwks else "endpoints", time.monotonic())
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
        self._dirty_config = self._dirty_endpoints = self._dirty_jwks = False
        if config is not old.config:
            self.jwks.want(jwks_wanted(config))  # start fetching new jwksUris, stop those no longer named
        self.generation += 1
        new = Snapshot(config, endpoints, self.generation, self.jwks.current, self.mesh)
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
    def ca_socket(self) -> Path:
        return self.settings.ca_socket or Path(self.layout.ca_socket(self.settings.replica))

    @property
    def api_socket(self) -> Path:
        return self.settings.api_socket or Path(self.layout.api_socket(self.settings.replica))

    def proxy_statuses(self) -> list[dict[str, Any]]:
        """/api/v1/proxies: the ADS server's statuses, each naming this replica (`controlPlane`)."""
        name = self.replica_name
        return [dict(it, controlPlane=name) for it in self.ads.statuses()]

    def egress(self, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
        """The egress of a workload's proxies (namespace + labels): `mode` (its outbound traffic policy) and,
        under REGISTRY_ONLY, `hosts` — the services its Sidecar lets it see (the runner keeps Envoy's own
        connections to other service VIPs from being DNATed)."""
        snap = self.snapshot
        proxy = Proxy(id="egress-query", namespace=namespace, labels=labels_tuple(labels))
        mode = snap.outbound_mode(proxy)
        out: dict[str, Any] = {"mode": mode}
        if mode == "REGISTRY_ONLY":
            out["hosts"] = [s.hostname for s in snap.visible_services(proxy)]
        return out

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
