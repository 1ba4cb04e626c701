"""Who is at an address, and which service a request was for. PURE.

A `Directory` is built from the control plane's `GET /api/v1/instances` and `GET /api/v1/services` items
(plain dicts, so the agent, the CLI and the console can all build one). The sidecar's agent uses it to
name the peer of each request: the caller on the inbound side (from the downstream address), the callee on
the outbound side (from the upstream host Envoy picked).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .istio import UNKNOWN

DOMAIN = "svc.cluster.local"


@dataclass(frozen=True)
class WorkloadInfo:
    workload: str = UNKNOWN
    namespace: str = UNKNOWN
    app: str = UNKNOWN
    version: str = UNKNOWN
    service_account: str = ""

    @classmethod
    def from_labels(cls, workload: str, namespace: str, labels: Mapping[str, str],
                    service_account: str = "") -> "WorkloadInfo":
        app = labels.get("app") or labels.get("app.kubernetes.io/name") or workload or UNKNOWN
        version = labels.get("version") or labels.get("app.kubernetes.io/version") or UNKNOWN
        return cls(workload=workload or UNKNOWN, namespace=namespace or UNKNOWN, app=app, version=version,
                   service_account=service_account)

    @classmethod
    def from_instance(cls, inst: Mapping[str, Any]) -> "WorkloadInfo":
        return cls.from_labels(str(inst.get("workload") or ""), str(inst.get("namespace") or ""),
                               inst.get("labels") or {}, str(inst.get("serviceAccount") or ""))


NOBODY = WorkloadInfo()


def principal_of(namespace: str, service_account: str, trust_domain: str = "cluster.local") -> str:
    """Istio's SPIFFE identity form (what a peer certificate's URI SAN carries)."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account or 'default'}"


def parse_cluster(name: str) -> tuple[str, int, str, str] | None:
    """`outbound|9080|v1|reviews.default.svc.cluster.local` -> ("outbound", 9080, "v1", host); None otherwise."""
    parts = name.split("|")
    if len(parts) != 4 or parts[0] not in ("outbound", "inbound"):
        return None
    try:
        port = int(parts[1])
    except ValueError:
        return None
    return parts[0], port, parts[2], parts[3]


def service_parts(hostname: str) -> tuple[str, str]:
    """`reviews.default.svc.cluster.local` -> ("reviews", "default"); other hosts -> (host, unknown)."""
    if hostname.endswith("." + DOMAIN):
        head = hostname[: -len(DOMAIN) - 1].split(".")
        if len(head) == 2:
            return head[0], head[1]
    return hostname, UNKNOWN


class Directory:
    """Addresses -> workloads, and the name forms of services -> their hostnames."""

    def __init__(self, instances: Iterable[Mapping[str, Any]] = (), services: Iterable[Mapping[str, Any]] = ()) -> None:
        self._by_host: dict[tuple[str, int], WorkloadInfo] = {}
        by_ip: dict[str, set[WorkloadInfo]] = {}
        for inst in instances:
            info = WorkloadInfo.from_instance(inst)
            addr = str(inst.get("address") or "")
            by_ip.setdefault(addr, set()).add(info)
            port_map = {int(k): int(v) for k, v in (inst.get("portMap") or {}).items()}
            for p in inst.get("ports") or ():
                self._by_host[(addr, port_map.get(int(p), int(p)))] = info
        # an address shared by several workloads (loopback mode) names nobody by itself
        self._by_ip = {ip: next(iter(s)) for ip, s in by_ip.items() if len(s) == 1}
        self._names: dict[tuple[str, str], str] = {}  # (form, caller namespace or "") -> hostname
        self._vips: dict[str, str] = {}
        self.hostnames: set[str] = set()
        for svc in services:
            host = str(svc.get("hostname") or "")
            name, ns = str(svc.get("name") or ""), str(svc.get("namespace") or "")
            if not host:
                continue
            self.hostnames.add(host)
            if svc.get("vip"):
                self._vips[str(svc["vip"])] = host
            self._names[(host, "")] = host
            if host.endswith("." + DOMAIN) and name and ns:
                self._names[(f"{name}.{ns}", "")] = host
                self._names[(f"{name}.{ns}.svc", "")] = host
                self._names[(name, ns)] = host

    def __len__(self) -> int:
        return len(self._by_ip) + len(self._by_host)

    def workload_at(self, ip: str, port: int | None = None) -> WorkloadInfo:
        if port is not None:
            info = self._by_host.get((ip, port))
            if info is not None:
                return info
        return self._by_ip.get(ip, NOBODY)

    def knows(self, ip: str) -> bool:
        return ip in self._by_ip or any(a == ip for a, _ in self._by_host)

    def service_for_authority(self, authority: str, namespace: str) -> str:
        """The hostname a request's Host/:authority names, as seen by a caller in `namespace`; "" if none."""
        host = authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority
        host = host.lower()
        if host in self._vips:
            return self._vips[host]
        return self._names.get((host, "")) or self._names.get((host, namespace), "")


def split_host(hostport: str) -> tuple[str, int | None]:
    if hostport.count(":") != 1:
        return hostport, None
    host, port = hostport.rsplit(":", 1)
    try:
        return host, int(port)
    except ValueError:
        return host, None
