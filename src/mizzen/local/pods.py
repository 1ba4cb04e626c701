"""The local runner's plan: `Pod` (one replica of a Workload and where it runs) and `plan_pods` (the pods of
a mesh file's Workloads); also what the runner's modules share: their errors, API_ERRORS, POLL_SECONDS.
"""
from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field
from typing import Sequence

from ..api import Resource
from ..api.core import sidecar_enabled
from ..client import ClientError, PodDir
from ..model.types import Instance, labels_tuple
from ..translate.proxyless import ANNOTATION as PROXYLESS_ANNOTATION
from . import netns
from .users import SYSTEM_PATH, as_user, path_for, reachable_by, searchable_by  # noqa: F401  (re-exported)

OUTBOUND_PORT = netns.OUTBOUND_PORT
INBOUND_PORT = netns.INBOUND_PORT
HEALTH_PORT = 15020
POLL_SECONDS = 0.25
# Apps run as a non-root user (netns mode, as root): the Workload's securityContext, else the mesh's app user,
# a uid (and gid) picked per mesh from [APP_UID_BASE, APP_UID_BASE + APP_UID_SPAN): above the ids Debian
# gives to people (1000-59999) and its system range (60000-65535), so it is nobody's on a usual host.
APP_UID_BASE = 200000
APP_UID_SPAN = 100000


def mesh_app_user(meshid: str) -> tuple[int, int]:
    """The mesh's default app uid and gid (the same number), from its mesh id."""
    uid = APP_UID_BASE + int(meshid, 16) % APP_UID_SPAN
    return uid, uid


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
    run_as_user: int | None = None  # the Workload's securityContext (None: the mesh's app user)
    run_as_group: int | None = None
    gateway: bool = False  # Workload spec.gateway: Envoy only, no capture; its "app" is PAUSE_COMMAND
    host_ports: dict[int, int] = field(default_factory=dict)  # Gateway server port -> host 127.0.0.1 port
    proxyless: bool = False  # annotated mizzen.dev/proxyless: its app gets GRPC_XDS_BOOTSTRAP (docs/proxyless.md)
    generation: int = 0  # 0: made by `up`; n: made by the n-th rollout/scale of the runner
    metrics: tuple[int, str] | None = None  # the app's own metrics (container port, path)
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
    app_user: tuple[int, int] | None = None  # (uid, gid) the app runs as; None: the runner's own
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

    def app_metrics_url(self) -> str | None:
        """The app's metrics as the pod's agent reaches them (its real port; loopback mode maps ports)."""
        if self.metrics is None:
            return None
        port, path = self.metrics
        return f"http://127.0.0.1:{self.port_map.get(port, port)}{path}"

    def argv(self, argv: Sequence[str]) -> list[str]:
        return netns.exec_argv(self.netns, argv) if self.netns else list(argv)

    def app_argv(self, argv: Sequence[str]) -> list[str]:
        """The app's command line: in its namespace, and as its user when it has one."""
        return self.argv(as_user(self.app_user, argv))

    def resolve_app_user(self, meshid: str, *, root: bool) -> tuple[int, int] | None:
        """As root, the app drops to its Workload's uid/gid or the mesh's app user; otherwise it runs as the
        runner's user (a non-root runner cannot switch)."""
        if not root:
            return None
        uid, gid = mesh_app_user(meshid)
        if self.run_as_user is not None:
            uid = self.run_as_user
            gid = self.run_as_group if self.run_as_group is not None else uid
        elif self.run_as_group is not None:
            gid = self.run_as_group
        return uid, gid


# A gateway pod runs no app; like Kubernetes' pause container, this process holds the pod's place so a gateway
# has the same lifecycle as every pod (start when the sidecar is ready, stop, rollout, scale).
PAUSE_COMMAND = [sys.executable, "-c", "import signal; signal.pause()"]


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
                command=list(spec.command) or list(PAUSE_COMMAND), env=dict(spec.env), cwd=cwd, index=len(pods),
                hold=spec.hold_application_until_proxy_starts, gateway=spec.gateway,
                host_ports={hp.port: hp.host_port for hp in spec.host_ports},
                run_as_user=spec.security_context.run_as_user if spec.security_context else None,
                run_as_group=spec.security_context.run_as_group if spec.security_context else None,
                metrics=(spec.metrics.port, spec.metrics.path) if spec.metrics else None,
                proxyless=str(r.metadata.annotations.get(PROXYLESS_ANNOTATION, "")).lower() == "true",
            ))
    return pods


def check_host_ports(pods: Sequence[Pod]) -> None:
    """Before anything starts: every gateway host port is used by one pod and is free on 127.0.0.1 (else the
    gateway's Envoy could not bind it, and would refuse every listener update of its xDS push)."""
    seen: dict[int, str] = {}
    for p in pods:
        for port, host_port in sorted(p.host_ports.items()):
            if host_port in seen:
                raise RunnerError(f"host port {host_port} is published by both {seen[host_port]} and "
                                  f"{p.namespace}/{p.workload} (spec.hostPorts); give each its own")
            seen[host_port] = f"{p.namespace}/{p.workload}"
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", host_port))
                except OSError as e:
                    raise RunnerError(f"gateway {p.namespace}/{p.workload}: host port {host_port} (for port {port}) "
                                      f"cannot be bound on 127.0.0.1: {e.strerror}; free it or choose another "
                                      f"hostPort") from None
