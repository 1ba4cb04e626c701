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
registry before the ADS server reports ready, so a restarted control plane resumes with full config. A store
that cannot be loaded (an etcd cluster down) leaves the control plane serving nothing but the reason
(`storewait.py`) until it can.

Backends (`backends.py`): SQLite files in the state dir (other replicas' commits polled every
`refresh_interval`), or an etcd cluster (`Settings.store_url`): store, registry and Consul KV follow etcd
watches, so changes from any control plane or lease expiries wake the push loop with no polling. Their
callbacks run in the watch threads and hop onto the event loop (`call_soon_threadsafe`). With
`Settings.consul_api`, the Consul HTTP API (consulapi/) is served over the same registry.
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
from ..api.duration import duration_seconds
from ..model.snapshot import ConfigIndex, EndpointIndex, MeshSettings, Snapshot
from ..model.types import Proxy, ProxyResources, labels_tuple
from ..model.workloadentries import instances_of
from ..store.base import ConfigStore, HistoryCompacted, StoreUnavailable
from ..translate import Renderer
from ..xds.pushqueue import PushEvent, PushQueue
from .ads import AdsServer
from .auth_setup import ApiSecurity
from .backends import Backends, open_backends
from .core import ControlPlaneCore
from .authzcheck import authz_warnings
from .debounce import run_debounced
from .jwks import DEFAULT_TIMEOUT, JwksFetcher
from .patchcheck import envoy_patch_validator
from ..envoybin import find_envoy
from ..client.layout import StateLayout, replica_name
from .mesh_ca import MeshCa
from .observability import Observability, ObservabilitySettings
from .rest import make_app, serve, serve_apps
from ..telemetry.cpmetrics import ControlPlaneMetrics
from .storewait import open_when_available, waiting_app

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


def endpoint_index(registry: Any, config: ConfigIndex) -> EndpointIndex:
    """The registry's instances and the config's WorkloadEntries (model/workloadentries.py), as endpoints."""
    return EndpointIndex([*registry.list(), *instances_of(config.by_kind.get("WorkloadEntry", ()))],
                         registry.version)


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
    # xds.PushQueue(leading=...): a change after a quiet period is pushed at once, what follows is debounced
    debounce_leading: bool = False
    # Other control-plane replicas may write the same store and registry: poll for their commits (SQLite only;
    # an etcd store's watches deliver them).
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
    # None / "sqlite": the state dir's SQLite files; "etcd://host:port,...[/prefix][?ca=&cert=&key=&ttl=]": etcd
    store_url: str | None = None
    # serve the Consul HTTP API on this TCP address (port 0: any free port)
    consul_api: tuple[str, int] | None = None


