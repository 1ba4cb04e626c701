"""Proxyless gRPC: the xDS shapes grpcio's own xDS client understands (no Envoy in between). Pure.

A grpcio channel to `xds:///echo.default.svc.cluster.local:50051` asks (SotW ADS) for the Listener named
exactly like its target, then the RouteConfiguration, Clusters and ClusterLoadAssignments it names. For each
visible service's HTTP/gRPC port this renders:

- Listeners named by every form a caller may use — `echo:50051` (same namespace only), `echo.ns:50051`,
  `echo.ns.svc:50051`, the FQDN with the port, the VIP with the port, and the bare names when the service has
  one such port — each an `api_listener` HttpConnectionManager with RDS and the filters gRPC implements:
  fault injection (gRFC A33) then the router;
- one RouteConfiguration `<fqdn>:<port>` (one virtual host, `*`): the VirtualService's routes as gRPC reads
  them (gRFC A28: path prefix/exact/regex and header matches, weighted clusters; A31 timeouts as
  `max_stream_duration`; A44 retries on gRPC status codes; A33 faults per route; A42 ring-hash header
  hash policies);
- the EDS clusters `outbound|<port>|<subset>|<fqdn>` (ROUND_ROBIN, or RING_HASH with XX_HASH for a
  consistentHash, gRPC's only hash function; `http2MaxRequests` as the circuit breaker's max_requests,
  gRFC A32) and their ClusterLoadAssignments, grouped by locality with a weight (gRPC rejects a CLA whose
  localities have no weight: `endpoints.load_assignment` always gives one).

What gRPC does not implement is left out and recorded as a `Gap` (host, field, why): `mizzen analyze`
reports the same list for Workloads annotated `mizzen.dev/proxyless: "true"`, so nothing is silently
ignored. Notable ones: LEAST_REQUEST (grpcio's C core has no least_request policy; a cluster naming it
would be NACKed whole, so it is served as ROUND_ROBIN), outlier detection by consecutive errors (gRPC
implements only success-rate and failure-percentage ejection), retries on HTTP conditions, per-try
timeouts, header rewriting, mirrors, redirects, direct responses, CORS and query-parameter matches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from ..api.duration import duration_seconds
from ..api.virtual_service import HTTPRoute, split_retry_on
from ..model.policy import Policy
from ..model.resolved import Destination
from ..model.services import Service, is_http
from ..model.snapshot import Snapshot
from ..model.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, Proxy, Rendered
from . import policies
from .common import ads_source, duration, outbound_cluster, pack, socket_address, u32
from .endpoints import load_assignment
from .filters import fault
from .routes import domains_for, route_match

PROXYLESS = "proxyless"  # Proxy.kind (node metadata PROXY_TYPE) of a proxyless gRPC client
ANNOTATION = "mizzen.dev/proxyless"  # on a Workload: its pods run proxyless gRPC clients (analyze checks them)
GRPC_RETRY_ON = ("cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable")
ROUTER = "envoy.filters.http.router"
HCM = "envoy.filters.network.http_connection_manager"
# gRFC A36: an xDS-enabled grpcio server asks for this Listener name with the address it listens on
SERVER_LISTENER_TEMPLATE = "grpc/server?xds.resource.listening_address=%s"
DEFAULT_BACKOFF = 0.025  # gRPC's own default base interval (gRFC A44)

View = dict[str, dict[str, Rendered]]


@dataclass(frozen=True)
class Gap:
    """Something the config asks for that a proxyless gRPC client will not do."""

    host: str  # the service FQDN whose routes or policy say it
    resource: str  # "VirtualService ns/name" or "DestinationRule ns/name"
    path: str  # the field, e.g. "spec.http[0].retries.perTryTimeout"
    message: str


def listener_names(svc: Service, port: int, proxy_ns: str, http_ports: int) -> list[str]:
    """The xds:/// target names a caller in `proxy_ns` may use for this service port."""
    return domains_for(svc, port, proxy_ns, with_bare=(http_ports == 1))


def route_config_name(svc: Service, port: int) -> str:
    return f"{svc.hostname}:{port}"


