"""Consistency of one proxy's rendered view, as go-control-plane's `Snapshot.Consistent()`. Pure.

A view is consistent when every name one resource gives Envoy to find another is in the view:
- every EDS cluster's service name has a ClusterLoadAssignment, and every CLA belongs to a cluster;
- every RDS route config name a listener's HCM uses is a route config of the view;
- every cluster a route (its weighted clusters and mirrors), an inline route config or a tcp_proxy sends to
  is a cluster of the view.
A missing CLA or route config leaves a cluster or listener *warming* (Envoy waits for it, 15 s by default,
and a listener is not served at all); a missing cluster answers 503 (NC) on that route.

The translator's own views never dangle, except that a route may name a cluster the proxy does not have
when the config says so: a VirtualService destination whose host is unknown or hidden by the proxy's Sidecar,
or a subset no DestinationRule defines (Istio renders it the same way; Envoy answers 503 NC). So what a
check guards is a change to a view: `apply_patches` refuses an EnvoyPatch that adds any dangling name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from ..model.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, Rendered

_KIND = {CLUSTER: "cluster", ENDPOINT: "endpoints (EDS)", LISTENER: "listener", ROUTE: "route config"}
_MESSAGE = {CLUSTER: cluster_pb2.Cluster, ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
            LISTENER: listener_pb2.Listener, ROUTE: route_pb2.RouteConfiguration}


@dataclass(frozen=True, order=True)
class Dangling:
    """`referrer` (a resource of `referrer_type`) names `missing` (of `missing_type`), which the view lacks.
    For a CLA without a cluster, the referrer is the CLA and `missing` its cluster name."""

    referrer_type: str
    referrer: str
    missing_type: str
    missing: str

    def __str__(self) -> str:
        if self.referrer_type == ENDPOINT:
            return f"endpoints (EDS) {self.referrer!r} would belong to no cluster"
        verb = {ROUTE: "use", ENDPOINT: "wait for"}.get(self.missing_type, "send traffic to")
        return (f"{_KIND[self.referrer_type]} {self.referrer!r} would {verb} {_KIND[self.missing_type]} "
                f"{self.missing!r}, which the proxy's config would not have")


# (type_url, version) -> (names it provides, (type_url, name) it needs); version is a content hash
_REFS: dict[tuple[str, str], tuple[str, tuple[tuple[str, str], ...]]] = {}
_REFS_MAX = 100_000


def _message(r: Rendered):
    return r.message if r.message is not None else _MESSAGE[r.type_url].FromString(r.payload)


def _route_clusters(rcfg: route_pb2.RouteConfiguration) -> Iterable[str]:
    for vh in rcfg.virtual_hosts:
        for route in vh.routes:
            if not route.HasField("route"):
                continue
            act = route.route
            if act.cluster:
                yield act.cluster
            for w in act.weighted_clusters.clusters:
                yield w.name
            for m in act.request_mirror_policies:
                if m.cluster:
                    yield m.cluster


def _listener_refs(lst: listener_pb2.Listener) -> Iterable[tuple[str, str]]:
    chains = list(lst.filter_chains) + ([lst.default_filter_chain] if lst.HasField("default_filter_chain") else [])
    for fc in chains:
        for f in fc.filters:
            if f.typed_config.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
                m = hcm_pb2.HttpConnectionManager()
                f.typed_config.Unpack(m)
                if m.HasField("rds"):
                    yield ROUTE, m.rds.route_config_name
                elif m.HasField("route_config"):
                    yield from ((CLUSTER, c) for c in _route_clusters(m.route_config))
            elif f.typed_config.Is(tcp_proxy_pb2.TcpProxy.DESCRIPTOR):
                tp = tcp_proxy_pb2.TcpProxy()
                f.typed_config.Unpack(tp)
                if tp.cluster:
                    yield CLUSTER, tp.cluster
                for w in tp.weighted_clusters.clusters:
                    yield CLUSTER, w.name


def _refs(r: Rendered) -> tuple[str, tuple[tuple[str, str], ...]]:
    """(the EDS name a cluster provides, or "", the (type, name)s the resource needs)."""
    key = (r.type_url, r.version)
    hit = _REFS.get(key)
    if hit is not None:
        return hit
    msg = _message(r)
    eds, needs = "", ()
    if r.type_url == CLUSTER and msg.type == cluster_pb2.Cluster.EDS:
        eds = msg.eds_cluster_config.service_name or msg.name
        needs = ((ENDPOINT, eds),)
    elif r.type_url == ROUTE:
        needs = tuple(dict.fromkeys((CLUSTER, c) for c in _route_clusters(msg)))
    elif r.type_url == LISTENER:
        needs = tuple(dict.fromkeys(_listener_refs(msg)))
    if len(_REFS) >= _REFS_MAX:
        _REFS.clear()
    hit = _REFS[key] = (eds, needs)
    return hit


def dangling(view: Mapping[str, Mapping[str, Rendered]]) -> frozenset[Dangling]:
    """Every name in `view` that points at nothing (empty: the view is consistent)."""
    out: set[Dangling] = set()
    eds_names: set[str] = set()
    for t in (CLUSTER, ROUTE, LISTENER):
        for name, r in view.get(t, {}).items():
            eds, needs = _refs(r)
            if eds:
                eds_names.add(eds)
            for nt, n in needs:
                if n not in view.get(nt, {}):
                    out.add(Dangling(t, name, nt, n))
    for name in view.get(ENDPOINT, {}):
        if name not in eds_names:
            out.add(Dangling(ENDPOINT, name, CLUSTER, name))
    return frozenset(out)


def warming(found: Iterable[Dangling]) -> list[Dangling]:
    """The dangling names that leave a cluster or listener warming (missing CLAs or route configs) or an
    orphaned CLA: never produced by the translator itself, so a bug if a base view has them."""
    return sorted(d for d in found if d.missing_type in (ENDPOINT, ROUTE) or d.referrer_type == ENDPOINT)
