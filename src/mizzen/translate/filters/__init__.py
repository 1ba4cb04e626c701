"""HTTP features behind one interface, one module each, registered in one ordered table. Pure.

Shaped like Envoy Gateway's translator (`internal/xds/translator/httpfilters.go`): a feature (`base.Feature`)
may patch
  - the HTTP connection manager of a filter chain: add its filter to `http_filters`, set HCM fields;
  - a virtual host (virtual-host-level config);
  - a route (`typed_per_filter_config[name]`), given the VirtualService route it was built from;
  - a tcp_proxy (network-level features, e.g. access logs), or put network filters before it (network RBAC);
and may add clusters its filters need (a rate-limit service, a JWKS server, a trace collector).
`FEATURES` is the table: its order is the order of the filters in every HCM, so the router comes last.
`listeners.py` and `routes.py` call the hooks through the functions below and know no feature by name.

**Adding a feature** (RBAC, JWT, rate limits, tap, tracing ...) is one module and one line in `FEATURES`:

    # translate/filters/rbac.py
    from .base import Chain, Feature, ViewContext

    class Rbac(Feature):
        name = "envoy.filters.http.rbac"

        def patch_hcm(self, hcm, at: Chain, ctx: ViewContext) -> None:
            policies = ctx.once("rbac", lambda: ctx.resolved.authorization_for(ctx.proxy))  # asked of model/
            if not at.outbound and policies:
                hcm.http_filters.append(HttpFilter(name=self.name, typed_config=pack(...)))

    FEATURE = Rbac()

Rules: a hook decides from `at` (which chain) and `ctx` (the proxy, its snapshot, `ctx.resolved`) whether it
applies, and does nothing otherwise, so a proxy that uses no feature keeps byte-identical listeners; what a
feature needs to know about Istio resources is a question for `model/resolved.py`, not re-derived here; when
the feature adds a per-proxy kind, give it an entry in `model/dependencies.PROXY_KINDS` so that changing one
pushes the proxies it applies to; a feature whose `patch_virtual_host` / `patch_route` read nothing of the proxy
returns () from `route_inputs` (else the proxies' route configs are not shared across workloads). Tests: a
golden case under `tests/golden/` (checked by the real Envoy).
"""
from __future__ import annotations

from typing import Iterable

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from ...api.virtual_service import HTTPRoute
from ...model.services import Service
from . import accesslog, cors, fault, jwt, rbac, ratelimit, router, stats, tap, tracing
from .base import Chain, Feature, ViewContext

# The table, in HCM filter order (the router is terminal: last).
FEATURES: tuple[Feature, ...] = (
    tap.FEATURE,  # first: taps every request as it arrives (inert while nobody watches)
    cors.FEATURE,
    jwt.FEATURE,  # inbound: validates tokens; its metadata feeds the RBAC filters after it
    rbac.FEATURE,  # inbound: AUDIT, DENY, ALLOW filters (HTTP chains) / network RBAC (TCP chains)
    ratelimit.FEATURE,  # after authorization (a denied request spends no quota), before fault (its delays)
    fault.FEATURE,
    stats.FEATURE,  # Istio metrics: the access-log stream to the agent
    tracing.FEATURE,  # the HCM's tracer
    accesslog.FEATURE,
    router.FEATURE,
)

__all__ = ["Chain", "Feature", "ViewContext", "FEATURES", "patch_hcm", "patch_tcp_proxy", "network_filters",
           "patch_virtual_host", "patch_route", "route_inputs", "clusters"]


def patch_hcm(hcm: hcm_pb2.HttpConnectionManager, at: Chain, ctx: ViewContext) -> None:
    for f in FEATURES:
        f.patch_hcm(hcm, at, ctx)


def patch_tcp_proxy(tp: tcp_proxy_pb2.TcpProxy, at: Chain, ctx: ViewContext) -> None:
    for f in FEATURES:
        f.patch_tcp_proxy(tp, at, ctx)


def network_filters(at: Chain, ctx: ViewContext) -> list[lc.Filter]:
    return [f for feature in FEATURES for f in feature.network_filters(at, ctx)]


def patch_virtual_host(vh: rc.VirtualHost, svc: Service | None, at: Chain, ctx: ViewContext) -> None:
    for f in FEATURES:
        f.patch_virtual_host(vh, svc, at, ctx)


def patch_route(route: rc.Route, http_route: HTTPRoute | None, at: Chain, ctx: ViewContext) -> None:
    for f in FEATURES:
        f.patch_route(route, http_route, at, ctx)


def route_inputs(snap, proxy) -> tuple:
    """Every feature's `route_inputs` (the proxy's own, for a feature that does not say)."""
    return tuple(f.route_inputs(snap, proxy) for f in FEATURES)


def clusters(ctx: ViewContext) -> Iterable[cluster_pb2.Cluster]:
    for f in FEATURES:
        yield from f.clusters(ctx)
