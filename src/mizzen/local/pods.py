"""The local runner's plan and its processes: `Pod` (one replica of a Workload and where it runs),
`plan_pods` (the pods of a mesh file's Workloads) and `Child` (a process the runner starts, watches and
restarts with back-off); also what runner.py and operations.py share (RunnerError, API_ERRORS, POLL_SECONDS).
"""
from __future__ import annotations

import http.client
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Sequence

from ..api import Resource
from ..api.core import sidecar_enabled
from ..cli.client import ApiError, MeshUnavailable
from . import netns
from .procs import signal_pid

log = logging.getLogger("mizzen.local")

OUTBOUND_PORT = netns.OUTBOUND_PORT
INBOUND_PORT = netns.INBOUND_PORT
HEALTH_PORT = 15020
POLL_SECONDS = 0.25
BACKOFF_MAX_SECONDS = 30.0
STABLE_SECONDS = 30.0  # a process that ran this long has its back-off reset


class RunnerError(Exception):
    """A problem to report to the user (no traceback)."""


API_ERRORS = (MeshUnavailable, OSError, ApiError, ValueError, KeyError, TypeError, http.client.HTTPException)


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

    @property
    def instance_id(self) -> str:
        return f"{self.namespace}.{self.name}"

    @property
    def app_ports(self) -> list[int]:
        return [self.port_map.get(p, p) for p in self.ports]

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


# --------------------------------------------------------------------------------- supervised process

@dataclass
class Child:
    """A process the runner starts, watches and restarts with back-off."""

    name: str
    argv: list[str]
    log_path: str
    env: dict[str, str] | None = None
    cwd: str | None = None
    restart: bool = True
    popen: subprocess.Popen | None = None
    restarts: int = 0
    failures: int = 0  # consecutive quick exits (drives the back-off)
    started_at: float = 0.0
    started_wall: float = 0.0
    next_start: float = 0.0
    last_exit: int | None = None
    exec_argv: list[str] = field(default_factory=list)  # the argv after `ip netns exec` execs

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        with open(self.log_path, "ab") as out:
            out.write(f"--- mizzen: {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}"
                      f"{f' (restart {self.restarts})' if self.restarts else ''}: {' '.join(self.argv)}\n".encode())
            out.flush()
            try:
                self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                              env=self.env, cwd=self.cwd, start_new_session=True)
            except OSError as e:
                out.write(f"--- mizzen: cannot start: {e}\n".encode())
                self.popen = None
                self.last_exit = 127
                self._schedule_restart(time.monotonic())
                return
        self.started_at = time.monotonic()
        self.started_wall = time.time()

    def _schedule_restart(self, now: float) -> None:
        self.failures += 1
        self.next_start = now + min(BACKOFF_MAX_SECONDS, 0.5 * 2 ** (self.failures - 1))

    def check(self, now: float) -> bool:
        """Notice an exit (scheduling a restart) or start when due. True when something changed."""
        if self.popen is not None:
            rc = self.popen.poll()
            if rc is None:
                return False
            self.popen = None
            self.last_exit = rc
            if now - self.started_at >= STABLE_SECONDS:
                self.failures = 0
            self._schedule_restart(now)
            log.warning("%s exited with %s%s", self.name, rc,
                        f"; restarting in {self.next_start - now:.1f}s" if self.restart else "")
            return True
        if self.restart and now >= self.next_start and self.last_exit is not None:
            self.restarts += 1
            self.start()
            return True
        return False

    def stop(self, sig: int = signal.SIGTERM, group: bool = False) -> None:
        self.restart = False
        if self.running:
            signal_pid(self.popen.pid, sig, group=group)

    def state(self) -> str:
        if self.running:
            return "running"
        if self.popen is None and self.last_exit is None:
            return "pending"
        return "restarting" if self.restart else "stopped"
