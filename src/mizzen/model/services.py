"""Services as the mesh sees them: from Kubernetes-shaped Services and Istio ServiceEntries.

Host names, VIP allocation and port protocols live here; no I/O.
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Iterable

from ..api.base import CLUSTER_DOMAIN, Resource
from .types import labels_tuple
from .visibility import export_to_of

VIP_NETWORK = ipaddress.ip_network("10.96.0.0/16")

# Istio's protocol prefixes on port names (and appProtocol values).
_PROTOCOLS = {
    "http": "HTTP", "http2": "HTTP2", "grpc": "GRPC", "grpc-web": "GRPC", "h2c": "HTTP2", "tcp": "TCP",
    "tls": "TLS", "https": "HTTPS", "mongo": "TCP", "mysql": "TCP", "redis": "TCP",
}


def port_protocol(name: str, app_protocol: str | None = None, declared: str | None = None) -> str:
    """Protocol of a service port from Istio's naming convention; unknown → TCP."""
    for cand in (declared, app_protocol):
        if cand:
            up = cand.upper()
            if up in ("HTTP", "HTTP2", "GRPC", "TCP", "TLS", "HTTPS"):
                return up
            if up == "GRPC-WEB":
                return "GRPC"
    if name:
        prefix = name.lower().split("-", 1)[0]
        if prefix in _PROTOCOLS:
            return _PROTOCOLS[prefix]
    return "TCP"


def is_http(protocol: str) -> bool:
    return protocol in ("HTTP", "HTTP2", "GRPC")


@dataclass(frozen=True)
class ServicePort:
    port: int
    name: str
    protocol: str
    target_port: int | str | None = None

    def target_for(self) -> int:
        """The container port endpoints listen on (a named targetPort falls back to the port)."""
        return self.target_port if isinstance(self.target_port, int) else self.port


@dataclass(frozen=True)
class StaticEndpoint:
    address: str
    ports: tuple[tuple[str, int], ...] = ()  # port name -> port
    labels: tuple[tuple[str, str], ...] = ()
    locality: str = ""
    weight: int = 0


@dataclass(frozen=True)
class Service:
    hostname: str  # FQDN, e.g. reviews.default.svc.cluster.local
    name: str
    namespace: str
    ports: tuple[ServicePort, ...]
    selector: tuple[tuple[str, str], ...] = ()
    vip: str = ""
    source: str = "service"  # service | serviceentry
    resolution: str = "STATIC"  # STATIC (endpoints from registry/static), DNS, NONE
    mesh_external: bool = False
    static_endpoints: tuple[StaticEndpoint, ...] = ()
    revision: int = 0
    export_to: tuple[str, ...] = ()  # model/visibility.py
    subject_alt_names: tuple[str, ...] = ()  # a ServiceEntry's: the identities its servers present

    def port(self, number: int) -> ServicePort | None:
        for p in self.ports:
            if p.port == number:
                return p
        return None

    @property
    def short_names(self) -> tuple[str, ...]:
        """Name forms a caller in the same namespace may use (FQDN last)."""
        if self.source != "service":
            return (self.hostname,)
        n, ns = self.name, self.namespace
        return (n, f"{n}.{ns}", f"{n}.{ns}.svc", self.hostname)


def fqdn(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.{CLUSTER_DOMAIN}"


def resolve_host(host: str, namespace: str, known_namespaces: Iterable[str] = ()) -> str:
    """Resolve a host as written in an Istio resource of `namespace` to a FQDN (Istio's rules)."""
    if host == "*" or host.startswith("*."):
        return host
    if host.endswith("." + CLUSTER_DOMAIN):
        return host
    parts = host.split(".")
    if len(parts) == 1:
        return fqdn(host, namespace)
    if len(parts) == 2 and parts[1] in set(known_namespaces):
        return fqdn(parts[0], parts[1])
    if len(parts) == 3 and parts[2] == "svc":
        return fqdn(parts[0], parts[1])
    return host


_VIP_BASE = int(VIP_NETWORK.network_address)
_VIP_SIZE = VIP_NETWORK.num_addresses - 2  # skip network and broadcast


@lru_cache(maxsize=65536)
def _vip_hash(key: str) -> int:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:4], "big")


@lru_cache(maxsize=65536)
def _vip(index: int) -> str:
    return str(ipaddress.IPv4Address(_VIP_BASE + 1 + index))


def _vip_candidates(key: str):
    h = _vip_hash(key)
    for i in range(_VIP_SIZE):
        yield _vip((h + i) % _VIP_SIZE)


