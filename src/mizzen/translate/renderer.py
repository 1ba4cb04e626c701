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

from ..model import ratelimits
from ..model.dependencies import Change
from ..model.services import Service, is_http
from ..model.snapshot import Snapshot
from ..model.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, Proxy, Rendered
from . import clusters as C
from . import filters
from . import listeners as L
from .common import HTTP_PROXY_ROUTE
from .consistency import dangling, warming
from .endpoints import load_assignment
from .filters import ViewContext
from .patches import Patched, apply_patches
from .routes import RouteBuilder

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


def view_key(snap: Snapshot, proxy: Proxy) -> tuple:
    scope = snap.config.sidecar_scope(proxy)
    return (proxy.namespace, proxy.labels, scope.key, proxy.interception, proxy.ports, proxy.port_map,
            proxy.outbound_port, proxy.inbound_port, proxy.app_host, proxy.kind, proxy.locality,
            ratelimits.view_inputs(snap, proxy))


class Renderer:
    """Renders one snapshot. Cheap to create; memoizes as proxies ask."""

    def __init__(self, snap: Snapshot, prev: "Renderer | None" = None, change: Change | None = None, *,
                 on_problem: Callable[[Proxy, str], None] | None = None):
        self.snap = snap
        self.on_problem = on_problem
        self._hosts: dict[str, HostResources] = {}
        self._views: dict[tuple, View] = {}
        self._final: dict[tuple, View] = {}  # with EnvoyPatches applied
        self._prev_views: dict[tuple, View] = {}
        if prev is not None and change is not None and not change.everything:
            self._hosts = {h: r for h, r in prev._hosts.items() if h not in change.hosts}
            if prev.snap.config is snap.config:
                # endpoint-only change: listeners, routes and clusters are unchanged for every view
                self._prev_views = prev._views
        self.stats = {"hosts_rendered": 0, "views_rendered": 0}

    # -- per host -------------------------------------------------------------------------------
    def host(self, svc: Service) -> HostResources:
        hr = self._hosts.get(svc.hostname)
        if hr is None:
            hr = self._render_host(svc)
            self._hosts[svc.hostname] = hr
            self.stats["hosts_rendered"] += 1
        return hr

    def _render_host(self, svc: Service) -> HostResources:
        resolved = self.snap.resolved
        cl: list[Rendered] = []
        eps: list[Rendered] = []
        local: list = []
        for sp in svc.ports:
            for subset, labels in [(None, ())] + list(resolved.subsets(svc.hostname)):
                pol = resolved.policy(svc.hostname, subset, sp.port)
                c = C.outbound(svc, sp, subset, pol)
                cl.append(render(CLUSTER, c.name, c))
                if c.type == c.EDS:
                    found = self.snap.endpoints_for(svc, sp.port, labels)
                    if pol.locality_sensitive:
                        local.append((c.name, pol, found))
                    else:
                        eps.append(render(ENDPOINT, c.name, load_assignment(c.name, found)))
        return HostResources(tuple(cl), tuple(eps), tuple(local))

    def local_endpoints(self, hr: HostResources, proxy: Proxy) -> tuple[Rendered, ...]:
        """A locality-aware host's endpoints as seen from the caller's locality (cached per locality+labels)."""
        key = (proxy.locality, proxy.labels)
        hit = hr.by_locality.get(key)
        if hit is None:
            hit = tuple(render(ENDPOINT, name, load_assignment(name, found, pol, proxy.locality, proxy.label_dict))
                        for name, pol, found in hr.local)
            hr.by_locality[key] = hit
        return hit

    # -- per view -------------------------------------------------------------------------------
    def resources_for(self, proxy: Proxy) -> View:
        """What the proxy gets: its view with the EnvoyPatches that apply to it (those that keep it consistent)."""
        key = view_key(self.snap, proxy)
        final = self._final.get(key)
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
        return apply_patches(base, patches, render) if patches else Patched(base)

    def _problem(self, proxy: Proxy, message: str) -> None:
        if self.on_problem is not None:
            self.on_problem(proxy, message)

    def _render_view(self, proxy: Proxy, prev: View | None) -> View:
        services = self.snap.visible_services(proxy)
        out: View = {CLUSTER: {}, ENDPOINT: {}, LISTENER: {}, ROUTE: {}}
        for svc in services:
            hr = self.host(svc)
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
        self._static_clusters(ctx, out[CLUSTER])
        rb = RouteBuilder(ctx)

        def add(t: str, n: str, m) -> None:
            out[t][n] = render(t, n, m)

        protocols = {p: self.snap.inbound_protocol(proxy, p) for p in proxy.ports}
        if proxy.interception == "loopback":
            add(LISTENER, "outbound_http_proxy", L.http_proxy_outbound(ctx))
            add(ROUTE, HTTP_PROXY_ROUTE, rb.http_proxy())
            for i, p in enumerate(sorted(proxy.ports)):
                lst = L.loopback_inbound(ctx, p, proxy.inbound_port + i, protocols[p], rb.inbound(p))
                add(LISTENER, lst.name, lst)
        else:
            add(LISTENER, L.VIRTUAL_OUTBOUND, L.virtual_outbound(ctx))
            for port in sorted({p.port for s in services for p in s.ports if is_http(p.protocol)}):
                add(ROUTE, str(port), rb.for_port(port))
            add(LISTENER, L.VIRTUAL_INBOUND,
                L.virtual_inbound(ctx, protocols, {p: rb.inbound(p) for p in proxy.ports}))
        return out

    def _static_clusters(self, ctx: ViewContext, out: dict[str, Rendered]) -> None:
        proxy = ctx.proxy
        for c in (C.passthrough(), C.inbound_passthrough(), C.blackhole()):
            out[c.name] = render(CLUSTER, c.name, c)
        for p in proxy.ports:
            c = C.inbound(p, proxy.app_host, proxy.app_port(p), self.snap.inbound_protocol(proxy, p))
            out[c.name] = render(CLUSTER, c.name, c)
        for c in filters.clusters(ctx):
            out[c.name] = render(CLUSTER, c.name, c)