class ProxylessBuilder:
    """Builds one proxyless client's resources and the gaps found on the way."""

    def __init__(self, snap: Snapshot, proxy: Proxy):
        self.snap = snap
        self.proxy = proxy
        self.resolved = snap.config.resolved_for(proxy.namespace)
        self.gaps: list[Gap] = []
        self._gap_keys: set[tuple[str, str, str]] = set()

    def _gap(self, host: str, where: str, message: str) -> None:
        """`where`: "<Kind> <ns>/<name> <path>"."""
        kind, ref, path = (where.split(" ", 2) + ["", ""])[:3]
        key = (host, where, message)
        if key not in self._gap_keys:
            self._gap_keys.add(key)
            self.gaps.append(Gap(host, f"{kind} {ref}", path, message))

    def _dr(self, host: str) -> str:
        dr = self.resolved.destination_rule(host)
        return f"DestinationRule {dr.namespace}/{dr.name}" if dr is not None else f"DestinationRule -/{host}"

    # -- listeners ----------------------------------------------------------------------------------
    @staticmethod
    def listener(name: str, rds_name: str) -> listener_pb2.Listener:
        hcm = hcm_pb2.HttpConnectionManager(
            stat_prefix=name,
            rds=hcm_pb2.Rds(config_source=ads_source(), route_config_name=rds_name),
            http_filters=[fault.http_filter(),
                          hcm_pb2.HttpFilter(name=ROUTER, typed_config=pack(router_pb2.Router()))])
        return listener_pb2.Listener(name=name, api_listener=api_listener_pb2.ApiListener(api_listener=pack(hcm)))

    def server_listener(self, name: str, host: str, port: int) -> listener_pb2.Listener:
        """gRFC A36: the Listener of an xDS-enabled grpcio server on host:port — one filter chain, an HCM with an
        inline route config whose routes are `non_forwarding_action` (the server serves every method itself)."""
        route = rc.Route(name="default", match=rc.RouteMatch(prefix="/"), non_forwarding_action=rc.NonForwardingAction())
        vh = rc.VirtualHost(name=f"inbound|{port}", domains=["*"], routes=[route])
        hcm = hcm_pb2.HttpConnectionManager(
            stat_prefix=f"inbound_{port}",
            route_config=route_pb2.RouteConfiguration(name=f"inbound|{port}", virtual_hosts=[vh]),
            http_filters=[hcm_pb2.HttpFilter(name=ROUTER, typed_config=pack(router_pb2.Router()))])
        chain = listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(name=HCM, typed_config=pack(hcm))])
        return listener_pb2.Listener(name=name, address=socket_address(host, port), filter_chains=[chain],
                                     traffic_direction=base_pb2.INBOUND)

    # -- routes -------------------------------------------------------------------------------------
    def route_config(self, svc: Service, port: int) -> route_pb2.RouteConfiguration:
        name = route_config_name(svc, port)
        vh = rc.VirtualHost(name=name, domains=["*"])
        if self.resolved.virtual_service(svc.hostname) is not None:
            vh.routes.extend(self._routes(svc.hostname, port))
        else:
            dst = Destination(svc.hostname, None, port)
            act = rc.RouteAction(cluster=outbound_cluster(port, None, svc.hostname))
            self._hash(act, [dst], svc.hostname, "")
            vh.routes.append(rc.Route(name="default", match=rc.RouteMatch(prefix="/"), route=act))
        return route_pb2.RouteConfiguration(name=name, virtual_hosts=[vh])

    def _routes(self, host: str, port: int) -> list[rc.Route]:
        out: list[rc.Route] = []
        for i, rr in enumerate(self.resolved.http_routes(host)):
            r = rr.route
            where = f"VirtualService {rr.owner.namespace}/{rr.owner.name} spec.http[{i}]"
            if not r.route:
                what = "redirect" if r.redirect is not None else "directResponse"
                self._gap(host, f"{where}.{what}", "gRPC clients do not follow redirects or direct responses: "
                                                   "this route is left out for proxyless clients")
                continue
            matches = self.resolved.matches_for(r, port, self.proxy)
            if not matches:
                continue
            self._unsupported_route_fields(host, where, r)
            act = self._action(host, where, r, rr.owner.namespace, port)
            for j, m in enumerate(matches):
                if m is not None and m.query_params:
                    self._gap(host, f"{where}.match[{j}].queryParams", "gRPC requests have no query parameters: "
                                                                     "this match is left out")
                    continue
                rm = route_match(m)
                route = rc.Route(name=r.name or f"{rr.stem}.{j}", match=rm, route=act)
                if r.fault is not None:
                    route.typed_per_filter_config[fault.NAME].CopyFrom(pack(fault.per_route(r.fault)))
                out.append(route)
        return out

    def _unsupported_route_fields(self, host: str, where: str, r: HTTPRoute) -> None:
        if r.headers is not None or any(d.headers for d in r.route):
            self._gap(host, f"{where}.headers", "gRPC clients do not rewrite headers: ignored")
        if r.rewrite is not None:
            self._gap(host, f"{where}.rewrite", "gRPC clients do not rewrite paths or authorities: ignored")
        if r.mirror is not None or r.mirrors:
            self._gap(host, f"{where}.mirror", "gRPC clients do not mirror traffic: ignored")
        if r.cors_policy is not None:
            self._gap(host, f"{where}.corsPolicy", "CORS does not apply to gRPC clients: ignored")

    def _action(self, host: str, where: str, r: HTTPRoute, namespace: str, port: int) -> rc.RouteAction:
        dests = [(self.resolved.destination(d.destination, namespace, port), d) for d in r.route]
        if len(dests) > 1:
            dests = [(dst, d) for dst, d in dests if d.weight != 0]
        act = rc.RouteAction()
        if len(r.route) == 1:
            act.cluster = _cluster(dests[0][0])
        else:
            for dst, d in dests:
                act.weighted_clusters.clusters.add(name=_cluster(dst), weight=u32(d.weight))
        if r.timeout:  # gRFC A31: a route's timeout is its max_stream_duration (route.timeout is not read)
            secs = duration_seconds(r.timeout)
            if secs:
                act.max_stream_duration.max_stream_duration.CopyFrom(duration(secs))
        if r.retries is not None and r.retries.attempts > 0:
            pol = self._retry(host, f"{where}.retries", r)
            if pol is not None:
                act.retry_policy.CopyFrom(pol)
        self._hash(act, [dst for dst, _ in dests], host, where)
        return act

    def _retry(self, host: str, where: str, r: HTTPRoute) -> rc.RetryPolicy | None:
        rt = r.retries
        assert rt is not None
        if rt.retry_on:
            conds, codes = split_retry_on(rt.retry_on)
        else:  # Istio's default retryOn; gRPC takes its gRPC status names
            conds, codes = ["connect-failure", "refused-stream", "unavailable", "cancelled"], []
        grpc_conds = [c for c in conds if c in GRPC_RETRY_ON]
        other = [c for c in conds if c not in GRPC_RETRY_ON] + [str(c) for c in codes]
        if other and rt.retry_on:
            self._gap(host, f"{where}.retryOn", f"gRPC clients retry on gRPC status codes only "
                                                f"({', '.join(GRPC_RETRY_ON)}); ignored: {', '.join(other)}")
        if rt.per_try_timeout:
            self._gap(host, f"{where}.perTryTimeout", "gRPC clients have no per-try timeout: ignored")
        if not grpc_conds:
            return None
        pol = rc.RetryPolicy(retry_on=",".join(grpc_conds), num_retries=u32(rt.attempts))
        base, top = rt.back_off if rt.back_off is not None else (None, None)
        b = duration_seconds(base) if base else DEFAULT_BACKOFF
        pol.retry_back_off.base_interval.CopyFrom(duration(b))
        if top:
            pol.retry_back_off.max_interval.CopyFrom(duration(duration_seconds(top)))
        return pol

    def _hash(self, act: rc.RouteAction, dests: list[Destination], host: str, where: str) -> None:
        policies.apply_route_policy(act, dests, self.resolved)
        if act.hash_policy and not act.hash_policy[0].HasField("header"):
            kept = [hp for hp in act.hash_policy if hp.HasField("header")]
            del act.hash_policy[:]
            act.hash_policy.extend(kept)
            self._gap(dests[0].host, f"{self._dr(dests[0].host)} spec.trafficPolicy.loadBalancer.consistentHash",
                      "gRPC clients hash on a request header only (httpHeaderName); cookies, source IP and "
                      "query parameters are ignored: requests are spread at random over the ring")

    # -- clusters -----------------------------------------------------------------------------------
    def cluster(self, svc: Service, port: int, subset: str | None, pol: Policy) -> cluster_pb2.Cluster:
        name = outbound_cluster(port, subset, svc.hostname)
        c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
        c.eds_cluster_config.eds_config.CopyFrom(ads_source())
        c.eds_cluster_config.service_name = name
        where = f"{self._dr(svc.hostname)} " + (f"spec.subsets[name={subset}]" if subset else "spec.trafficPolicy")
        base = self.resolved.policy(svc.hostname, None, port)

        def own(field: str) -> bool:  # a subset's gap is reported where it is written, once
            return subset is None or getattr(pol, field) != getattr(base, field)

        lb = pol.load_balancer
        if pol.consistent_hash is not None:
            c.lb_policy = cluster_pb2.Cluster.RING_HASH
            c.ring_hash_lb_config.hash_function = cluster_pb2.Cluster.RingHashLbConfig.XX_HASH
            ch = pol.consistent_hash
            size = (ch.ring_hash.minimum_ring_size if ch.ring_hash else None) or ch.minimum_ring_size
            if size:
                c.ring_hash_lb_config.minimum_ring_size.value = size
            if ch.maglev is not None and own("load_balancer"):
                self._gap(svc.hostname, f"{where}.loadBalancer.consistentHash.maglev",
                          "gRPC clients have no Maglev: a ring hash is used")
        else:
            c.lb_policy = cluster_pb2.Cluster.ROUND_ROBIN
            if lb is not None and lb.simple not in (None, "UNSPECIFIED", "ROUND_ROBIN") and own("load_balancer"):
                self._gap(svc.hostname, f"{where}.loadBalancer.simple",
                          f"grpcio's xDS client implements ROUND_ROBIN and RING_HASH only: {lb.simple} is "
                          "served as ROUND_ROBIN")
        cp = pol.connection_pool
        if cp is not None and cp.http is not None and cp.http.http2_max_requests:
            c.circuit_breakers.thresholds.append(circuit_breaker_pb2.CircuitBreakers.Thresholds(
                max_requests=u32(cp.http.http2_max_requests)))
        if pol.outlier_detection is not None and own("outlier_detection"):
            self._gap(svc.hostname, f"{where}.outlierDetection",
                      "gRPC clients eject by success rate or failure percentage only, not by consecutive "
                      "errors: ignored")
        if pol.tls is not None and pol.tls.mode not in (None, "DISABLE") and own("tls"):
            self._gap(svc.hostname, f"{where}.tls", "proxyless clients of Mizzen call in plaintext: ignored")
        return c

    # -- the view -----------------------------------------------------------------------------------
    def build(self, render: Callable[[str, str, object], Rendered]) -> View:
        out: View = {CLUSTER: {}, ENDPOINT: {}, LISTENER: {}, ROUTE: {}}
        proxy = self.proxy
        for port in proxy.ports:  # xDS-enabled servers of the workload, on any of its addresses
            for host in dict.fromkeys(("0.0.0.0", "[::]", proxy.ip)):
                addr = f"{host}:{port}"
                name = SERVER_LISTENER_TEMPLATE % addr
                out[LISTENER][name] = render(LISTENER, name, self.server_listener(name, host.strip("[]"), port))
        for svc in self.snap.visible_services(proxy):
            http_ports = [sp for sp in svc.ports if is_http(sp.protocol)]
            for sp in http_ports:
                rname = route_config_name(svc, sp.port)
                out[ROUTE][rname] = render(ROUTE, rname, self.route_config(svc, sp.port))
                for n in listener_names(svc, sp.port, proxy.namespace, len(http_ports)):
                    out[LISTENER][n] = render(LISTENER, n, self.listener(n, rname))
                for subset, labels in [(None, ())] + list(self.resolved.subsets(svc.hostname)):
                    pol = self.resolved.policy(svc.hostname, subset, sp.port)
                    c = self.cluster(svc, sp.port, subset, pol)
                    out[CLUSTER][c.name] = render(CLUSTER, c.name, c)
                    found = self.snap.endpoints_for(svc, sp.port, labels)
                    cla = load_assignment(c.name, found, pol if pol.locality_sensitive else None,
                                          proxy.locality, proxy.label_dict)
                    out[ENDPOINT][c.name] = render(ENDPOINT, c.name, cla)
        return out


def proxyless_view(snap: Snapshot, proxy: Proxy, render: Callable[[str, str, object], Rendered]) -> View:
    return ProxylessBuilder(snap, proxy).build(render)


def gaps(snap: Snapshot, proxy: Proxy) -> list[Gap]:
    """What of the config this proxyless client sees it will not do (what `mizzen analyze` reports)."""
    b = ProxylessBuilder(snap, proxy)
    b.build(lambda t, n, m: Rendered(t, n, "", b""))
    return b.gaps


def _cluster(d: Destination) -> str:
    return outbound_cluster(d.port, d.subset, d.host)


__all__ = ["ANNOTATION", "Gap", "PROXYLESS", "SERVER_LISTENER_TEMPLATE", "ProxylessBuilder", "gaps", "listener_names", "proxyless_view",
           "route_config_name"]
