"""Fold one proxy's dynamic resources into a static Envoy bootstrap.

Used to check generated config with the real Envoy (`envoy --mode validate`), which reports exactly
the error Envoy would NACK with — a cheap real check in tests and, later, for user patches.
"""
from __future__ import annotations

from typing import Mapping

from google.protobuf import json_format

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from ..model.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, Rendered
from . import tls as T
from .common import pack


def static_bootstrap(resources: Mapping[str, Mapping[str, Rendered]], admin_port: int = 0) -> dict:
    routes = {n: route_pb2.RouteConfiguration.FromString(r.payload) for n, r in resources.get(ROUTE, {}).items()}
    eps = {n: endpoint_pb2.ClusterLoadAssignment.FromString(r.payload)
           for n, r in resources.get(ENDPOINT, {}).items()}
    b = bootstrap_pb2.Bootstrap()
    b.node.id = "validate"
    b.node.cluster = "validate"
    # the agent's bootstrap sets the same RE2 limit (agent/bootstrap.py), so validation judges regexes alike
    layer = b.layered_runtime.layers.add(name="static")
    layer.static_layer.update({"re2.max_program_size.error_level": 32768})
    b.admin.address.socket_address.address = "127.0.0.1"
    b.admin.address.socket_address.port_value = admin_port
    for r in resources.get(CLUSTER, {}).values():
        c = cluster_pb2.Cluster.FromString(r.payload)
        if c.type == cluster_pb2.Cluster.EDS:
            name = c.eds_cluster_config.service_name or c.name
            c.ClearField("eds_cluster_config")
            c.type = cluster_pb2.Cluster.STATIC
            c.load_assignment.CopyFrom(eps.get(name, endpoint_pb2.ClusterLoadAssignment(cluster_name=name)))
        b.static_resources.clusters.append(c)
    for r in resources.get(LISTENER, {}).values():
        lst = listener_pb2.Listener.FromString(r.payload)
        chains = list(lst.filter_chains) + ([lst.default_filter_chain] if lst.HasField("default_filter_chain") else [])
        for fc in chains:
            for f in fc.filters:
                if f.typed_config.type_url.endswith("HttpConnectionManager"):
                    m = hcm_pb2.HttpConnectionManager()
                    f.typed_config.Unpack(m)
                    if m.HasField("rds"):
                        name = m.rds.route_config_name
                        m.ClearField("rds")
                        m.route_config.CopyFrom(routes.get(name, route_pb2.RouteConfiguration(name=name)))
                        f.typed_config.CopyFrom(pack(m))
        b.static_resources.listeners.append(lst)
    if any(T.SDS_CLUSTER.encode() in r.payload for rs in resources.values() for r in rs.values()):
        b.static_resources.clusters.append(sds_cluster())  # the agent's SDS socket, as in a sidecar's bootstrap
    return json_format.MessageToDict(b)


def sds_cluster(path: str = "/nonexistent/sds.sock") -> cluster_pb2.Cluster:
    """The bootstrap cluster secrets come from (the pod's `sds.sock`); here only for `--mode validate`."""
    c = cluster_pb2.Cluster(name=T.SDS_CLUSTER, type=cluster_pb2.Cluster.STATIC)
    c.connect_timeout.FromSeconds(1)
    c.load_assignment.cluster_name = T.SDS_CLUSTER
    c.load_assignment.endpoints.add().lb_endpoints.add().endpoint.address.pipe.path = path
    c.typed_extension_protocol_options[HPO].CopyFrom(pack(http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options={}))))
    return c


HPO = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
