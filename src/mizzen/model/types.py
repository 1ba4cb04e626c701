"""Plain immutable values shared by every layer: instances from the registry, proxy identity, rendered xDS."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

# Envoy type URLs (v3)
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
TYPE_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)  # make-before-break order of a fresh push
SHORT_TYPE = {CLUSTER: "CDS", ENDPOINT: "EDS", LISTENER: "LDS", ROUTE: "RDS", SECRET: "SDS"}


def labels_tuple(labels: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((labels or {}).items()))


@dataclass(frozen=True)
class Instance:
    """One running replica of a workload, as the registry knows it."""

    id: str  # unique in the mesh, e.g. "default/reviews-v1-0"
    namespace: str
    workload: str
    address: str  # IP the replica (or its sidecar) accepts traffic on
    ports: tuple[int, ...] = ()  # container ports the app listens on
    labels: tuple[tuple[str, str], ...] = ()
    healthy: bool = True
    sidecar: bool = True
    locality: str = ""  # region/zone/subzone
    service_account: str = "default"
    source: str = "agent"  # agent | static | consul-api (later)
    # In loopback mode one address hosts many replicas: container port -> port reachable from callers.
    port_map: tuple[tuple[int, int], ...] = ()

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)

    def reachable_port(self, container_port: int) -> int:
        for a, b in self.port_map:
            if a == container_port:
                return b
        return container_port

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "namespace": self.namespace, "workload": self.workload, "address": self.address,
            "ports": list(self.ports), "labels": dict(self.labels), "healthy": self.healthy,
            "sidecar": self.sidecar, "locality": self.locality, "serviceAccount": self.service_account,
            "source": self.source, "portMap": {str(a): b for a, b in self.port_map},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Instance":
        return cls(
            id=str(d["id"]), namespace=str(d.get("namespace", "default")), workload=str(d.get("workload", "")),
            address=str(d["address"]), ports=tuple(int(p) for p in d.get("ports", ())),
            labels=labels_tuple(d.get("labels")), healthy=bool(d.get("healthy", True)),
            sidecar=bool(d.get("sidecar", True)), locality=str(d.get("locality", "")),
            service_account=str(d.get("serviceAccount", "default")), source=str(d.get("source", "agent")),
            port_map=tuple(sorted((int(a), int(b)) for a, b in (d.get("portMap") or {}).items())),
        )


@dataclass(frozen=True)
class Proxy:
    """Identity of one connected proxy, taken from the Envoy node (id + metadata)."""

    id: str  # node.id, unique per proxy
    namespace: str = "default"
    workload: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    ip: str = "127.0.0.1"
    kind: str = "sidecar"  # sidecar | gateway | proxyless (later)
    # netns: iptables capture to 15001/15006.  loopback: explicit HTTP proxy on outbound_port,
    # inbound listener on inbound_port forwarding to the app on app_host.
    interception: str = "netns"
    ports: tuple[int, ...] = ()  # the workload's container ports
    outbound_port: int = 15001
    inbound_port: int = 15006
    app_host: str = "127.0.0.1"
    port_map: tuple[tuple[int, int], ...] = ()  # loopback mode: container port -> app's real port
    service_account: str = "default"
    locality: str = ""  # region/zone/subzone (node metadata LOCALITY; Envoy's node.locality too)
    # the SPIFFE trust domain of the workload certificate its agent serves over SDS (node metadata
    # TRUST_DOMAIN); "" = the proxy has no mesh certificate: it gets no mTLS config
    trust_domain: str = ""
    # static clusters the proxy's bootstrap has, that generated config may use (node metadata
    # MIZZEN_BOOTSTRAP_CLUSTERS): e.g. the agent's access-log stream, the embedded trace collector
    bootstrap_clusters: tuple[str, ...] = ()
    # where this sidecar reaches the global rate-limit service: "unix:/abs/path" or "host:port", one per replica
    # (node metadata RATELIMIT_ADDRESS; empty: none known)
    ratelimit_address: tuple[str, ...] = ()
    # a gateway (kind "gateway"): Gateway server port -> port on the host's 127.0.0.1 (node metadata
    # HOST_PORTS), and the host's network namespace file its Envoy binds those in (HOST_NETNS; "" = the
    # proxy's own namespace, loopback mode)
    host_ports: tuple[tuple[int, int], ...] = ()
    host_netns: str = ""

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def has_certificate(self) -> bool:
        return bool(self.trust_domain)

    def app_port(self, container_port: int) -> int:
        for a, b in self.port_map:
            if a == container_port:
                return b
        return container_port

    @classmethod
    def from_node(cls, node_id: str, metadata: Mapping[str, Any]) -> "Proxy":
        """Build from Envoy's node.id and node.metadata (a plain dict of the Struct)."""
        m = dict(metadata or {})

        def _int(v: Any, d: int) -> int:
            try:
                return int(v)
            except (TypeError, ValueError):
                return d

        return cls(
            id=node_id,
            namespace=str(m.get("NAMESPACE", "default")),
            workload=str(m.get("WORKLOAD_NAME", "")),
            labels=labels_tuple({str(k): str(v) for k, v in (m.get("LABELS") or {}).items()}),
            ip=str(m.get("INSTANCE_IP", "127.0.0.1")),
            kind=str(m.get("PROXY_TYPE", "sidecar")),
            interception=str(m.get("INTERCEPTION_MODE", "netns")),
            ports=tuple(_int(p, 0) for p in (m.get("PORTS") or ())),
            outbound_port=_int(m.get("OUTBOUND_PORT"), 15001),
            inbound_port=_int(m.get("INBOUND_PORT"), 15006),
            app_host=str(m.get("APP_HOST", "127.0.0.1")),
            port_map=tuple(sorted((_int(a, 0), _int(b, 0)) for a, b in (m.get("PORT_MAP") or {}).items())),
            service_account=str(m.get("SERVICE_ACCOUNT", "default")),
            locality=str(m.get("LOCALITY", "")),
            trust_domain=str(m.get("TRUST_DOMAIN", "")),
            bootstrap_clusters=tuple(sorted(str(c) for c in (m.get("MIZZEN_BOOTSTRAP_CLUSTERS") or ()))),
            ratelimit_address=_addresses(m.get("RATELIMIT_ADDRESS")),
            host_ports=tuple(sorted((_int(a, 0), _int(b, 0)) for a, b in (m.get("HOST_PORTS") or {}).items())),
            host_netns=str(m.get("HOST_NETNS", "")),
        )

    def node_metadata(self) -> dict[str, Any]:
        """Inverse of from_node: what the agent puts in the bootstrap's node.metadata."""
        return {
            "NAMESPACE": self.namespace, "WORKLOAD_NAME": self.workload, "LABELS": dict(self.labels),
            "INSTANCE_IP": self.ip, "PROXY_TYPE": self.kind, "INTERCEPTION_MODE": self.interception,
            "PORTS": [str(p) for p in self.ports], "OUTBOUND_PORT": str(self.outbound_port),
            "INBOUND_PORT": str(self.inbound_port), "APP_HOST": self.app_host,
            "PORT_MAP": {str(a): str(b) for a, b in self.port_map}, "SERVICE_ACCOUNT": self.service_account,
            **({"LOCALITY": self.locality} if self.locality else {}),
            **({"TRUST_DOMAIN": self.trust_domain} if self.trust_domain else {}),
            **({"MIZZEN_BOOTSTRAP_CLUSTERS": list(self.bootstrap_clusters)} if self.bootstrap_clusters else {}),
            **({"RATELIMIT_ADDRESS": list(self.ratelimit_address)} if self.ratelimit_address else {}),
            **({"HOST_PORTS": {str(a): str(b) for a, b in self.host_ports}} if self.host_ports else {}),
            **({"HOST_NETNS": self.host_netns} if self.host_netns else {}),
        }


def _addresses(v: Any) -> tuple[str, ...]:
    """A metadata address list: a list, or one string (comma-separated allowed)."""
    if not v:
        return ()
    items = v if isinstance(v, (list, tuple)) else str(v).split(",")
    return tuple(str(a).strip() for a in items if str(a).strip())


@dataclass(frozen=True)
class Rendered:
    """One xDS resource rendered and serialized once; shared by every proxy that receives it.

    `version` is a content hash, so equal content has equal version across snapshots and proxies.
    """

    type_url: str
    name: str
    version: str
    payload: bytes  # the serialized resource message (Any.value)
    message: Any = field(default=None, compare=False, repr=False)  # the protobuf message, for debug dumps


# {type_url: {resource name: Rendered}}
ProxyResources = Mapping[str, Mapping[str, Rendered]]
