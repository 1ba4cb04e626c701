"""Where a pod's processes are reachable: the runner's network collaborator, one per mode.

- `NetnsNetwork` (root): a namespace per pod on the mesh's private bridge (netns.py), hosts files mapping
  service names to VIPs, iptables capture, and the service-VIP rules of plainroutes.py.
- `LoopbackNetwork`: every pod on 127.0.0.1 with ports of its own (the sidecar is an explicit HTTP proxy).

Operations and the supervisor use the `PodNetwork` protocol (operations.py) and never ask which mode runs.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Sequence

from ..client import ENVOY_UID
from . import netns
from .pods import Pod
from .procs import free_ports

log = logging.getLogger("mizzen.local")


class NetnsNetwork:
    routes_vips = True  # pods get kube-proxy-style rules for service VIPs (plainroutes.py)
    supports_bypass = True  # capture can be switched off and on (bypass.py)
    owner_uid: int | None = ENVOY_UID  # Envoy (uid 1337) makes its admin socket in the pod dir

    def __init__(self, meshid: str, *, subnet: str | None = None, routed: Sequence[str] = (),
                 outbound_excluded: Sequence[str] = ()):
        # subnet & co: one host of a multi-host mesh (local/hosts.py): pods behind a gateway in this namespace
        self.mesh = netns.MeshNet(meshid, subnet=subnet, routed=tuple(routed),
                                  outbound_excluded=tuple(outbound_excluded))

    def create(self, services: Sequence[Mapping[str, Any]]) -> None:
        self.mesh.services = [dict(s) for s in services]
        self.mesh.create()

    def add_pod(self, pod: Pod, vip_chain: Sequence[str]) -> None:
        pn = self.mesh.add_pod(pod.name, pod.index, namespace=pod.namespace,
                               capture=pod.sidecar and not pod.gateway)  # a gateway captures nothing
        pod.ip, pod.netns = pn.ip, pn.netns
        pod.port_map = {p: p for p in pod.ports}
        # the service VIPs lead somewhere: for a sidecar-less pod's connections, or Envoy's passthrough ones
        self.mesh.set_vip_rules(pod.name, vip_chain)

    def remove_pod(self, pod: Pod) -> None:
        if pod.name in self.mesh.pods:
            self.mesh.remove_pod(pod.name)

    def set_services(self, services: Iterable[Mapping[str, Any]]) -> bool:
        return self.mesh.set_services(services)

    def set_vip_rules(self, pod: str, chain: Sequence[str]) -> bool:
        return self.mesh.set_vip_rules(pod, chain)

    def set_bypass(self, pod: Pod, state: str) -> bool:
        changed = self.mesh.set_bypass(pod.name, state)
        pod.bypass = state
        return changed

    def teardown(self) -> None:
        if self.mesh.created or self.mesh.pods:
            self.mesh.teardown()
        else:
            netns.cleanup_mesh(self.mesh.meshid)


class LoopbackNetwork:
    routes_vips = False
    supports_bypass = False  # apps reach their sidecar through HTTP_PROXY, fixed when they start
    owner_uid: int | None = None

    def create(self, services: Sequence[Mapping[str, Any]]) -> None:
        pass

    def add_pod(self, pod: Pod, vip_chain: Sequence[str]) -> None:
        ports = free_ports(len(pod.ports) + 3)
        pod.ip = "127.0.0.1"
        pod.port_map = {p: ports[i] for i, p in enumerate(pod.ports)}
        pod.outbound_port, pod.inbound_port, pod.health_port = ports[-3:]
        pod.register_port_map = {p: pod.inbound_port for p in pod.ports}

    def remove_pod(self, pod: Pod) -> None:
        pass

    def set_services(self, services: Iterable[Mapping[str, Any]]) -> bool:
        return False

    def set_vip_rules(self, pod: str, chain: Sequence[str]) -> bool:
        return False

    def set_bypass(self, pod: Pod, state: str) -> bool:
        return False

    def teardown(self) -> None:
        pass
