"""The interface every HTTP feature implements, and what its hooks are given. Pure."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from ...api.virtual_service import HTTPRoute
from ...model.resolved import Resolved
from ...model.services import Service
from ...model.snapshot import Snapshot
from ...model.types import Proxy


@dataclass(frozen=True)
class Chain:
    """Where a hook is called: an outbound chain (the caller's side; VirtualService features act here, as
    in Istio) or an inbound one (the callee's side), and its destination port (None: loopback mode's
    outbound HTTP proxy, which serves every port). A gateway's chains are outbound with `gateway` set; their
    port is the Gateway server port."""

    outbound: bool
    port: int | None = None
    # a gateway's chain: outbound for VirtualService features (the gateway calls the backends), and also
    # where the policies selecting the gateway's own workload are enforced (RequestAuthentication,
    # AuthorizationPolicy, workloadSelector RateLimits), as Istio's gateways do: the gateway is the callee of
    # the mesh's outside clients
    gateway: bool = False

    @property
    def callee(self) -> bool:
        """Do the policies of the proxy's own workload apply at this chain (an inbound or a gateway chain)?"""
        return not self.outbound or self.gateway


@dataclass
class ViewContext:
    """One proxy's view being rendered: the proxy, the snapshot, the services it sees."""

    snap: Snapshot
    proxy: Proxy
    services: tuple[Service, ...]  # visible services, by hostname
    memo: dict = field(default_factory=dict)
    # a gateway's view: the http routes of the VirtualServices bound to it (translate/gateway.py), which
    # are no visible host's routes but decide its features as well
    gateway_routes: tuple[HTTPRoute, ...] = ()

    @property
    def resolved(self) -> Resolved:
        """Istio's semantics as this proxy sees them (its namespace: exportTo of VirtualServices and
        DestinationRules)."""
        return self.snap.config.resolved_for(self.proxy.namespace)

    def once(self, key: Any, compute: Callable[[], Any]) -> Any:
        """A per-view answer computed once (hooks run once per chain, virtual host or route)."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    def any_route(self, key: str, pred: Callable[[HTTPRoute], bool]) -> bool:
        """Does any http route of a visible host (delegation merged) satisfy `pred`? Cached under `key`."""
        return self.once(("any_route", key), lambda: any(pred(r) for r in self.gateway_routes) or any(
            pred(rr.route) for s in self.services for rr in self.resolved.http_routes(s.hostname)))


class Feature:
    """One HTTP feature. Every hook defaults to doing nothing; override those the feature needs.

    `name` is the Envoy filter name: the HCM filter's name and the key of its per-route config."""

    name: str = ""

    def patch_hcm(self, hcm: hcm_pb2.HttpConnectionManager, at: Chain, ctx: ViewContext) -> None:
        """Add the feature's filter to `hcm.http_filters` (the table's order is the chain's order) and/or set
        HCM fields, when this chain needs it."""

    def patch_tcp_proxy(self, tp: tcp_proxy_pb2.TcpProxy, at: Chain, ctx: ViewContext) -> None:
        """Network-level features (access logs) on a tcp_proxy chain."""

    def network_filters(self, at: Chain, ctx: ViewContext) -> Iterable[lc.Filter]:
        """Network filters to put before the tcp_proxy of a TCP chain (e.g. the network RBAC filter), in table
        order. `at.port` is None for a passthrough chain (traffic to a port no listener chain declares)."""
        return ()

    def patch_virtual_host(self, vh: rc.VirtualHost, svc: Service | None, at: Chain, ctx: ViewContext) -> None:
        """Virtual-host-level config of an outbound service's virtual host (`svc`), or of an inbound route
        config's only virtual host (`svc` None)."""

    def patch_route(self, route: rc.Route, http_route: HTTPRoute | None, at: Chain, ctx: ViewContext) -> None:
        """Per-route config (`route.typed_per_filter_config[self.name]`). `http_route` is the VirtualService
        route (delegation merged) it was built from; None for a default route (no VirtualService) and
        inbound routes."""

    def route_inputs(self, snap: Snapshot, proxy: Proxy) -> Any:
        """What `patch_virtual_host` / `patch_route` read of the proxy beyond the snapshot, the route and what
        `translate.renderer.route_inputs` names (namespace, Sidecar scope): sidecars whose answers agree for every
        feature share their outbound route configs. The default shares nothing when the feature patches routes
        or virtual hosts (the whole proxy); a feature whose route hooks read nothing of the proxy returns ()."""
        cls = type(self)
        if cls.patch_route is Feature.patch_route and cls.patch_virtual_host is Feature.patch_virtual_host:
            return ()
        return proxy

    def clusters(self, ctx: ViewContext) -> Iterable[cluster_pb2.Cluster]:
        """Extra clusters the feature's filters need (e.g. a rate-limit service, a JWKS server)."""
        return ()
