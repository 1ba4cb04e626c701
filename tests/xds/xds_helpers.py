"""Real Envoy resources for tests: EDS clusters, endpoints, an HTTP listener using RDS over ADS, routes."""
from __future__ import annotations

import hashlib

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, duration_pb2

from mizzen.model.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, Rendered

ADS = config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                     resource_api_version=config_source_pb2.V3)


def render(type_url: str, msg) -> Rendered:
    payload = msg.SerializeToString(deterministic=True)
    return Rendered(type_url, msg.name if hasattr(msg, "name") and msg.name else msg.cluster_name,
                    hashlib.sha256(payload).hexdigest()[:12], payload, msg)


def cluster(name: str, timeout_ms: int = 1000) -> Rendered:
    timeout = duration_pb2.Duration()
    timeout.FromMilliseconds(timeout_ms)
    c = cluster_pb2.Cluster(
        name=name, type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ADS), connect_timeout=timeout)
    return render(CLUSTER, c)


def endpoints(name: str, addrs: list[tuple[str, int]]) -> Rendered:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name, endpoints=[
        endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[
            endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(
                address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=a, port_value=p))))
            for a, p in addrs])])
    return render(ENDPOINT, cla)


def listener(name: str, port: int, route_name: str) -> Rendered:
    router = any_pb2.Any()
    router.Pack(router_pb2.Router())
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=name, rds=hcm_pb2.Rds(config_source=ADS, route_config_name=route_name),
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=router)])
    tc = any_pb2.Any()
    tc.Pack(hcm)
    lst = listener_pb2.Listener(
        name=name, address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)),
        filter_chains=[listener_components_pb2.FilterChain(filters=[
            listener_components_pb2.Filter(name="envoy.filters.network.http_connection_manager", typed_config=tc)])])
    return render(LISTENER, lst)


def routes(name: str, cluster_name: str, header: str = "") -> Rendered:
    rc = route_pb2.RouteConfiguration(name=name, virtual_hosts=[route_components_pb2.VirtualHost(
        name="all", domains=["*"], routes=[route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix="/"),
            route=route_components_pb2.RouteAction(cluster=cluster_name))])])
    if header:
        from envoy.config.core.v3 import base_pb2
        rc.response_headers_to_add.append(base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key="x-route", value=header)))
    return render(ROUTE, rc)


def target(clusters=(), eps=(), listeners=(), rts=()) -> dict:
    out: dict = {CLUSTER: {}, ENDPOINT: {}, LISTENER: {}, ROUTE: {}}
    for r in (*clusters, *eps, *listeners, *rts):
        out[r.type_url][r.name] = r
    return out


def sotw_req(type_url, names=(), nonce="", version="", error="", node_id="") -> discovery_pb2.DiscoveryRequest:
    req = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names), response_nonce=nonce,
                                         version_info=version)
    if error:
        req.error_detail.message = error
    if node_id:
        req.node.id = node_id
    return req


def delta_req(type_url, sub=(), unsub=(), nonce="", error="", initial=None, node_id=""):
    req = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=list(sub),
                                              resource_names_unsubscribe=list(unsub), response_nonce=nonce,
                                              initial_resource_versions=initial or {})
    if error:
        req.error_detail.message = error
    if node_id:
        req.node.id = node_id
    return req