def allocate_vips(keys_in_order: Iterable[tuple[str, str | None]]) -> dict[str, str]:
    """Stable VIPs: an explicit address wins; others hash into 10.96.0.0/16, probing on collision.

    `keys_in_order` yields (hostname, explicit vip or None), oldest first, so an existing service keeps
    its VIP when new ones arrive.
    """
    taken: set[str] = set()
    out: dict[str, str] = {}
    pending = []
    for host, explicit in keys_in_order:
        if explicit:
            out[host] = explicit
            taken.add(explicit)
        else:
            pending.append(host)
    for host in pending:
        for s in _vip_candidates(host):
            if s not in taken:
                taken.add(s)
                out[host] = s
                break
    return out


# per stored resource (kind, namespace, name, revision): the Services it defines, before VIPs, each with its
# VIP-assigned versions by VIP
Memo = dict


def _defined(r: Resource, known: set[str]) -> list[tuple[Service, str | None]]:
    """The Services one v1 Service or ServiceEntry defines, without VIPs: (service, explicit VIP)."""
    spec = r.spec
    if r.kind == "Service":
        ports = tuple(ServicePort(p.port, p.name, port_protocol(p.name, p.app_protocol), p.target_port)
                      for p in spec.ports)
        explicit = spec.cluster_ip if spec.cluster_ip and spec.cluster_ip != "None" else None
        return [(Service(fqdn(r.name, r.namespace), r.name, r.namespace, ports, labels_tuple(spec.selector),
                         source="service", revision=r.revision, export_to=export_to_of(r)), explicit)]
    ports = tuple(ServicePort(p.number, p.name, port_protocol(p.name, None, p.protocol), p.target_port)
                  for p in spec.ports)
    eps = tuple(
        StaticEndpoint(e.address or "", tuple(sorted(e.ports.items())), labels_tuple(e.labels),
                       e.locality or "", e.weight or 0)
        for e in spec.endpoints
    )
    selector = labels_tuple(spec.workload_selector.labels if spec.workload_selector else {})
    out = []
    for i, host in enumerate(spec.hosts):
        h = resolve_host(host, r.namespace, known) if "." not in host else host
        if h.startswith("*"):
            continue  # wildcard entries are matched by name, not given a VIP
        explicit = spec.addresses[i] if i < len(spec.addresses) and "/" not in spec.addresses[i] else None
        name = h.split(".")[0]
        out.append((Service(h, name, r.namespace, ports, selector, source="serviceentry",
                            resolution=spec.resolution if spec.resolution != "NONE" else "STATIC",
                            mesh_external=spec.location == "MESH_EXTERNAL", static_endpoints=eps,
                            revision=r.revision, export_to=export_to_of(r),
                            subject_alt_names=tuple(spec.subject_alt_names)), explicit))
    return out


def services_from_resources(services: Iterable[Resource], entries: Iterable[Resource],
                            known_namespaces: Iterable[str], memo: Memo | None = None) -> dict[str, Service]:
    """Build Service values (with VIPs) from v1 Services and ServiceEntries.

    `memo` (kept by the caller between builds, e.g. the previous ConfigIndex's) spares re-deriving the
    Services of unchanged resources and returns the very same Service objects when their VIP is unchanged;
    it is updated in place to hold exactly the resources given."""
    known = set(known_namespaces)
    fresh: Memo = {}
    built: list[tuple[Service, str | None, int, dict]] = []
    for r in (*services, *entries):
        mk = (r.kind, r.namespace, r.name, r.revision)
        hit = memo.get(mk) if memo is not None else None
        if hit is None:
            hit = [(svc, explicit, {}) for svc, explicit in _defined(r, known)]
        fresh[mk] = hit
        built += [(svc, explicit, r.revision, finals) for svc, explicit, finals in hit]
    if memo is not None:
        memo.clear()
        memo.update(fresh)
    built.sort(key=lambda t: (t[2], t[0].hostname))
    out: dict[str, tuple[Service, dict]] = {}
    for svc, _, _, finals in built:
        out.setdefault(svc.hostname, (svc, finals))  # first (oldest) definition of a host wins
    vips = allocate_vips((s.hostname, e) for s, e, _, _ in built if out[s.hostname][0] is s)
    result: dict[str, Service] = {}
    for h, (s, finals) in out.items():
        vip = vips.get(h, "")
        final = finals.get(vip)
        if final is None:
            final = finals[vip] = replace(s, vip=vip)
        result[h] = final
    return result
