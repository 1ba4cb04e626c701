"""The local runner's plan: `Pod` (one replica of a Workload and where it runs) and `plan_pods` (the pods of
a mesh file's Workloads); also what the runner's modules share: their errors, API_ERRORS, POLL_SECONDS.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

from ..api import Resource
from ..api.core import sidecar_enabled
from ..client import ClientError, PodDir
from ..model.types import Instance, labels_tuple
from . import netns

OUTBOUND_PORT = netns.OUTBOUND_PORT
INBOUND_PORT = netns.INBOUND_PORT
HEALTH_PORT = 15020
POLL_SECONDS = 0.25


class RunnerError(Exception):
    """A problem to report to the user (no traceback)."""


class OperationError(Exception):
    """An operation on a running mesh (rollout, scale, upgrade) failed; the message is for the user."""


# a call to the control plane that failed, or answered something malformed
API_ERRORS = (ClientError, ValueError, KeyError, TypeError)


# ------------------------------------------------------------------------------------------ the plan

@dataclass
class Pod:
    name: str
    workload: str
    namespace: str
    labels: dict[str, str]
    ports: list[int]
    sidecar: bool
    service_account: str
    locality: str
    command: list[str]
    env: dict[str, str]
    cwd: str
    index: int
    hold: bool = True  # holdApplicationUntilProxyStarts
    generation: int = 0  # 0: made by `up`; n: made by the n-th rollout/scale of the runner
    stopping: bool = False  # an orderly stop owns its processes (the supervisor leaves them alone)
    # filled in when the pod is made
    ip: str = "127.0.0.1"
    netns: str | None = None
    dir: str = ""
    outbound_port: int = OUTBOUND_PORT
    inbound_port: int = INBOUND_PORT
    health_port: int = HEALTH_PORT
    port_map: dict[int, int] = field(default_factory=dict)  # container port -> app's real port
    register_port_map: dict[int, int] = field(default_factory=dict)  # container port -> callers' port
    bypass: str = "off"  # capture switched off by `mizzen mesh bypass` (local/bypass.py): off | outbound | on

    @property
    def instance_id(self) -> str:
        return f"{self.namespace}.{self.name}"

    @property
    def app_ports(self) -> list[int]:
        return [self.port_map.get(p, p) for p in self.ports]

    @property
    def files(self) -> PodDir:
        return PodDir(self.dir)

    def endpoints(self) -> set[tuple[str, int]]:
        """(address, port) of this pod's endpoints as callers' proxies get them in EDS."""
        if self.register_port_map:
            ports = [self.register_port_map.get(p, self.port_map.get(p, p)) for p in self.ports]
        else:
            ports = [self.port_map.get(p, p) for p in self.ports]
        return {(self.ip, p) for p in ports}

    def static_instance(self) -> Instance:
        """The instance the runner registers for a pod without a sidecar (no agent does it)."""
        return Instance(
            id=self.instance_id, namespace=self.namespace, workload=self.workload, address=self.ip,
            ports=tuple(self.ports), labels=labels_tuple(self.labels), healthy=True, sidecar=False,
            locality=self.locality, service_account=self.service_account, source="static",
            port_map=tuple(sorted((a, b) for a, b in self.port_map.items() if a != b)),
        )

    def argv(self, argv: Sequence[str]) -> list[str]:
        return netns.exec_argv(self.netns, argv) if self.netns else list(argv)


def plan_pods(resources: Sequence[Resource], mesh_dir: str) -> list[Pod]:
    """The pods of the Workloads among `resources` (Namespaces among them decide sidecar injection)."""
    pods: list[Pod] = []
    seen: dict[str, str] = {}
    ns_labels = {r.name: r.metadata.labels for r in resources if r.kind == "Namespace"}
    for r in resources:
        if r.kind != "Workload":
            continue
        spec = r.spec
        cwd = mesh_dir
        if spec.workdir:
            cwd = os.path.normpath(os.path.join(mesh_dir, spec.workdir))
        for i in range(spec.replicas):
            name = f"{r.name}-{i}"
            if name in seen:
                raise RunnerError(f"pod name {name} is used by workloads in namespaces {seen[name]} and "
                                  f"{r.namespace}; workload names must be unique in a local mesh")
            seen[name] = r.namespace
            pods.append(Pod(
                name=name, workload=r.name, namespace=r.namespace, labels=dict(r.metadata.labels),
                ports=[p.container_port for p in spec.ports], sidecar=sidecar_enabled(spec, ns_labels.get(r.namespace)),
                service_account=spec.service_account or "default", locality=spec.locality or "",
                command=list(spec.command), env=dict(spec.env), cwd=cwd, index=len(pods),
                hold=spec.hold_application_until_proxy_starts,
            ))
    return pods
