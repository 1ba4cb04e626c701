"""Several hosts on one machine: each `Host` of a mesh file (and each host a Workload names in `spec.host`) is
a network namespace of its own, joined to the others by a private bridge, as machines are by a LAN.

Plan (`plan_hosts`, pure): hosts are numbered from 1 in the order declared (Host documents first, then hosts
only named by Workloads); host i has the address 10.250.0.<i> on the hosts' network and its pods live in
10.244.<i>.0/24 behind its runner's gateway 10.244.<i>.1. One host runs the control plane (`controlPlane:
true`, else an implicit host `controlplane` is added); Workloads without `spec.host` run there. Hosts with
`etcd: true` each run a member of the mesh's etcd cluster (unless `--store` names one).

Network (`HostsNetwork`): namespace `mizzen-<meshid>-hosts_net` holds the bridge `mzhosts0` (no address, no
uplink, no NAT, no default route); host namespaces `mizzen-<meshid>-h_<name>` get `eth0` on it with their
address, IP forwarding on, and a route to every other host's pod subnet via that host. Each host's runner
(`mizzen up --host NAME --join ...` run inside the host's namespace) makes its pods' bridge and uplink there
(netns.MeshNet with a subnet). Nothing here is routable from the machine's own namespace or beyond: the
machine reaches the mesh through the control plane's unix sockets (the CLI) and `ip netns exec`.
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Sequence

from ..api import Resource
from . import netns
from .pods import RunnerError

log = logging.getLogger("mizzen.local")

HOSTS_NETWORK = ipaddress.ip_network("10.250.0.0/24")
PODS_NETWORK = "10.244.0.0/16"  # every host's pod subnet lies in it (routed through the host's gateway)
HOSTS_BRIDGE = "mzhosts0"
IMPLICIT_CONTROL_PLANE = "controlplane"
MAX_HOSTS = 200
# control-plane replica i: xDS on XDS_PORT + i, the REST API (TLS) on API_PORT + i, certificate signing (TLS) on
# CA_PORT + i; the Consul API on replica 0
XDS_PORT, API_PORT, CA_PORT, CONSUL_PORT = 15010, 15080, 15020, 8500
ETCD_CLIENT_PORT, ETCD_PEER_PORT = 2379, 2380


@dataclass(frozen=True)
class HostPlan:
    name: str
    index: int  # 1..MAX_HOSTS
    control_plane: bool = False
    etcd: bool = False
    workloads: tuple[str, ...] = ()  # "<namespace>/<name>" placed here

    @property
    def ip(self) -> str:
        return str(HOSTS_NETWORK.network_address + self.index)

    @property
    def subnet(self) -> str:
        return f"10.244.{self.index}.0/24"

    def netns(self, meshid: str) -> str:
        return f"{netns.prefix(meshid)}h_{self.name}"[:netns.MAX_NS_NAME]


def workload_host(r: Resource) -> str | None:
    return getattr(r.spec, "host", None) if r.kind == "Workload" else None


def plan_hosts(resources: Sequence[Resource]) -> list[HostPlan] | None:
    """The hosts of a mesh file, or None when it names none (a single-host mesh)."""
    declared = [r for r in resources if r.kind == "Host"]
    named = [h for r in resources if (h := workload_host(r))]
    if not declared and not named:
        return None
    order: list[str] = []
    roles: dict[str, tuple[bool, bool]] = {}
    for r in declared:
        order.append(r.name)
        roles[r.name] = (r.spec.control_plane, r.spec.etcd)
    for h in named:
        if h not in roles:
            order.append(h)
            roles[h] = (False, False)
    cps = [h for h in order if roles[h][0]]
    if len(cps) > 1:
        raise RunnerError(f"hosts {', '.join(cps)} all say controlPlane: true; one host runs the control plane")
    if not cps:
        if IMPLICIT_CONTROL_PLANE in roles:
            raise RunnerError(f"host {IMPLICIT_CONTROL_PLANE!r} must say controlPlane: true (or name another host)")
        order.insert(0, IMPLICIT_CONTROL_PLANE)
        roles[IMPLICIT_CONTROL_PLANE] = (True, False)
        cps = [IMPLICIT_CONTROL_PLANE]
    if len(order) > MAX_HOSTS:
        raise RunnerError(f"at most {MAX_HOSTS} hosts")
    placed: dict[str, list[str]] = {h: [] for h in order}
    for r in resources:
        if r.kind == "Workload":
            placed[workload_host(r) or cps[0]].append(f"{r.namespace}/{r.name}")
    return [HostPlan(h, i + 1, roles[h][0], roles[h][1], tuple(placed[h])) for i, h in enumerate(order)]


def control_plane_host(hosts: Sequence[HostPlan]) -> HostPlan:
    return next(h for h in hosts if h.control_plane)


def runs_here(workload: dict | Resource, host: str, default_host: str) -> bool:
    """Does a Workload (a REST item or a Resource) run on `host`? Those without spec.host run on the
    control-plane host (`default_host`)."""
    if isinstance(workload, dict):
        placed = (workload.get("spec") or {}).get("host")
    else:
        placed = workload_host(workload)
    return (placed or default_host) == host


class HostsNetwork:
    """The hosts' namespaces and the bridge between them. `create()`, then `teardown()`."""

    def __init__(self, meshid: str, hosts: Sequence[HostPlan]):
        self.meshid = meshid
        self.hosts = list(hosts)
        self.created = False

    @property
    def bridge_ns(self) -> str:
        return f"{netns.prefix(self.meshid)}hosts_net"

    def create(self) -> None:
        reason = netns.unavailable_reason()
        if reason:
            raise RunnerError(f"a multi-host mesh runs its hosts in network namespaces: {reason}")
        run = netns.run
        ns = self.bridge_ns
        run(["ip", "netns", "add", ns])
        self.created = True
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", ns, "link", "add", HOSTS_BRIDGE, "type", "bridge"])
        run(["ip", "-n", ns, "link", "set", HOSTS_BRIDGE, "up"])
        for h in self.hosts:
            hns = h.netns(self.meshid)
            veth = f"h{self.meshid}-{h.index:03d}"
            run(["ip", "netns", "add", hns])
            run(["ip", "-n", ns, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", hns])
            run(["ip", "-n", ns, "link", "set", veth, "master", HOSTS_BRIDGE, "up"])
            run(["ip", "-n", hns, "link", "set", "lo", "up"])
            run(["ip", "-n", hns, "addr", "add", f"{h.ip}/{HOSTS_NETWORK.prefixlen}", "dev", "eth0"])
            run(["ip", "-n", hns, "link", "set", "eth0", "up"])
            # a host forwards between its pods' uplink and the hosts' network (its own namespace only)
            run(netns.exec_argv(hns, ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]))
            for other in self.hosts:
                if other is not h:
                    run(["ip", "-n", hns, "route", "add", other.subnet, "via", other.ip])
        log.info("hosts network: %s", ", ".join(f"{h.name} {h.ip} (pods {h.subnet})" for h in self.hosts))

    def teardown(self) -> None:
        for h in self.hosts:
            hns = h.netns(self.meshid)
            netns.kill_namespace(hns)
            netns.delete_namespace(hns)
        netns.kill_namespace(self.bridge_ns)
        netns.delete_namespace(self.bridge_ns)
        self.created = False