class ControlPlane:
    """Owns the snapshot; is the `source` the ADS server asks for resources."""

    def __init__(self, settings: Settings):
        self.settings = settings
        sd = settings.state_dir
        sd.mkdir(parents=True, exist_ok=True)
        if settings.outbound_traffic_policy not in ("ALLOW_ANY", "REGISTRY_ONLY"):
            raise ValueError(f"outbound traffic policy {settings.outbound_traffic_policy!r}: "
                             "use ALLOW_ANY or REGISTRY_ONLY")
        self.mesh = MeshSettings(outbound_traffic_policy=settings.outbound_traffic_policy)
        self.jwks = JwksFetcher(lambda: self._mark(jwks=True), cache_path=self.layout.jwks_cache)
        self.api_security: ApiSecurity | None = None  # with the store (tokens live next to the config)
        self.backends: Backends | None = None
        self.store_error = ""  # why the store could not be loaded (while it cannot)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._consul_runner = None
        self._service_sync: Any = None
        self.consul_address: str | None = None  # host:port the Consul API listens on
        try:
            self._open_backends()
        except StoreUnavailable as e:  # start() waits for it, serving nothing meanwhile
            self.store_error = str(e)
        self.generation = 0
        self._snapshot: Snapshot | None = None
        self._renderer: Renderer | None = None
        self._dirty_config = False
        self._dirty_endpoints = False
        self._dirty_jwks = False
        self._queue = PushQueue(settings.debounce_quiet, settings.debounce_max_wait, leading=settings.debounce_leading)
        self._wake = asyncio.Event()
        self._ready = False
        self.metrics = ControlPlaneMetrics()
        self.ads = AdsServer(self, metrics=self.metrics, manage_gc=True)
        self.observability = Observability(self.layout, settings.replica, self.metrics, lambda: self.registry.list(),
                                           str(self.api_socket), settings.observability)
        self.mesh_ca = MeshCa(sd, trust_domain=settings.trust_domain,
                              workload_ttl=dt.timedelta(seconds=settings.workload_ttl_seconds),
                              max_workload_ttl=dt.timedelta(seconds=settings.max_workload_ttl_seconds))
        self._rest_runner = None
        self._apps_runner = None  # the pods' apps' socket (rest.serve_apps)
        self._loop_task: asyncio.Task | None = None
        self._refresh_task: asyncio.Task | None = None
        self.push_stats = {"pushes": 0, "last_build_ms": 0.0}
        self._problems: set[str] = set()  # render problems logged for the current snapshot
        self._problems_before: set[str] = set()  # ... and for the previous one (logged once, not per push)

    def _open_backends(self) -> None:
        b = open_backends(self.settings.state_dir, self.settings.store_url)
        self.backends, self.store, self.registry = b, b.store, b.registry
        self.core = ControlPlaneCore(self.store, self.registry, validators=[
            router_conflicts, envoy_patch_validator(find_envoy, self.registry.list, self.settings.trust_domain)],
            advisors=[authz_warnings])
        if self.api_security is None:
            self.api_security = ApiSecurity(self.store, str(self.settings.state_dir), group=self.settings.api_group,
                                            tls_names=self.settings.api_tls_names)
        self.store_error = ""

    def health(self) -> dict[str, Any]:
        """/healthz's `store`: backend, reachable now, revision (and why not, while it cannot be loaded)."""
        if self.backends is None:
            return {"backend": "etcd", "available": False, "error": self.store_error}
        return self.backends.health()

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
        self._snapshot = Snapshot(config, endpoint_index(self.registry, config), self.generation,
                                  self.jwks.current, self.mesh)
        self._renderer = Renderer(self._snapshot, on_problem=self._render_problem)
        log.info("loaded store revision %d (%d resources), registry version %d (%d instances) in %.1f ms",
                 self.store.revision, len(self.store.list()), self.registry.version,
                 len(self.registry.list()), (time.perf_counter() - t) * 1000)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.mesh_ca.start()  # a broken CA dir stops the start here, naming the file
        if self.backends is None:
            await self._wait_for_store()
        assert self.backends is not None and self.api_security is not None
        # subscribe first: a change landing while the initial snapshot is built only causes one more rebuild
        self.store.subscribe(self._config_changed)
        self.registry.subscribe(self._endpoints_changed)
        # in a worker thread: a replica that waited for its store keeps answering /healthz (the waiting app)
        # while a large first snapshot builds -- on the loop it was silent for seconds once etcd came back.
        # Nothing else reads the snapshot yet (ready() is False, the push loop starts below).
        await asyncio.to_thread(self._build_initial)
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
                       credential_routes=False, health=self.health)
        app.add_routes(self.mesh_ca.routes())  # /api/v1/credentials (with SPIFFE IDs) and /api/v1/ca
        self.observability.mount(app)
        if self._rest_runner is not None:  # the waiting app (storewait.py) makes way for the real one
            await self._rest_runner.cleanup()
        self._rest_runner = await serve(app, str(self.api_socket), self.settings.api_tcp,
                                        **self.api_security.serve_options())
        # pods' apps (mizzen.sdk) read their routing config here, with their app credential (server.auth APP)
        self._apps_runner = await serve_apps(
            make_app(self.core, auth=self.api_security.auth, ready=self.ready, services=self.services,
                     proxies=self.proxy_statuses, proxy_resources=self.ads.sent_resources, credential_routes=False,
                     health=self.health, apps_only=True), str(self.apps_socket))
        await self.observability.start()
        self.observability.record_snapshot(self.snapshot)
        self._loop_task = asyncio.create_task(run_debounced(self._queue, self._wake, self._flush), name="push-loop")
        self.jwks.want(jwks_wanted(self.snapshot.config))
        # the store and registry are polled only when not watch-driven; the CA files and tokens always
        self._refresh_task = asyncio.create_task(self._refresh_loop(), name="store-refresh")
        from ..consulapi.sync import ServiceSync  # Consul-registered services become mesh Services

        self._service_sync = ServiceSync(self.store, self.registry)
        self._service_sync.start()
        if self.settings.consul_api is not None:
            await self._serve_consul(self.settings.consul_api)
        log.info("control plane %s ready: store %s, xds %s, api %s%s%s, certificates %s", self.replica_name,
                 self.backends.kind, xds_addrs, self.api_socket,
                 f" and {self.settings.api_tcp}" if self.settings.api_tcp else "",
                 f", consul API {self.consul_address}" if self.consul_address else "", ", ".join(self.mesh_ca.addresses))

    async def _wait_for_store(self) -> None:
        """Serve only the reason on the REST address until the store loads (storewait.py)."""
        app = waiting_app(lambda: self.store_error, lambda: {"url": self.settings.store_url})
        self._rest_runner = await serve(app, str(self.api_socket), self.settings.api_tcp)

        def failed(reason: str) -> None:
            self.store_error = reason

        await open_when_available(self._open_backends, failed, lambda: self._stopping)
        log.info("store loaded after waiting: %s", self.backends.kind if self.backends else "?")

    async def _serve_consul(self, address: tuple[str, int]) -> None:
        """The Consul HTTP API over this control plane's registry and KV (consulapi/)."""
        from ..consulapi.server import ConsulAPI
        from ..unixpath import serve_app

        assert self.backends is not None
        host, port = address
        api = ConsulAPI(self.registry, self.backends.kv(), node=self.replica_name, advertise=f"{host}:{port}",
                        default_address=host if host not in ("0.0.0.0", "::") else "127.0.0.1")
        self._consul_runner = await serve_app(api.app(), None, (host, port))
        bound = [a for a in self._consul_runner.addresses if isinstance(a, tuple)]
        self.consul_address = f"{host}:{bound[0][1] if bound else port}"
        api.advertise = self.consul_address

    async def _refresh_loop(self) -> None:
        """Another replica's writes reach this one's subscribers (and so its proxies) within an interval."""
        while True:
            await asyncio.sleep(self.settings.refresh_interval)
            try:
                if not self.backends.watch_driven:
                    self.store.refresh()
                    self.registry.refresh()
                self.mesh_ca.reload_if_changed()
                self.api_security.periodic()
            except Exception:  # a locked or briefly unreadable database: try again next time
                log.exception("refreshing the store from disk failed")

    async def stop(self) -> None:
        self._stopping = True
        t0 = time.perf_counter()
        if self._service_sync is not None:
            await asyncio.to_thread(self._service_sync.stop)
        if self._consul_runner is not None:
            await self._consul_runner.cleanup()
        if self._refresh_task:
            self._refresh_task.cancel()
        if self._loop_task:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
        await self.jwks.close()
        t1 = time.perf_counter()
        streams = self.ads.connected_count()
        await self.ads.stop(1.0)
        t2 = time.perf_counter()
        await self.observability.stop()
        if self._rest_runner is not None:
            await self._rest_runner.cleanup()
        if self._apps_runner is not None:
            await self._apps_runner.cleanup()
        await self.mesh_ca.stop()
        if self.backends is not None:
            self.backends.close()
        if self.api_security is not None:
            self.api_security.close()
        t3 = time.perf_counter()
        log.info("stopped in %.0f ms (xDS server with %d streams: %.0f ms, before it %.0f ms, after it %.0f ms)",
                 (t3 - t0) * 1000, streams, (t2 - t1) * 1000, (t1 - t0) * 1000, (t3 - t2) * 1000)

    # ---- change handling ------------------------------------------------------------------------
    def _config_changed(self, _revision: int) -> None:
        """A store subscriber: runs in the writer's thread or an etcd watch thread; hops onto the loop."""
        self._soon(True, False)

    def _endpoints_changed(self, _version: int) -> None:
        self._soon(False, True)

    def _soon(self, config: bool, endpoints: bool) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._mark, config, endpoints)
        except RuntimeError:  # the loop closed in between (stopping)
            pass

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
        entries_changed = config.by_kind.get("WorkloadEntry") is not old.config.by_kind.get("WorkloadEntry")
        endpoints = endpoint_index(self.registry, config) \
            if self._dirty_endpoints or entries_changed else old.endpoints
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

    @property
    def apps_socket(self) -> Path:
        """The pods' apps' socket: `pod-api[-<i>].sock`, or `pod-<name>` next to an --api-socket given."""
        if self.settings.api_socket:
            return self.settings.api_socket.with_name(f"pod-{self.settings.api_socket.name}")
        return Path(self.layout.pod_api_socket(self.settings.replica))

    def proxy_statuses(self) -> list[dict[str, Any]]:
        """/api/v1/proxies: the ADS server's statuses, each naming this replica (`controlPlane`), the store
        revision its snapshot reflects (`configRevision`) and whether a store change is still on its way into
        the snapshot (`configPending`: seen, not yet rebuilt). With the item's `pushPending` and its types'
        states, a caller can tell "every proxy has the config of store revision R" from "SYNCED on an older
        one" (right after an apply, before the debounce and the push; on a replica whose store watch has not
        delivered the change yet)."""
        name = self.replica_name
        snap = self._snapshot
        extra = {"controlPlane": name, "configRevision": snap.config.revision if snap is not None else 0,
                 "configPending": bool(self._dirty_config)}
        return [dict(it, **extra) for it in self.ads.statuses()]

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
    from .memdiag import start_from_env

    diag = start_from_env(settings.replica)
    cp = ControlPlane(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    Path(cp.layout.controlplane_pid(settings.replica)).write_text(str(os.getpid()))  # one per replica
    # start() may wait for the store (etcd down): a stop request meanwhile must end the wait
    starting = asyncio.create_task(cp.start(), name="start")
    stopping = asyncio.create_task(stop.wait(), name="stop-signal")
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if starting.done():
        starting.result()  # a start-up failure ends the process with its traceback
        await stop.wait()
    else:
        cp._stopping = True
        starting.cancel()
        try:
            await starting
        except asyncio.CancelledError:
            pass
    stopping.cancel()
    log.info("stopping")
    await cp.stop()
    if diag is not None:
        diag.set()
