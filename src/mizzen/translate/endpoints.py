"""ClusterLoadAssignments from registry instances, grouped by locality (proxyless gRPC needs locality+weight).

A CLA is the same for every caller unless the destination's policy is locality-aware (Istio: outlier
detection on → locality failover priorities; `localityLbSetting.distribute` → per-locality weights;
`Policy.locality_sensitive`); then it depends on the caller's locality and is rendered once per (host,
caller locality). The priorities and weights are Istio's rules, answered by `model.policy`.
"""
from __future__ import annotations

from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from ..model import policy as P
from ..model.snapshot import Endpoint
from ..model.security import ISTIO_TLS
from .common import socket_address, u32
from .tls import endpoint_metadata


def locality(text: str) -> base_pb2.Locality:
    parts = (text.split("/") + ["", "", ""])[:3]
    return base_pb2.Locality(region=parts[0], zone=parts[1], sub_zone=parts[2])


def load_assignment(cluster_name: str, endpoints: tuple[Endpoint, ...], pol: P.Policy | None = None,
                    proxy_locality: str = "", proxy_labels: dict[str, str] | None = None, *, mtls: bool = False
                    ) -> endpoint_pb2.ClusterLoadAssignment:
    """`mtls`: the caller does auto mTLS, so endpoints that take mesh mTLS carry `tlsMode: istio` (the
    metadata its cluster's transport_socket_matches read)."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster_name)
    live = [ep for ep in endpoints if ep.healthy]  # unhealthy and draining instances are withdrawn
    prio: dict[Endpoint, int] = {}
    weights: dict[str, int] | None = None
    if pol is not None and pol.locality_failover:
        prio = P.locality_priorities(pol, proxy_locality, proxy_labels or {}, live)
    groups: dict[tuple[int, str], list[Endpoint]] = {}
    for ep in live:
        groups.setdefault((prio.get(ep, 0), ep.locality), []).append(ep)
    if pol is not None and pol.locality_distribute:
        counts: dict[str, int] = {}
        for (_, loc), eps in groups.items():
            counts[loc] = counts.get(loc, 0) + len(eps)
        weights = P.locality_weights(pol, proxy_locality, counts)
    for key in sorted(groups):
        p, loc = key
        eps = sorted(groups[key], key=lambda e: (e.address, e.port))
        w = max(1, len(eps)) if weights is None else weights.get(loc, 0)
        if w <= 0:
            continue  # `distribute` sends this caller nothing here
        lle = cla.endpoints.add(locality=locality(loc), load_balancing_weight=u32(w))
        if p:
            lle.priority = p
        for ep in eps:
            lb = lle.lb_endpoints.add()
            lb.endpoint.address.CopyFrom(socket_address(ep.address, ep.port))
            lb.health_status = health_check_pb2.HEALTHY
            if mtls and ep.tls_mode == ISTIO_TLS:
                lb.metadata.CopyFrom(endpoint_metadata(ISTIO_TLS))
            if ep.weight and ep.weight != 1:
                lb.load_balancing_weight.value = ep.weight
    return cla


__all__ = ["load_assignment", "locality"]
