"""The gRPC xDS bootstrap of a proxyless client (gRFC A27). Pure: a dict, written by the caller.

    b = grpc_bootstrap(["/state/xds.sock"], node_id=..., namespace="default", workload="client", ...)
    json.dump(b, f)        # then GRPC_XDS_BOOTSTRAP=that-file in the client's environment

The node carries the same metadata keys as an Envoy sidecar's (`model.types.Proxy.node_metadata`) with
`PROXY_TYPE: proxyless`: the control plane builds a `Proxy` from it and serves the proxyless shapes
(`translate/proxyless.py`). Every control-plane replica's xDS socket is listed in order (gRPC falls back to
the next one when the first cannot be reached, gRFC A71).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..model.types import Proxy, labels_tuple
from ..translate.proxyless import PROXYLESS, SERVER_LISTENER_TEMPLATE


def node_id(pod: str, namespace: str, ip: str = "127.0.0.1") -> str:
    """Istio's form, `proxyless~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`."""
    return f"{PROXYLESS}~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local"


def grpc_bootstrap(xds_sockets: Sequence[str], *, pod: str, namespace: str, workload: str,
                   labels: Mapping[str, str] | None = None, service_account: str = "default",
                   locality: str = "", ip: str = "127.0.0.1", ports: Sequence[int] = ()) -> dict[str, Any]:
    """`ports`: the workload's container ports — an xDS-enabled grpcio server (`grpc.server(..., xds=True)`)
    on one of them gets its Listener (gRFC A36) and starts serving."""
    if not xds_sockets:
        raise ValueError("a proxyless bootstrap needs at least one xDS server")
    proxy = Proxy(id=node_id(pod, namespace, ip), namespace=namespace, workload=workload,
                  labels=labels_tuple(labels), ip=ip, kind=PROXYLESS, service_account=service_account,
                  locality=locality, ports=tuple(ports))
    meta = proxy.node_metadata()
    meta = {k: meta[k] for k in ("NAMESPACE", "WORKLOAD_NAME", "LABELS", "INSTANCE_IP", "PROXY_TYPE",
                                 "SERVICE_ACCOUNT", "LOCALITY", "PORTS") if k in meta}
    node: dict[str, Any] = {"id": proxy.id, "cluster": workload, "metadata": meta}
    if locality:
        region, zone, sub = (locality.split("/") + ["", "", ""])[:3]
        node["locality"] = {k: v for k, v in (("region", region), ("zone", zone), ("sub_zone", sub)) if v}
    return {
        # a unix socket path, or host:port (a host runner's pods reach the control planes over TCP)
        "xds_servers": [{"server_uri": f"unix://{path}" if path.startswith("/") else path,
                         "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}
                        for path in xds_sockets],
        "node": node,
        "server_listener_resource_name_template": SERVER_LISTENER_TEMPLATE,
    }


__all__ = ["grpc_bootstrap", "node_id"]
