"""Snapshot × Proxy → xDS resources, rendered and serialized once per distinct input.

Three levels of sharing keep a large mesh cheap:
- per snapshot, proxies with the same *view key* (namespace, labels, Sidecar scope, interception
  settings) share one rendered resource set;
- per host, clusters and endpoints are rendered once and shared by every view that sees the host;
- across snapshots, a new `Renderer` takes the previous one and the `model.Change` between them: everything
  of an unchanged host (and, when only endpoints changed, every listener/route/cluster) is reused as is,
  with the same bytes and version.

Every view is checked (`consistency.py`): EnvoyPatches that would make it dangle are skipped for it, and
what was skipped is told to `on_problem(proxy, message)` (the control plane logs it); the view Envoy gets is
never inconsistent because of a patch.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

from envoy.config.route.v3.route_pb2 import RouteConfiguration

from ..model import ratelimits
from ..model.dependencies import Change
from ..model.security import DISABLE, spiffe_uri
from ..model.services import Service, is_http
from ..model.snapshot import Snapshot
from ..model.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, Proxy, Rendered
from . import clusters as C
from . import filters
from . import gateway as GW
from . import listeners as L
from .common import HTTP_PROXY_ROUTE
from .consistency import dangling, warming
from .endpoints import load_assignment
from .envoyfilter import apply_envoy_filters, envoy_filters_for
from .filters import ViewContext
from .patches import Patched, apply_patches
from .proxyless import PROXYLESS, proxyless_view
from .routes import RouteBuilder, VhostReuse

View = dict[str, dict[str, Rendered]]


def render(type_url: str, name: str, msg) -> Rendered:
    payload = msg.SerializeToString(deterministic=True)
    return Rendered(type_url, name, hashlib.sha256(payload).hexdigest()[:16], payload, msg)


@dataclass(frozen=True)
class HostResources:
    clusters: tuple[Rendered, ...]
    endpoints: tuple[Rendered, ...]
    # endpoints that depend on the caller's locality (locality-aware DestinationRule): rendered lazily
    # per caller locality by `local_endpoints`; cluster name -> (policy, endpoints)
    local: tuple = ()
    by_locality: dict = field(default_factory=dict, compare=False)


def _hosts_only(old: Snapshot, new: Snapshot, change: Change) -> bool:
    """Did only hosts change (their services, routes, DestinationRules, endpoints), nothing per proxy, and
    nothing that re-resolves every name (the namespaces a short host name may name)?  Then a virtual host
    whose host and route destinations are not among `change.hosts` renders as it did (`routes.VhostReuse`)."""
    return (not change.everything and not change.resources and (old.jwks is new.jwks or old.jwks == new.jwks)
            and old.mesh == new.mesh
            and old.config.namespaces == new.config.namespaces)


def route_inputs(snap: Snapshot, proxy: Proxy) -> tuple | None:
    """What a sidecar's outbound route configs are built from beyond the snapshot (`routes.RouteBuilder`): its
    namespace (name forms, exportTo), its Sidecar scope (the services it sees, the fallback virtual host), and
    its labels only while some VirtualService matches on sourceLabels, and what the features' route hooks read
    of it (`Feature.route_inputs`: nothing for CORS and faults, the proxy itself for rate limits that shape it
    and for a feature that does not say).  None: not shared (gateways, proxyless)."""
    if proxy.kind != "sidecar":
        return None
    scope = snap.config.sidecar_scope(proxy)
    labels = proxy.labels if _source_labels_used(snap) else None
    return (proxy.namespace, scope.key, scope.egress, snap.outbound_mode(proxy), labels, proxy.interception,
            filters.route_inputs(snap, proxy))


def _source_labels_used(snap: Snapshot) -> bool:
    config = snap.config
    return config.memoized(("source_labels_used",), lambda: any(
        m.source_labels for vs in config.by_kind.get("VirtualService", ()) for r in vs.spec.http for m in r.match))


def view_key(snap: Snapshot, proxy: Proxy) -> tuple:
    scope = snap.config.sidecar_scope(proxy)
    return (proxy.namespace, proxy.labels, scope.key, proxy.interception, proxy.ports, proxy.port_map,
            proxy.outbound_port, proxy.inbound_port, proxy.app_host, proxy.kind, proxy.locality, proxy.trust_domain,
            proxy.bootstrap_clusters, ratelimits.view_inputs(snap, proxy), proxy.host_ports, proxy.host_netns)


class Renderer:
    """Renders one snapshot. Cheap to create; memoizes as proxies ask."""

    def __init__(self, snap: Snapshot, prev: "Renderer | None" = None, change: Change | None = None, *,
                 on_problem: Callable[[Proxy, str], None] | None = None):
        self.snap = snap
        self.on_problem = on_problem
        # per (host, caller's trust domain, DestinationRule the caller uses): callers with a mesh certificate
        # get auto-mTLS clusters and endpoints with tlsMode metadata; callers without one ("") plaintext ones;
        # callers of namespaces that see another DestinationRule (exportTo) other policies
        self._hosts: dict[tuple, HostResources] = {}
        self._views: dict[tuple, View] = {}
        self._final: dict[tuple, View] = {}  # with EnvoyPatches applied
        # route configs shared by the views whose routes have the same inputs (`route_inputs`): proxies of
        # different workloads (labels) in one namespace usually differ in nothing their routes are built from
        self._routes: dict[tuple, Rendered] = {}
        self._prev_views: dict[tuple, View] = {}
        # a change of hosts' routes only: the previous base views, whose virtual hosts not touched by the change
        # are reused as they are (`routes.VhostReuse`)
        self._prev_routes: dict[tuple, View] = {}
        self._stale: frozenset[str] = frozenset()
        if prev is not None and change is not None and not change.everything:
            self._hosts = {k: r for k, r in prev._hosts.items() if k[0] not in change.hosts}
            if prev.snap.config is snap.config and prev.snap.jwks is snap.jwks:
                # endpoint-only change: listeners, routes and clusters are unchanged for every view
                self._prev_views = prev._views
            elif _hosts_only(prev.snap, snap, change):
                self._prev_routes, self._stale = prev._views, change.hosts
        self.stats = {"hosts_rendered": 0, "views_rendered": 0, "vhosts_reused": 0}
        self.render_errors: list[tuple[str, str]] = []  # (what, why): left out of a view, see _failed

    # -- per host -------------------------------------------------------------------------------
    def host(self, svc: Service, trust_domain: str = "", namespace: str | None = None) -> HostResources:
        """The clusters and endpoints of `svc` for callers of `namespace` (None: not bound to a namespace)."""
        resolved = self.snap.resolved if namespace is None else self.snap.config.resolved_for(namespace)
        dr = resolved.destination_rule(svc.hostname)
        key = (svc.hostname, trust_domain, dr.key if dr is not None else None)
        hr = self._hosts.get(key)
        if hr is None:
            hr = self._render_host(svc, trust_domain, resolved)
            self._hosts[key] = hr
            self.stats["hosts_rendered"] += 1
        return hr

    def _mesh_tls(self, svc: Service, trust_domain: str) -> C.MeshTls | None:
        if not trust_domain:
            return None
        sans = tuple(spiffe_uri(trust_domain, ns, sa) for ns, sa in self.snap.service_identities(svc))
        return C.MeshTls(tuple(dict.fromkeys(sans + svc.subject_alt_names)),
                         self.snap.resolved.service_mtls_mode(svc) != DISABLE)

    def _render_host(self, svc: Service, trust_domain: str, resolved) -> HostResources:
        mesh = self._mesh_tls(svc, trust_domain)
        mtls = mesh is not None and mesh.auto
        cl: list[Rendered] = []
        eps: list[Rendered] = []
        local: list = []
        for sp in svc.ports:
            for subset, labels in [(None, ())] + list(resolved.subsets(svc.hostname)):
                pol = resolved.policy(svc.hostname, subset, sp.port)
                c = C.outbound(svc, sp, subset, pol, mesh)
                cl.append(render(CLUSTER, c.name, c))
                if c.type == c.EDS:
                    found = self.snap.endpoints_for(svc, sp.port, labels)
                    if pol.locality_sensitive:
                        local.append((c.name, pol, found, mtls))
                    else:
                        eps.append(render(ENDPOINT, c.name, load_assignment(c.name, found, mtls=mtls)))
        return HostResources(tuple(cl), tuple(eps), tuple(local))

    def local_endpoints(self, hr: HostResources, proxy: Proxy) -> tuple[Rendered, ...]:
        """A locality-aware host's endpoints as seen from the caller's locality (cached per locality+labels)."""
        key = (proxy.locality, proxy.labels)
        hit = hr.by_locality.get(key)
        if hit is None:
            hit = tuple(render(ENDPOINT, name, load_assignment(name, found, pol, proxy.locality, proxy.label_dict,
                                                               mtls=mtls))
                        for name, pol, found, mtls in hr.local)
            hr.by_locality[key] = hit
        return hit

    # -- per view -------------------------------------------------------------------------------
    def resources_for(self, proxy: Proxy) -> View:
        """What the proxy gets: its view with the EnvoyPatches that apply to it (those that keep it consistent)."""
        key = view_key(self.snap, proxy)
        final = self._final.get(key)
        if final is None and proxy.kind == PROXYLESS:  # a grpcio xDS client: no Envoy, no EnvoyPatches
            final = self._final[key] = proxyless_view(self.snap, proxy, render)
        if final is None:
            result = self.patched(proxy)
            for e in result.errors:
                self._problem(proxy, f"{e} — skipped for this proxy")
            final = self._final[key] = result.view
        return final

    def base_view(self, proxy: Proxy) -> View:
        """The view without EnvoyPatches (memoized per view key; what the next Renderer may reuse)."""
        key = view_key(self.snap, proxy)
        base = self._views.get(key)
        if base is None:
            base = self._render_view(proxy, self._prev_views.get(key))
            self._views[key] = base
            self.stats["views_rendered"] += 1
            for d in warming(dangling(base)):  # never produced by the translator: a bug if seen
                self._problem(proxy, f"inconsistent view (a Mizzen bug, please report it): {d}")
        return base

    def patched(self, proxy: Proxy) -> Patched:
        """The base view with the proxy's EnvoyPatches applied, and why any was skipped (not memoized)."""
        base = self.base_view(proxy)
        patches = self.snap.resolved.patches_for(proxy)
        result = apply_patches(base, patches, render) if patches else Patched(base)
        filters = envoy_filters_for(self.snap, proxy)  # Istio's EnvoyFilters, after Mizzen's EnvoyPatches
        if filters:
            view, errors = apply_envoy_filters(result.view, filters, render, gateway=proxy.kind == "gateway")
            result = Patched(view, result.errors + tuple(errors))
        return result

    def _problem(self, proxy: Proxy, message: str) -> None:
        if self.on_problem is not None:
            self.on_problem(proxy, message)

    def _render_view(self, proxy: Proxy, prev: View | None) -> View:
        services = self.snap.visible_services(proxy)
        out: View = {CLUSTER: {}, ENDPOINT: {}, LISTENER: {}, ROUTE: {}}
        for svc in services:
            try:
                hr = self.host(svc, proxy.trust_domain, proxy.namespace)
            except Exception as e:  # one service that cannot be rendered must not take the others down
                self._failed(proxy, f"service {svc.hostname}", e)
                continue
            for r in hr.clusters:
                out[CLUSTER][r.name] = r
            for r in hr.endpoints + (self.local_endpoints(hr, proxy) if hr.local else ()):
                out[ENDPOINT][r.name] = r
        if prev is not None:
            for t in (LISTENER, ROUTE):
                out[t] = prev[t]
            for name, r in prev[CLUSTER].items():
                out[CLUSTER].setdefault(name, r)  # inbound, passthrough and feature clusters
            return out
        ctx = ViewContext(self.snap, proxy, services)
        if proxy.kind == "gateway":  # Istio Gateways instead of capture listeners (translate/gateway.py)
            ctx.gateway_routes = GW.gateway_routes(ctx)
        self._static_clusters(ctx, out[CLUSTER])
        rb = RouteBuilder(ctx, self._reuse(proxy))

        def add(t: str, n: str, m) -> None:
            out[t][n] = render(t, n, m)

        if proxy.kind == "gateway":
            try:
                GW.render(ctx, add)
            except Exception as e:  # a gateway that cannot be rendered keeps its clusters, gets no listeners
                self._failed(proxy, "gateway listeners", e)
                out[LISTENER].clear()
                out[ROUTE].clear()
            return out

        inputs = route_inputs(self.snap, proxy)

        def add_route(name: str, build: Callable[[], RouteConfiguration]) -> None:
            key = (name, inputs) if inputs is not None else None
            hit = self._routes.get(key) if key is not None else None
            if hit is None:
                hit = render(ROUTE, name, build())
                if key is not None:
                    self._routes[key] = hit
            out[ROUTE][name] = hit

        self._listeners_and_routes(ctx, rb, add, add_route)
        if rb.reuse is not None:
            self.stats["vhosts_reused"] += rb.reuse.reused
        return out

    def _listeners_and_routes(self, ctx: ViewContext, rb: RouteBuilder, add: Callable, add_route: Callable) -> None:
        proxy, services = ctx.proxy, ctx.services
        protocols = {p: self.snap.inbound_protocol(proxy, p) for p in proxy.ports}
        if proxy.interception == "loopback":
            add(LISTENER, "outbound_http_proxy", L.http_proxy_outbound(ctx))
            add_route(HTTP_PROXY_ROUTE, rb.http_proxy)
            for i, p in enumerate(sorted(proxy.ports)):
                lst = L.loopback_inbound(ctx, p, proxy.inbound_port + i, protocols[p], rb.inbound(p))
                add(LISTENER, lst.name, lst)
        else:
            add(LISTENER, L.VIRTUAL_OUTBOUND, L.virtual_outbound(ctx))
            for port in sorted({p.port for s in services for p in s.ports if is_http(p.protocol)}):
                try:
                    add_route(str(port), lambda: rb.for_port(port))
                except Exception as e:  # this port's routes are empty; every other port still works
                    self._failed(proxy, f"route configuration {port}", e)
                    add(ROUTE, str(port), RouteConfiguration(name=str(port)))
            add(LISTENER, L.VIRTUAL_INBOUND,
                L.virtual_inbound(ctx, protocols, {p: rb.inbound(p) for p in proxy.ports}))

    def _reuse(self, proxy: Proxy) -> VhostReuse | None:
        """The previous snapshot's route configs of this view, when their untouched virtual hosts can be reused."""
        if not self._prev_routes or proxy.kind != "sidecar" or ratelimits.relevant(self.snap.config, proxy):
            return None  # rate limits: per-host config from RateLimits and registry shares, always rendered
        prev = self._prev_routes.get(view_key(self.snap, proxy))
        if prev is None:
            return None
        return VhostReuse(prev[ROUTE], self._stale)

    def _failed(self, proxy: Proxy, what: str, e: Exception) -> None:
        """A render failure, kept (and reported as a problem) instead of failing the whole view."""
        why = f"{type(e).__name__}: {str(e)[:300]}"
        self.render_errors.append((what, why))
        self._problem(proxy, f"{what} could not be rendered, left out: {why}")

    def _static_clusters(self, ctx: ViewContext, out: dict[str, Rendered]) -> None:
        proxy = ctx.proxy
        for c in (C.passthrough(), C.inbound_passthrough(), C.blackhole()):
            out[c.name] = render(CLUSTER, c.name, c)
        for p in proxy.ports:
            c = C.inbound(p, proxy.app_host, proxy.app_port(p), self.snap.inbound_protocol(proxy, p))
            out[c.name] = render(CLUSTER, c.name, c)
        for c in filters.clusters(ctx):
            out[c.name] = render(CLUSTER, c.name, c)
