"""Snapshot × Proxy → xDS resources, rendered and serialized once per distinct input.

Three levels of sharing keep a large mesh cheap:
- per snapshot, proxies with the same *view key* (namespace, labels, Sidecar scope, interception
  settings) share one rendered resource set;
- per host, clusters and endpoints are rendered once and shared by every view that sees the host;
- across snapshots, a new `Renderer` takes the previous one and the set of changed hosts: everything
  of an unchanged host (and, when only endpoints changed, every listener/route/cluster) is reused as is,
  with the same bytes and version.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ..model.services import Service, is_http
from ..model.snapshot import Snapshot
from ..model.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, Proxy, Rendered
from . import clusters as C
from . import listeners as L
from .common import HTTP_PROXY_ROUTE, outbound_cluster
from . import policies as P
from .endpoints import load_assignment, locality_sensitive
from .accesslog import access_logging_enabled, with_access_log
from .patches import apply_patches, patches_for
from .routes import RouteBuilder


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
            proxy.outbound_port, proxy.inbound_port, proxy.app_host, proxy.kind, proxy.locality)


class Renderer:
    """Renders one snapshot. Cheap to create; memoizes as proxies ask."""

    def __init__(self, snap: Snapshot, prev: "Renderer | None" = None, changed_hosts: frozenset[str] | None = None):
        self.snap = snap
        self._hosts: dict[str, HostResources] = {}
        self._views: dict[tuple, dict[str, dict[str, Rendered]]] = {}
        self._final: dict[tuple, dict[str, dict[str, Rendered]]] = {}  # with EnvoyPatches applied
        self._prev_views: dict[tuple, dict[str, dict[str, Rendered]]] = {}
        if prev is not None and changed_hosts is not None:
            self._hosts = {h: r for h, r in prev._hosts.items() if h not in changed_hosts}
            if prev.snap.config is snap.config:
                # endpoint-only change: listeners, routes and clusters are unchanged for every view
                self._prev_views = prev._views
        self.stats = {"hosts_rendered": 0, "views_rendered": 0}
        self.patch_errors: list = []  # EnvoyPatch values that do not parse (refused at apply; kept for debug)

    # -- per host -------------------------------------------------------------------------------
    def host(self, svc: Service) -> HostResources:
        hr = self._hosts.get(svc.hostname)
        if hr is None:
            hr = self._render_host(svc)
            self._hosts[svc.hostname] = hr
            self.stats["hosts_rendered"] += 1
        return hr

    def _render_host(self, svc: Service) -> HostResources:
        dr = self.snap.config.destination_rules_by_host.get(svc.hostname)
        subsets = [(s.name, tuple(sorted(s.labels.items()))) for s in dr.spec.subsets] if dr else []
        cl: list[Rendered] = []
        eps: list[Rendered] = []
        local: list = []
        for sp in svc.ports:
            for subset, labels in [(None, ())] + subsets:
                c = C.outbound(svc, sp, subset, dr)
                cl.append(render(CLUSTER, c.name, c))
                if c.type == c.EDS:
                    pol = P.effective(dr, subset, sp.port)
                    found = self.snap.endpoints_for(svc, sp.port, labels)
                    if locality_sensitive(pol):
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
    def resources_for(self, proxy: Proxy) -> dict[str, dict[str, Rendered]]:
        key = view_key(self.snap, proxy)
        final = self._final.get(key)
        if final is None:
            base = self._views.get(key)
            if base is None:
                base = self._render_view(proxy, self._prev_views.get(key))
                self._views[key] = base  # unpatched: what the next Renderer may reuse
                self.stats["views_rendered"] += 1
            final = base
            patches = patches_for(self.snap, proxy)
            if patches:
                final, errors = apply_patches(base, patches, render)
                self.patch_errors.extend(errors)
            self._final[key] = final
        return final

    def _render_view(self, proxy: Proxy, prev: dict | None) -> dict[str, dict[str, Rendered]]:
        services = self.snap.visible_services(proxy)
        out: dict[str, dict[str, Rendered]] = {CLUSTER: {}, ENDPOINT: {}, LISTENER: {}, ROUTE: {}}
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
                out[CLUSTER].setdefault(name, r)  # inbound and passthrough clusters
            return out
        self._static_clusters(proxy, out[CLUSTER])
        rb = RouteBuilder(self.snap, proxy)
        log_on = access_logging_enabled(self.snap, proxy)

        def add(t: str, n: str, m) -> None:
            out[t][n] = render(t, n, with_access_log(m) if log_on and t == LISTENER else m)

        protocols = {p: self.snap.inbound_protocol(proxy, p) for p in proxy.ports}
        if proxy.interception == "loopback":
            add(LISTENER, "outbound_http_proxy", L.http_proxy_outbound(proxy, self.snap, services))
            add(ROUTE, HTTP_PROXY_ROUTE, rb.http_proxy(services))
            for i, p in enumerate(sorted(proxy.ports)):
                lst = L.loopback_inbound(proxy, p, proxy.inbound_port + i, protocols[p], rb.inbound(p))
                add(LISTENER, lst.name, lst)
        else:
            add(LISTENER, L.VIRTUAL_OUTBOUND, L.virtual_outbound(proxy, services, self.snap))
            for port in sorted({p.port for s in services for p in s.ports if is_http(p.protocol)}):
                add(ROUTE, str(port), rb.for_port(port, services))
            add(LISTENER, L.VIRTUAL_INBOUND,
                L.virtual_inbound(proxy, protocols, {p: rb.inbound(p) for p in proxy.ports}))
        return out

    def _static_clusters(self, proxy: Proxy, out: dict[str, Rendered]) -> None:
        for c in (C.passthrough(), C.inbound_passthrough(), C.blackhole()):
            out[c.name] = render(CLUSTER, c.name, c)
        for p in proxy.ports:
            c = C.inbound(p, proxy.app_host, proxy.app_port(p), self.snap.inbound_protocol(proxy, p))
            out[c.name] = render(CLUSTER, c.name, c)


def cluster_names_for(svc: Service, port: int, subsets: list[str]) -> list[str]:
    return [outbound_cluster(port, s, svc.hostname) for s in [None, *subsets]]
