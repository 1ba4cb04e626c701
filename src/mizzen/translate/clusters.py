"""Clusters: one per service port and one per DestinationRule subset; inbound and passthrough clusters.

DestinationRule traffic policies (load balancer, connection pool, outlier detection, health checks,
retry budget) are resolved by `model.Resolved.policy` and applied by `policies.py`; the transport socket
(auto mTLS, or the DestinationRule's `tls`) by `secure`, with the shapes of `tls.py`."""
from __future__ import annotations

from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from ..model.policy import Policy
from ..model.security import istio_sni
from ..model.services import Service, ServicePort
from . import endpoints as E
from . import policies as P
from . import tls as T
from .common import (BLACKHOLE, INBOUND_PASSTHROUGH, PASSTHROUGH, ads_source, duration, inbound_cluster,
                     outbound_cluster, pack, socket_address)

_HPO = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
CONNECT_TIMEOUT_S = 10.0


def _http2_options() -> dict:
    opts = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()))
    return {_HPO: pack(opts)}


@dataclass(frozen=True)
class MeshTls:
    """What a caller with a mesh certificate needs to secure its clusters to one service."""

    sans: tuple[str, ...]  # the identities its servers may present (secure naming); () = any of the mesh
    auto: bool  # auto mTLS (off for mesh-external services and namespaces whose mode is DISABLE)


def outbound(svc: Service, sp: ServicePort, subset: str | None, pol: Policy, mesh: MeshTls | None = None
             ) -> cluster_pb2.Cluster:
    """One outbound cluster with its effective policy `pol` (applied by `policies.apply_cluster`); `mesh`:
    the caller has a mesh certificate (None: plaintext unless the DestinationRule says SIMPLE/MUTUAL)."""
    name = outbound_cluster(sp.port, subset, svc.hostname)
    c = cluster_pb2.Cluster(name=name, connect_timeout=duration(CONNECT_TIMEOUT_S))
    simple = pol.load_balancer.simple if pol.load_balancer else None
    if simple == "PASSTHROUGH":
        c.type = cluster_pb2.Cluster.ORIGINAL_DST
    elif svc.resolution in ("DNS", "DNS_ROUND_ROBIN"):
        c.type = cluster_pb2.Cluster.STRICT_DNS if svc.resolution == "DNS" else cluster_pb2.Cluster.LOGICAL_DNS
        c.dns_lookup_family = cluster_pb2.Cluster.V4_ONLY
        hosts = [(e.address, dict(e.ports).get(sp.name) or sp.target_for(), e.locality, e.weight)
                 for e in svc.static_endpoints] or [(svc.hostname, sp.target_for(), "", 0)]
        if svc.resolution == "DNS_ROUND_ROBIN":
            hosts = hosts[:1]  # LOGICAL_DNS takes exactly one host
        c.load_assignment.CopyFrom(endpoint_pb2.ClusterLoadAssignment(cluster_name=name))
        groups: dict[str, object] = {}
        for h, p, loc, w in hosts:
            if loc not in groups:
                groups[loc] = c.load_assignment.endpoints.add()
                if loc:
                    groups[loc].locality.CopyFrom(E.locality(loc))
            lb = groups[loc].lb_endpoints.add()
            lb.endpoint.address.CopyFrom(socket_address(h, p))
            if w and w != 1:
                lb.load_balancing_weight.value = w
    else:
        c.type = cluster_pb2.Cluster.EDS
        c.eds_cluster_config.eds_config.CopyFrom(ads_source())
        c.eds_cluster_config.service_name = name
    P.apply_cluster(c, pol, sp.protocol, svc.hostname)
    if simple == "PASSTHROUGH":
        c.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
        c.ClearField("health_checks")  # an original-destination cluster has no host set to check
    if sp.protocol in ("HTTP2", "GRPC") and _HPO not in c.typed_extension_protocol_options:
        for k, v in _http2_options().items():
            c.typed_extension_protocol_options[k].CopyFrom(v)
    secure(c, svc, sp, subset, pol, mesh)
    return c


def _speaks(c: cluster_pb2.Cluster, protocol: str) -> str:
    """The protocol the cluster's upstream connections speak (a DestinationRule may upgrade HTTP to h2)."""
    hpo = c.typed_extension_protocol_options.get(_HPO)
    if hpo is not None and protocol == "HTTP":
        opts = http_protocol_options_pb2.HttpProtocolOptions()
        hpo.Unpack(opts)
        if opts.explicit_http_config.HasField("http2_protocol_options"):
            return "HTTP2"
    return protocol


def secure(c: cluster_pb2.Cluster, svc: Service, sp: ServicePort, subset: str | None, pol: Policy,
           mesh: MeshTls | None) -> None:
    """The transport socket, as Istio's cluster builder decides it: the DestinationRule's `tls` wins
    (DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL); without one, auto mTLS (mesh mTLS to endpoints with a sidecar,
    plaintext to the others) unless the service is mesh-external, its namespace DISABLEs mTLS, or the
    cluster is an original-destination one."""
    tls, protocol = pol.tls, _speaks(c, sp.protocol)
    if tls is not None:
        if tls.mode in ("SIMPLE", "MUTUAL"):
            c.transport_socket.CopyFrom(T.upstream_from_files(tls, protocol))
        elif tls.mode == "ISTIO_MUTUAL" and mesh is not None:
            c.transport_socket.CopyFrom(T.upstream_istio_mutual(
                tls.sni or istio_sni(sp.port, subset, svc.hostname), tuple(tls.subject_alt_names) or mesh.sans,
                protocol))
        return
    if mesh is not None and mesh.auto and c.type != cluster_pb2.Cluster.ORIGINAL_DST:
        T.auto_mtls_matches(c, T.upstream_istio_mutual(istio_sni(sp.port, subset, svc.hostname), mesh.sans,
                                                       protocol))


def inbound(port: int, app_host: str, app_port: int, protocol: str) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name=inbound_cluster(port), connect_timeout=duration(CONNECT_TIMEOUT_S),
                            type=cluster_pb2.Cluster.STATIC)
    c.load_assignment.cluster_name = c.name
    c.load_assignment.endpoints.add().lb_endpoints.add().endpoint.address.CopyFrom(
        socket_address(app_host, app_port))
    # Unlimited, as Istio's inbound clusters: with Envoy's default of 3 concurrent retries, an app that dies with
    # more requests outstanding on its pooled connections (a loaded pod) has the rest of them answered 503 UC,UO
    # instead of resent (routes.inbound_retry_policy) and refused as UF, which callers retry on another replica
    # (tests/chaos/test_faults_e2e.py::test_an_app_kill_costs_only_its_in_flight_requests failed with 17)
    c.circuit_breakers.thresholds.append(P.thresholds())
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
