"""Istio's semantics, resolved: the questions `translate/` asks instead of re-deriving Istio's rules. Pure.

One `Resolved` per `ConfigIndex` (`config.resolved`, or `snapshot.resolved`), memoizing its answers:

    r.for_namespace(ns)                   # the same answers as proxies of `ns` see them (exportTo)
    r.http_routes(host)                   # the host's VirtualService http routes, delegation merged
    r.matches_for(route, port, proxy)     # the matches of one route that apply to this proxy
    r.destination(dest, namespace, port)  # a route destination as (host FQDN, subset, port)
    r.route_destinations(host)            # every host the host's routes and mirrors send to
    r.policy(host, subset, port)          # the effective DestinationRule traffic policy
    r.subsets(host)                       # the host's DestinationRule subsets: ((name, labels), ...)
    r.telemetry_for(proxy)                # metrics, tracing and access logs of a proxy (model/telemetry.py)
    r.access_logging(proxy)
    r.patches_for(proxy)                  # the EnvoyPatches that apply to a proxy, in order
    r.mtls(proxy)                         # its PeerAuthentication mode, per inbound port (model/security.py)
    r.service_mtls_mode(svc)              # the namespace-level mode of a service (auto mTLS off if DISABLE)
    r.authorization_for(proxy)            # its AuthorizationPolicies by action (model/authz.py)
    r.request_authentications_for(proxy)  # its RequestAuthentications, in order

`translate/` turns these answers into Envoy messages; `model/dependencies.py` uses them to know what a
proxy's config depends on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol

from ..api.base import Resource
from ..api.virtual_service import HTTPMatchRequest, HTTPRoute
from . import authz, delegate, telemetry
from .labels import ROOT_NAMESPACE, labels_match, scoped_to
from .policy import Policy, effective
from .security import MtlsPolicy, namespace_mode, peer_mtls
from .services import Service
from .telemetry import TelemetryConfig
from .types import Proxy


class Config(Protocol):
    """What Resolved reads of a `snapshot.ConfigIndex`."""

    services: Mapping[str, Service]
    by_kind: Mapping[str, tuple[Resource, ...]]
    destination_rules_by_host: Mapping[str, tuple[Resource, ...]]

    def resolve(self, host: str, namespace: str) -> str: ...

    def virtual_service_for(self, host: str, namespace: str | None = None) -> Resource | None: ...

    def destination_rule_for(self, host: str, namespace: str | None = None) -> Resource | None: ...

    def delegate_for(self, root: Resource, ref) -> Resource | None: ...

    def memoized(self, key: tuple, compute): ...


@dataclass(frozen=True)
class Destination:
    """Where a route sends traffic: the cluster `outbound|<port>|<subset>|<host>`."""

    host: str  # FQDN
    subset: str | None
    port: int


@dataclass(frozen=True)
class ResolvedRoute:
    owner: Resource  # the VirtualService whose namespace resolves the route's destinations (a delegate's own)
    stem: str  # default route name stem (when the route has no name)
    route: HTTPRoute  # with delegation merged


class Resolved:
    """Answers for one ConfigIndex (immutable, so answers are memoized). `namespace`: the proxies' namespace
    whose view this is (which VirtualService and DestinationRule of a host they use, by exportTo); None: the
    oldest one of each host. The views of all namespaces share one memo, keyed by the resource chosen."""

    def __init__(self, config: Config, namespace: str | None = None, base: "Resolved | None" = None):
        self.config = config
        self.namespace = namespace
        if base is None:
            self._routes: dict[tuple, tuple[ResolvedRoute, ...]] = {}
            self._policies: dict[tuple, Policy] = {}
            self._route_hosts: dict[tuple, frozenset[str]] = {}
            self._per_proxy: dict[tuple, object] = {}
            self._telemetry: dict[tuple, TelemetryConfig] = {}
            self._views: dict[str, Resolved] = {}
        else:
            self._routes, self._policies, self._route_hosts = base._routes, base._policies, base._route_hosts
            self._per_proxy, self._telemetry, self._views = base._per_proxy, base._telemetry, base._views

    def for_namespace(self, namespace: str) -> "Resolved":
        """These answers as proxies of `namespace` see them."""
        hit = self._views.get(namespace)
        if hit is None:
            hit = self._views[namespace] = Resolved(self.config, namespace, self)
        return hit

    # -- VirtualService -------------------------------------------------------------------------
    def virtual_service(self, host: str) -> Resource | None:
        """The VirtualService of `host` this view uses (exportTo; the oldest of a group, as Istio for sidecars)."""
        return self.config.virtual_service_for(host, self.namespace)

    def http_routes(self, host: str) -> tuple[ResolvedRoute, ...]:
        """The http routes of the VirtualService for `host` (`virtual_service`), each delegating route
        replaced by its delegate's routes merged with it (`model/delegate.py`)."""
        vs = self.virtual_service(host)
        if vs is None:
            return ()
        key = (host, vs.key)
        hit = self._routes.get(key)
        if hit is None:
            hit = tuple(ResolvedRoute(o, s, r) for o, s, r in delegate.expand(self.config, vs))
            self._routes[key] = hit
        return hit

    @staticmethod
    def matches_for(route: HTTPRoute, port: int | None, proxy: Proxy) -> tuple[HTTPMatchRequest | None, ...]:
        """The matches of `route` that apply to `proxy` on `port`: a match whose port, sourceLabels,
        sourceNamespace or gateways do not fit is dropped. `(None,)` = the route has no matches (match all);
        `()` = none applies, the route is left out for this proxy."""
        if not route.match:
            return (None,)
        return tuple(m for m in route.match if _applies(m, port, proxy))

    def destination(self, dest, namespace: str, port: int) -> Destination:
        """A route `destination` written in `namespace`, on a route of the route config for `port`: the
        host resolved to its FQDN; the port as given, else the service's only port, else `port` (Istio)."""
        host = self.config.resolve(dest.host, namespace)
        svc = self.config.services.get(host)
        if dest.port is not None:
            p = dest.port.number
        elif svc is not None and len(svc.ports) == 1:
            p = svc.ports[0].port
        else:
            p = port
        return Destination(host, dest.subset or None, p)

    def route_destinations(self, host: str) -> frozenset[str]:
        """Every host the routes of `host` (and their mirrors) send to: their clusters' names and route
        hash policies depend on those hosts' ports and DestinationRules."""
        vs = self.virtual_service(host)
        key = (host, vs.key if vs is not None else None)
        hit = self._route_hosts.get(key)
        if hit is None:
            out: set[str] = set()
            for rr in self.http_routes(host):
                r, ns = rr.route, rr.owner.namespace
                dests = [d.destination for d in r.route] + [m.destination for m in r.mirrors]
                if r.mirror is not None:
                    dests.append(r.mirror)
                out.update(self.config.resolve(d.host, ns) for d in dests)
            hit = self._route_hosts[key] = frozenset(out)
        return hit

    # -- DestinationRule ------------------------------------------------------------------------
    def destination_rule(self, host: str) -> Resource | None:
        """The DestinationRule of `host` this view uses (exportTo and Istio's lookup order)."""
        return self.config.destination_rule_for(host, self.namespace)

    def policy(self, host: str, subset: str | None, port: int) -> Policy:
        dr = self.destination_rule(host)
        key = (dr.key if dr is not None else None, host, subset or None, port)
        hit = self._policies.get(key)
        if hit is None:
            hit = self._policies[key] = effective(dr, subset, port)
        return hit

    def subsets(self, host: str) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
        dr = self.destination_rule(host)
        return tuple((s.name, tuple(sorted(s.labels.items()))) for s in dr.spec.subsets) if dr else ()

    # -- per proxy ------------------------------------------------------------------------------
    def telemetry_for(self, proxy: Proxy) -> TelemetryConfig:
        """The proxy's telemetry: metrics per side, tracing per side (provider, sampling, tags), access logs —
        Istio's Telemetry hierarchy over the mesh default (`model/telemetry.py`). Memoized per namespace and
        labels."""
        key = (proxy.namespace, proxy.labels)
        hit = self._telemetry.get(key)
        if hit is None:
            hit = self._telemetry[key] = telemetry.resolve(self.config, proxy)
        return hit

    def access_logging(self, proxy: Proxy) -> bool:
        """Access logs are on when the most specific Telemetry that says anything about them has an
        accessLogging entry that is not disabled."""
        return self.telemetry_for(proxy).access_logging

    def patches_for(self, proxy: Proxy) -> tuple[Resource, ...]:
        """EnvoyPatches that apply to the proxy: the root namespace's (mesh-wide) first, then its own
        namespace's; oldest first in each; a workloadSelector narrows a patch to the proxies it selects."""
        labels = proxy.label_dict
        patches = self.config.by_kind.get("EnvoyPatch", ())
        out: list[Resource] = []
        for ns in dict.fromkeys((ROOT_NAMESPACE, proxy.namespace)):
            out += [p for p in patches if p.namespace == ns and scoped_to(
                p.namespace, p.spec.workload_selector.labels if p.spec.workload_selector else None,
                proxy.namespace, labels)]
        return tuple(out)


    # -- mutual TLS ----------------------------------------------------------------------------------
    def mtls(self, proxy: Proxy) -> MtlsPolicy:
        """The proxy's effective PeerAuthentication: `.for_port(container port)` is DISABLE, PERMISSIVE or
        STRICT (workload > namespace > mesh; UNSET inherits; PERMISSIVE when none applies)."""
        return peer_mtls(self.config, proxy.namespace, proxy.labels)

    def service_mtls_mode(self, svc: Service) -> str:
        """Istio's best-effort mode of a service for auto mTLS: DISABLE for mesh-external ones, else the
        mode of its namespace from the mesh- and namespace-wide PeerAuthentications."""
        if svc.mesh_external:
            return "DISABLE"
        return self.config.memoized(("ns_mtls", svc.namespace), lambda: namespace_mode(self.config, svc.namespace))
    def authorization_for(self, proxy: Proxy) -> authz.AuthzPolicies:
        """The AuthorizationPolicies that apply to the proxy (root namespace, then its own; oldest first)."""
        return self._memo(("authz", proxy.namespace, proxy.labels), lambda: authz.authorization_for(self.config, proxy))

    def request_authentications_for(self, proxy: Proxy) -> tuple[Resource, ...]:
        return self._memo(("authn", proxy.namespace, proxy.labels),
                          lambda: authz.request_authentications_for(self.config, proxy))

    def _memo(self, key: tuple, compute):
        hit = self._per_proxy.get(key)
        if hit is None:
            hit = self._per_proxy[key] = compute()
        return hit


def _applies(m: HTTPMatchRequest, port: int | None, proxy: Proxy) -> bool:
    if m.port is not None and port is not None and m.port != port:
        return False
    if m.source_labels and not labels_match(m.source_labels, proxy.label_dict):
        return False
    if m.source_namespace and m.source_namespace != proxy.namespace:
        return False
    if m.gateways and "mesh" not in m.gateways:
        return False
    return True
