"""Clusters: one per service port and one per DestinationRule subset; inbound and passthrough clusters."""
from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from ..api.base import Resource
from ..model.services import Service, ServicePort
from .common import (BLACKHOLE, INBOUND_PASSTHROUGH, PASSTHROUGH, ads_source, duration, inbound_cluster,
                     outbound_cluster, pack, socket_address)

_HPO = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_LB = {
    None: cluster_pb2.Cluster.ROUND_ROBIN,
    "UNSPECIFIED": cluster_pb2.Cluster.ROUND_ROBIN,
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
    "LEAST_CONN": cluster_pb2.Cluster.LEAST_REQUEST,
    "RANDOM": cluster_pb2.Cluster.RANDOM,
}
CONNECT_TIMEOUT_S = 10.0


def _http2_options() -> dict:
    opts = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()))
    return {_HPO: pack(opts)}


def _lb_simple(dr: Resource | None, subset: str | None, port: int) -> str | None:
    """The effective trafficPolicy.loadBalancer.simple: subset > port-level > top-level."""
    if dr is None:
        return None
    spec = dr.spec
    policies = []
    if subset:
        for s in spec.subsets:
            if s.name == subset and s.traffic_policy:
                policies.append(s.traffic_policy)
    if spec.traffic_policy:
        policies.append(spec.traffic_policy)
    for tp in policies:
        for pl in tp.port_level_settings:
            if pl.port and pl.port.number == port and pl.load_balancer and pl.load_balancer.simple:
                return pl.load_balancer.simple
        if tp.load_balancer and tp.load_balancer.simple:
            return tp.load_balancer.simple
    return None


def outbound(svc: Service, sp: ServicePort, subset: str | None, dr: Resource | None) -> cluster_pb2.Cluster:
    name = outbound_cluster(sp.port, subset, svc.hostname)
    c = cluster_pb2.Cluster(name=name, connect_timeout=duration(CONNECT_TIMEOUT_S))
    simple = _lb_simple(dr, subset, sp.port)
    if simple == "PASSTHROUGH":
        c.type = cluster_pb2.Cluster.ORIGINAL_DST
        c.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
    elif svc.resolution in ("DNS", "DNS_ROUND_ROBIN"):
        c.type = cluster_pb2.Cluster.STRICT_DNS if svc.resolution == "DNS" else cluster_pb2.Cluster.LOGICAL_DNS
        c.lb_policy = _LB.get(simple, cluster_pb2.Cluster.ROUND_ROBIN)
        c.dns_lookup_family = cluster_pb2.Cluster.V4_ONLY
        hosts = [(e.address, dict(e.ports).get(sp.name) or sp.target_for()) for e in svc.static_endpoints] \
            or [(svc.hostname, sp.target_for())]
        c.load_assignment.CopyFrom(endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[
                endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(
                    address=socket_address(h, p))) for h, p in hosts])]))
    else:
        c.type = cluster_pb2.Cluster.EDS
        c.eds_cluster_config.eds_config.CopyFrom(ads_source())
        c.eds_cluster_config.service_name = name
        c.lb_policy = _LB.get(simple, cluster_pb2.Cluster.ROUND_ROBIN)
    if sp.protocol in ("HTTP2", "GRPC"):
        for k, v in _http2_options().items():
            c.typed_extension_protocol_options[k].CopyFrom(v)
    return c


def inbound(port: int, app_host: str, app_port: int, protocol: str) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name=inbound_cluster(port), connect_timeout=duration(CONNECT_TIMEOUT_S),
                            type=cluster_pb2.Cluster.STATIC)
    c.load_assignment.cluster_name = c.name
    c.load_assignment.endpoints.add().lb_endpoints.add().endpoint.address.CopyFrom(
        socket_address(app_host, app_port))
    if protocol in ("HTTP2", "GRPC"):
        for k, v in _http2_options().items():
            c.typed_extension_protocol_options[k].CopyFrom(v)
    return c


def passthrough(name: str = PASSTHROUGH) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.ORIGINAL_DST,
                               lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
                               connect_timeout=duration(CONNECT_TIMEOUT_S))


def inbound_passthrough() -> cluster_pb2.Cluster:
    return passthrough(INBOUND_PASSTHROUGH)


def blackhole() -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(name=BLACKHOLE, type=cluster_pb2.Cluster.STATIC,
                               connect_timeout=duration(CONNECT_TIMEOUT_S))
