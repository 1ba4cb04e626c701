"""Helpers of the xDS load test shared by its driver (xds_load.py) and its extra scenarios (xds_extra.py)."""
from __future__ import annotations

import math
import os
import resource
from typing import Any

from ..local.procs import free_ports

NAMESPACE = "default"


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def _free_port() -> int:
    return free_ports(1)[0]  # below the ephemeral range (local.procs.free_ports)


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def proc_peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def services_yaml(m: int) -> str:
    docs = [
        f"apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\n  namespace: {NAMESPACE}\n"
        f"spec:\n  selector:\n    app: svc-{i}\n  ports:\n  - name: http\n    port: 8080\n"
        for i in range(m)
    ]
    return "---\n".join(docs)


def instance_dict(i: int, j: int, address: str) -> dict[str, Any]:
    from mizzen.model.types import Instance

    return Instance(id=f"{NAMESPACE}.svc-{i}-{j}", namespace=NAMESPACE, workload=f"svc-{i}", address=address,
                    ports=(8080,), labels=(("app", f"svc-{i}"),), source="static").to_dict()


def _addr(n: int) -> str:
    """The n-th instance address: 127.0.0.1, ... 127.0.0.250, 127.0.1.1, ... (loopback; nothing connects)."""
    return f"127.{n // 62500}.{n // 250 % 250}.{n % 250 + 1}"


def _profile(o, pid: int, phase: str, log):
    if not o.profile_dir:
        return None
    from .profile import Sampler

    s = Sampler.start(pid, os.path.join(o.profile_dir, f"{phase}.txt"))
    if s is None:
        log("py-spy is not installed (pip install py-spy): no profile")
    return s


class _Parsers:
    """Per-process caches: the same resource bytes arrive on every stream; parse them once."""

    def __init__(self) -> None:
        from envoy.config.cluster.v3 import cluster_pb2
        from envoy.config.endpoint.v3 import endpoint_pb2
        from envoy.config.listener.v3 import listener_pb2
        from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2

        self.Cluster = cluster_pb2.Cluster
        self.CLA = endpoint_pb2.ClusterLoadAssignment
        self.Listener = listener_pb2.Listener
        self.HCM = http_connection_manager_pb2.HttpConnectionManager
        self._eds: dict[bytes, str | None] = {}
        self._rds: dict[bytes, frozenset[str]] = {}
        self._addrs: dict[bytes, frozenset[str]] = {}

    def eds_name(self, value: bytes) -> str | None:
        """The EDS service name a Cluster needs, None if it is not an EDS cluster."""
        r = self._eds.get(value, 0)
        if r == 0:
            c = self.Cluster.FromString(value)
            r = (c.eds_cluster_config.service_name or c.name) if c.type == self.Cluster.EDS else None
            self._eds[value] = r
        return r  # type: ignore[return-value]

    def rds_names(self, value: bytes) -> frozenset[str]:
        r = self._rds.get(value)
        if r is None:
            lst = self.Listener.FromString(value)
            names = set()
            chains = list(lst.filter_chains)
            if lst.HasField("default_filter_chain"):
                chains.append(lst.default_filter_chain)
            for fc in chains:
                for f in fc.filters:
                    if f.typed_config.type_url.endswith("HttpConnectionManager"):
                        hcm = self.HCM.FromString(f.typed_config.value)
                        if hcm.HasField("rds"):
                            names.add(hcm.rds.route_config_name)
            r = self._rds[value] = frozenset(names)
        return r

    def addresses(self, value: bytes) -> frozenset[str]:
        r = self._addrs.get(value)
        if r is None:
            cla = self.CLA.FromString(value)
            r = self._addrs[value] = frozenset(
                lb.endpoint.address.socket_address.address for le in cla.endpoints for lb in le.lb_endpoints)
        return r


# the simulated proxies' identities, shared by the Python worker (xds_load) and the native one (xds_native)
def _ip(index: int) -> str:
    return f"10.{1 + index // 65536}.{(index // 256) % 256}.{index % 256}"


def node_id(index: int) -> str:
    return f"sidecar~{_ip(index)}~bench-{index}.{NAMESPACE}~{NAMESPACE}.svc.cluster.local"


def node_metadata(index: int, scoped: bool, workloads: int) -> dict:
    """Simulated proxy `index`'s node metadata (what its sidecar bootstrap would send)."""
    from mizzen.model.types import Proxy

    app = "bench-scoped" if scoped and index % 2 else "bench"  # xds_extra.SIDECAR selects bench-scoped
    app += f"-{index % workloads}" if workloads > 1 and app == "bench" else ""  # K workloads: K views
    return Proxy(node_id(index), namespace=NAMESPACE, workload=app, labels=(("app", app),),
                 ip=_ip(index), interception="netns").node_metadata()
