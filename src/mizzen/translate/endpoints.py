"""ClusterLoadAssignments from registry instances, grouped by locality (proxyless gRPC needs locality+weight)."""
from __future__ import annotations

from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from ..model.snapshot import Endpoint
from .common import socket_address, u32


def _locality(text: str) -> base_pb2.Locality:
    parts = (text.split("/") + ["", "", ""])[:3]
    return base_pb2.Locality(region=parts[0], zone=parts[1], sub_zone=parts[2])


def load_assignment(cluster_name: str, endpoints: tuple[Endpoint, ...]) -> endpoint_pb2.ClusterLoadAssignment:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster_name)
    groups: dict[str, list[Endpoint]] = {}
    for ep in endpoints:
        if not ep.healthy:
            continue  # unhealthy and draining instances are withdrawn, not sent with a status
        groups.setdefault(ep.locality, []).append(ep)
    for loc in sorted(groups):
        eps = sorted(groups[loc], key=lambda e: (e.address, e.port))
        lle = cla.endpoints.add(locality=_locality(loc), load_balancing_weight=u32(max(1, len(eps))))
        for ep in eps:
            lb = lle.lb_endpoints.add()
            lb.endpoint.address.CopyFrom(socket_address(ep.address, ep.port))
            lb.health_status = health_check_pb2.HEALTHY
            if ep.weight and ep.weight != 1:
                lb.load_balancing_weight.value = ep.weight
    return cla


__all__ = ["load_assignment", "endpoint_components_pb2"]
