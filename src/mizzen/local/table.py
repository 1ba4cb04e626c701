"""The runner's state: one `PodTable` (and its lock), read by a pure `status_of(table)`.

Everything the runner knows lives here: the mesh's identity and phase, the control-plane replicas and the
pods with their processes, what the agents last reported, and the runner's copy of the control plane's
services and instances. The supervisor (supervisor.py) records what it observes; operations
(operations.py) add and remove pods; both hold `table.lock` while they change it and never while they wait.
`status_of` turns the table into the `status.json` document without looking at anything else.
"""
from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..client import StateLayout
from .pods import Pod
from .procs import Child

WorkloadKey = tuple[str, str]  # (namespace, name)
VipTable = dict[tuple[str, int], list[tuple[str, int]]]


@dataclass
class MeshInfo:
    """What identifies a mesh run: fixed once preflight resolved the mode."""

    meshid: str
    state_dir: str
    mesh_file: str
    mode: str = "auto"  # netns | loopback once resolved
    runner_pid: int = 0
    host: str | None = None  # a host runner of a multi-host mesh (no control plane of its own)
    store: str = "sqlite"  # the control planes' store as shown (backends.display_url)
    consul_api: str | None = None  # HOST:PORT of the Consul API, if served

    @property
    def layout(self) -> StateLayout:
        return StateLayout(self.state_dir)


@dataclass
class RunState:
    """The runner's lifecycle, shared by the main loop, the control channel and the reconciler."""

    phase: str = "starting"  # starting | running | stopping | stopped | failed
    error: str | None = None
    ready: bool = False
    stop_requested: bool = False
    force: bool = False  # a second signal: cut every wait short
    started: float = field(default_factory=time.monotonic)


@dataclass
class PodTable:
    info: MeshInfo
    run: RunState = field(default_factory=RunState)
    lock: threading.RLock = field(default_factory=threading.RLock)
    cps: list[Child] = field(default_factory=list)  # control-plane replicas; replica i on api[-i].sock
    ratelimit: list[Child] = field(default_factory=list)  # rate-limit service replicas (local/ratelimit.py)
    redis: Child | None = None  # the managed redis-server of the rate-limit service, if any
    pods: list[Pod] = field(default_factory=list)
    agents: dict[str, Child] = field(default_factory=dict)
    apps: dict[str, Child] = field(default_factory=dict)
    agent_states: dict[str, dict[str, Any]] = field(default_factory=dict)  # pod -> its agent.state
    envoy_pids: dict[str, int] = field(default_factory=dict)
    envoy_alive: dict[str, bool] = field(default_factory=dict)  # as last observed
    registered: set[str] = field(default_factory=set)  # instance ids the registry has
    static_registered: dict[str, float] = field(default_factory=dict)  # sidecar-less pods: id -> last PUT
    services: list[dict[str, Any]] = field(default_factory=list)  # the control plane's, as last read
    instance_items: list[dict[str, Any]] = field(default_factory=list)  # the registry's, as last read
    vip_table: Any = None  # (VIP table, proxies' egress) last synced to every pod (meshview.sync_vip_rules)
    next_index: int = 0
    generation: int = 0

    # ------------------------------------------------------------------ pods
    def add(self, pod: Pod) -> None:
        with self.lock:
            self.pods.append(pod)

    def remove(self, pod: Pod) -> None:
        """Forget a stopped pod and everything recorded about it."""
        with self.lock:
            self.pods = [p for p in self.pods if p is not pod]
            for t in (self.agents, self.apps, self.agent_states, self.envoy_pids, self.envoy_alive):
                t.pop(pod.name, None)
            self.static_registered.pop(pod.instance_id, None)

    def live(self, workload: str, namespace: str | None = None) -> list[Pod]:
        """The pods of a workload that are not being stopped."""
        with self.lock:
            return [p for p in self.pods if p.workload == workload and not p.stopping
                    and (namespace is None or p.namespace == namespace)]

    def running_counts(self) -> dict[WorkloadKey, int]:
        with self.lock:
            out: dict[WorkloadKey, int] = {}
            for p in self.pods:
                if not p.stopping:
                    out[(p.namespace, p.workload)] = out.get((p.namespace, p.workload), 0) + 1
            return out

    def name_new(self, pod: Pod) -> Pod:
        """Give a planned replica a unique name `<workload>-<5 hex>`, the next index and a new generation."""
        with self.lock:
            taken = {p.name for p in self.pods}
            while True:
                name = f"{pod.workload}-{secrets.token_hex(3)[:5]}"
                if name not in taken:
                    break
            self.generation += 1
            pod.name, pod.index, pod.generation = name, self.next_index, self.generation
            self.next_index += 1
        return pod

    def children(self, pods: Iterable[Pod]) -> tuple[list[Child], list[Child]]:
        """(apps, agents) of these pods."""
        with self.lock:
            pods = list(pods)
            return ([self.apps[p.name] for p in pods if p.name in self.apps],
                    [self.agents[p.name] for p in pods if p.name in self.agents])

    @property
    def cps_running(self) -> bool:
        return bool(self.cps) and all(c.running for c in self.cps)


# ---------------------------------------------------------------------------------------------- status

def _controlplane(layout: StateLayout, i: int, cp: Child) -> dict[str, Any]:
    return {"name": cp.name, "kind": "controlplane", "pid": cp.pid, "replica": i,
            "address": f"unix:{layout.api_socket(i)}", "xdsAddress": f"unix:{layout.xds_socket(i)}",
            "state": cp.state(), "restarts": cp.restarts, "log": cp.log_path, "cmdline": cp.exec_argv}


def _ratelimit(t: PodTable) -> list[dict[str, Any]]:
    """The rate-limit service replicas and the managed Redis (local/ratelimit.py)."""
    layout = t.info.layout
    out = [{"name": c.name, "kind": "ratelimit", "pid": c.pid, "replica": i,
            "address": f"unix:{layout.ratelimit_socket(i)}", "adminAddress": f"unix:{layout.ratelimit_admin_socket(i)}",
            "state": c.state(), "restarts": c.restarts, "log": c.log_path, "cmdline": c.exec_argv}
           for i, c in enumerate(t.ratelimit)]
    if t.redis is not None:
        c = t.redis
        out.append({"name": "redis", "kind": "redis", "pid": c.pid, "address": f"unix:{layout.redis_socket}",
                    "state": c.state(), "restarts": c.restarts, "log": c.log_path, "cmdline": c.exec_argv})
    return out


def status_of(t: PodTable) -> dict[str, Any]:
    """The status document (`status.json`, `GET /status`) from the table alone: no process is polled and no
    file read; the supervisor records what it observes first."""
    layout = t.info.layout
    comps = [_controlplane(layout, i, cp) for i, cp in enumerate(t.cps)] + _ratelimit(t)
    pods_out = []
    all_ready = t.run.phase == "running" and (t.cps_running or t.info.host is not None)
    for pod in t.pods:
        agent, app = t.agents.get(pod.name), t.apps.get(pod.name)
        registered = pod.instance_id in t.registered
        pod_ready = True
        if agent is not None:
            ast = t.agent_states.get(pod.name) or {}
            astate = ast.get("state", "starting") if agent.running else agent.state()
            comps.append({"name": f"{pod.name}/agent", "kind": "agent", "pod": pod.name, "pid": agent.pid,
                          "address": f"{pod.ip}:{ast.get('healthPort') or pod.health_port}", "state": astate,
                          "restarts": agent.restarts, "log": agent.log_path, "cmdline": agent.exec_argv})
            epid = t.envoy_pids.get(pod.name)
            envoy_state = "running" if epid and t.envoy_alive.get(pod.name) else \
                ("starting" if agent.running else "stopped")
            comps.append({"name": f"{pod.name}/envoy", "kind": "envoy", "pod": pod.name, "pid": epid,
                          "epoch": ast.get("epoch"), "binary": ast.get("envoyBinary"),
                          "address": f"unix:{pod.files.admin_socket}", "state": envoy_state,
                          "log": pod.files.envoy_log})
            pod_ready = pod_ready and agent.running and astate == "ready"
        if app is not None:
            comps.append({"name": f"{pod.name}/app", "kind": "app", "pod": pod.name, "pid": app.pid,
                          "address": ",".join(f"{pod.ip}:{p}" for p in pod.app_ports),
                          "state": "waiting-for-sidecar" if app.state() == "pending" and agent else app.state(),
                          "restarts": app.restarts, "lastExit": app.last_exit, "log": app.log_path,
                          "cmdline": app.exec_argv})
            pod_ready = pod_ready and app.running
        if pod.ports:
            pod_ready = pod_ready and registered
        all_ready = all_ready and (pod_ready or pod.stopping)
        pods_out.append({
            "name": pod.name, "workload": pod.workload, "namespace": pod.namespace, "labels": pod.labels,
            "ip": pod.ip, "netns": pod.netns, "sidecar": pod.sidecar, "ports": pod.ports,
            "portMap": {str(a): b for a, b in pod.port_map.items()},
            "outboundPort": pod.outbound_port if pod.sidecar else None,
            "inboundPort": pod.inbound_port if pod.sidecar else None,
            "dir": pod.dir, "registered": registered, "ready": pod_ready,
            "generation": pod.generation, "terminating": pod.stopping,
            "holdApplicationUntilProxyStarts": pod.hold, "bypass": pod.bypass,
            "runAsUser": pod.app_user[0] if pod.app_user else None,
            "runAsGroup": pod.app_user[1] if pod.app_user else None,
        })
    return {
        "meshId": t.info.meshid, "stateDir": t.info.state_dir, "meshFile": t.info.mesh_file, "mode": t.info.mode,
        "phase": t.run.phase, "error": t.run.error, "ready": bool(all_ready),
        "runner": {"pid": t.info.runner_pid}, "store": t.info.store, "consulApi": t.info.consul_api,
        **({"host": t.info.host} if t.info.host else {}),
        "components": comps, "pods": pods_out,
    }
