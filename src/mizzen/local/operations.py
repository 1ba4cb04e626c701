"""The runner's operations on running pods: the orderly stop of replicas (withdraw first, wait until every
caller's proxy ACKed an EDS without them, let in-flight requests end, then stop the apps, then the agents,
which drain Envoy), starting one more replica, and what the control channel asks for on top of those:
rolling restart, scale and sidecar hot upgrade. Teardown (runner.py) uses the same stop steps.

`Operations` is a mixin of `Runner` (runner.py): it works on the runner's tables, declared below.
"""
from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..api.base import InvalidConfig
from ..api.load import from_dict
from ..cli.client import ApiError, unix_request
from . import netns, plainroutes
from .control import OperationError
from .meshstate import not_ready_reasons, read_json, write_json
from .pods import API_ERRORS, POLL_SECONDS, Child, Pod, plan_pods
from .procs import alive, cmdline, signal_pid
from .reconcile import persist_replicas

if TYPE_CHECKING:
    import threading

    from ..api import Resource
    from ..cli.client import ApiClient

log = logging.getLogger("mizzen.local")

WITHDRAW_TIMEOUT_SECONDS = 10.0  # how long a stop waits for callers' proxies to drop a withdrawn instance
APP_STOP_SECONDS = 10.0  # SIGTERM -> SIGKILL grace of an app


class Operations:
    """Runtime changes of a running mesh's pods. Called from the control channel's threads (one operation at
    a time) and by teardown; every change of the runner's tables happens under self.lock, every wait
    outside it."""

    # the runner's state these methods use (set in Runner.__init__)
    lock: threading.RLock
    api: ApiClient
    resources: list[Resource]
    mesh_dir: str
    pods: list[Pod]
    net: netns.MeshNet | None
    agents: dict[str, Child]
    apps: dict[str, Child]
    agent_states: dict[str, dict[str, Any]]
    envoy_pids: dict[str, int]
    static_registered: dict[str, float]
    services: list[dict[str, Any]]
    instance_items: list[dict[str, Any]]
    _vip_table: dict[tuple[str, int], list[tuple[str, int]]] | None
    timeout: float
    drain_seconds: float
    withdraw_timeout: float
    app_stop_seconds: float
    stop_requested: bool
    force: bool
    _next_index: int
    _generation: int

    if TYPE_CHECKING:  # the runner's methods these use (runner.py)
        def make_pod(self, pod: Pod) -> None: ...
        def agent_config(self, pod: Pod) -> dict[str, Any]: ...
        def launch(self, pod: Pod) -> None: ...
        def _deregister(self, iid: str) -> None: ...
        def refresh_services(self) -> bool: ...
        def refresh_instances(self) -> None: ...
        def status(self) -> dict[str, Any]: ...
        def write_status(self, st: dict[str, Any] | None = None) -> None: ...

    def _op_check(self) -> None:
        if self.stop_requested:
            raise OperationError("the mesh is stopping")

    def workload_pods(self, workload: str, namespace: str | None = None) -> list[Pod]:
        with self.lock:
            pods = [p for p in self.pods if p.workload == workload and not p.stopping
                    and (namespace is None or p.namespace == namespace)]
        if not pods and not self._workload_resource(workload, namespace) and \
                not (namespace and self.current_workload(workload, namespace)):
            names = sorted({p.workload for p in self.pods})
            raise OperationError(f"no workload {workload!r} (workloads: {', '.join(names) or 'none'})")
        return pods

    def _workload_resource(self, workload: str, namespace: str | None) -> Resource | None:
        for r in self.resources:
            if r.kind == "Workload" and r.name == workload and (namespace is None or r.namespace == namespace):
                return r
        return None

    def current_workload(self, workload: str, namespace: str | None) -> list[Resource]:
        """The workload as the store has it now (a change applied after `up`, e.g. `sidecar: false`, takes
        effect on the next rollout/scale) with its Namespace when there is one; the mesh file's copy when
        the store cannot be read."""
        r = self._workload_resource(workload, namespace)
        ns = r.namespace if r is not None else namespace
        if ns is None:
            return [r] if r is not None else []
        try:
            out = [from_dict(self.api.get_resource("Workload", ns, workload))]
        except (InvalidConfig, *API_ERRORS) as e:
            if isinstance(e, ApiError) and e.status == 404:
                return []  # deleted from the store
            log.warning("workload %s/%s: store unreadable (%s); using the mesh file's", ns, workload, e)
            if r is None:
                return []
            out = [r]
        try:
            out.append(from_dict(self.api.get_resource("Namespace", ns, ns)))
        except (InvalidConfig, *API_ERRORS):
            out += [x for x in self.resources if x.kind == "Namespace" and x.name == ns]
        return out

    def new_pod_like(self, workload: str, namespace: str | None) -> Pod:
        """Plan one more replica of a workload (as the store has it now), named `<workload>-<5 hex>`
        (unique in the mesh)."""
        found = self.current_workload(workload, namespace)
        if not found or found[0].kind != "Workload":
            raise OperationError(f"no workload {workload!r}")
        r = found[0]
        template = plan_pods([dataclasses.replace(r, spec=r.spec.model_copy(update={"replicas": 1})), *found[1:]],
                             self.mesh_dir)[0]
        with self.lock:
            taken = {p.name for p in self.pods}
            while True:
                name = f"{workload}-{secrets.token_hex(3)[:5]}"
                if name not in taken:
                    break
            self._generation += 1
            template.name, template.index, template.generation = name, self._next_index, self._generation
            self._next_index += 1
        return template

    def start_pod(self, pod: Pod, progress: Callable[[str], None]) -> None:
        """Make and start one new replica and wait until it is ready, registered and known to the callers
        that know its workload's other replicas."""
        self._op_check()
        with self.lock:
            self.make_pod(pod)
            self.pods.append(pod)
            self.launch(pod)
        progress(f"{pod.name}: started ({pod.ip}), waiting until it is ready and registered")
        deadline = time.monotonic() + self.timeout
        while True:
            self._op_check()
            with self.lock:
                st = next((p for p in self.status()["pods"] if p["name"] == pod.name), None)
            if st and st["ready"] and self._instance_healthy(pod):
                break
            if time.monotonic() > deadline:
                raise OperationError(f"{pod.name} not ready after {self.timeout:.0f}s: "
                                     + "; ".join(not_ready_reasons({"pods": [st] if st else [],
                                                                    "components": self.status()["components"]})))
            time.sleep(POLL_SECONDS)
        if pod.ports:
            with self.lock:
                near = [p for p in self.pods if p.workload == pod.workload and p is not pod and p.ports]
            ok = self.wait_endpoints(add=pod, near=near)
            progress(f"{pod.name}: ready; callers' proxies {'have' if ok else 'may not have'} its endpoint")
        else:
            progress(f"{pod.name}: ready")
        self.sync_vip_rules(fetch=True)

    def sync_vip_rules(self, fetch: bool = False) -> None:
        """Point every pod's service VIPs at the current healthy endpoints (plainroutes.py: all connections of
        a sidecar-less pod, Envoy's passthrough ones in a pod with a sidecar); `fetch`: read services and
        instances from the control plane first (before/after a replica change). The rules are computed once
        for all pods, and only when the table changed since the last sync."""
        if self.net is None:
            return
        if fetch:
            self.refresh_services()
            self.refresh_instances()
        table = plainroutes.vip_table(self.services, self.instance_items)
        with self.lock:
            if table == self._vip_table:
                return  # every pod has these (a new pod gets them when it is made)
            chain = plainroutes.service_chain(table)
            failed = False
            for name in [p.name for p in self.pods]:
                try:
                    self.net.set_vip_rules(name, chain)
                except netns.NetnsError as e:
                    log.error("%s: %s", name, e)
                    failed = True
            self._vip_table = None if failed else table  # a failure is retried on the next sync

    def _plain_connections(self, pod: Pod) -> int:
        """Connections open to a sidecar-less pod's app ports (from callers' sidecars or DNATed clients)."""
        app = self.apps.get(pod.name)
        if pod.sidecar or app is None or not app.running or not pod.ports:
            return 0
        return netns.established_to(app.pid, pod.app_ports)

    def _instance_healthy(self, pod: Pod) -> bool:
        if not pod.ports:
            return True
        try:
            items = self.api.instances()
        except API_ERRORS:
            return False
        return any(i.get("id") == pod.instance_id and i.get("healthy", True) for i in items)

    def _proxy_eds(self, exclude: Sequence[Pod]) -> list[tuple[str, str, str]] | None:
        """(id, EDS state, sent EDS as JSON text) of every connected proxy but those of `exclude`; None: no
        answer from the control plane."""
        skip = [f"~{p.name}.{p.namespace}~" for p in exclude]
        try:
            out = []
            for pr in self.api.proxies():
                pid = str(pr.get("id"))
                if not pr.get("connected") or any(s in pid for s in skip):
                    continue
                eds = (pr.get("types") or {}).get("EDS") or {}
                text = json.dumps(self.api.proxy_resources(pid, "EDS"))
                out.append((pid, str(eds.get("state")), text))
            return out
        except API_ERRORS:
            return None

    @staticmethod
    def endpoint_marks(pod: Pod) -> list[str]:
        """How the pod's endpoints appear in a ClusterLoadAssignment as JSON (address + the port callers use)."""
        ports = [pod.register_port_map.get(p, pod.port_map.get(p, p)) if pod.register_port_map else
                 pod.port_map.get(p, p) for p in pod.ports]
        return [f'"address": "{pod.ip}", "portValue": {port}' for port in dict.fromkeys(ports)]

    def wait_endpoints(self, *, add: Pod | None = None, remove: Sequence[Pod] = (), near: Sequence[Pod] = (),
                       timeout: float | None = None) -> bool:
        """Wait (bounded) until every connected proxy has ACKed its EDS and what it was sent no longer has
        any endpoint of the `remove` pods and, when it has one of a `near` pod (a sibling replica), has the
        endpoints of `add`. True if that happened within the bound."""
        timeout = self.withdraw_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        gone = [m for p in remove for m in self.endpoint_marks(p)]
        new = self.endpoint_marks(add) if add else []
        sibling = [m for p in near for m in self.endpoint_marks(p)]
        while True:
            if self.stop_requested and not remove:
                return False
            seen = self._proxy_eds([*remove, *([add] if add else [])])
            if seen is not None:
                pending = []
                for pid, state, text in seen:
                    if state not in ("SYNCED", "NOT_SENT"):
                        pending.append(pid)
                    elif any(m in text for m in gone):
                        pending.append(pid)
                    elif new and not all(m in text for m in new) and any(m in text for m in sibling):
                        pending.append(pid)
                if not pending:
                    return True
            if time.monotonic() > deadline:
                log.warning("endpoints not propagated within %.0fs (add %s, remove %s)", timeout,
                            add.name if add else "-", ",".join(p.name for p in remove) or "-")
                return False
            time.sleep(0.2)

    def withdraw_pods(self, pods: Sequence[Pod]) -> None:
        """Step 1 of an orderly stop: take the instances out of the registry, keep everything running."""
        for pod in pods:
            with self.lock:
                pod.stopping = True
                agent = self.agents.get(pod.name)
            if not pod.ports:
                continue
            if pod.sidecar and agent is not None and agent.running:
                try:
                    status, _ = unix_request(os.path.join(pod.dir, "agent.sock"), "POST", "/withdraw", timeout=5)
                    if status == 200:
                        continue
                except (OSError, http.client.HTTPException):
                    pass
                signal_pid(agent.pid, signal.SIGUSR1)  # the agent withdraws on SIGUSR1 too
                # and in case it cannot reach the registry either: the runner withdraws it as well
                self._deregister(pod.instance_id)
            else:
                self._deregister(pod.instance_id)

    def _inbound_active(self, pod: Pod) -> int:
        """Requests the pod's Envoy is serving (its admin's own excluded); 0 if unknown."""
        try:
            status, body = unix_request(os.path.join(pod.dir, "admin.sock"), "GET",
                                        "/stats?format=json&filter=%5Ehttp%5C..*%5C.downstream_rq_active%24",
                                        timeout=2)
            if status != 200:
                return 0
            return sum(int(x.get("value") or 0) for x in json.loads(body).get("stats", [])
                       if "name" in x and not str(x["name"]).startswith("http.admin."))
        except (OSError, ValueError, http.client.HTTPException):
            return 0

    def stop_pods(self, pods: Sequence[Pod], progress: Callable[[str], None] = lambda m: None, *,
                  withdraw_timeout: float | None = None, remove: bool = True) -> None:
        """The orderly stop of replicas: withdraw (callers stop picking them) → wait until every connected
        proxy has dropped them (bounded) and in-flight requests end → stop the apps → stop the agents
        (they drain Envoy: Connection: close / GOAWAY, then exit) → remove the pods."""
        pods = [p for p in pods]
        if not pods:
            return
        names = ", ".join(p.name for p in pods)
        self.withdraw_pods(pods)
        if any(p.ports for p in pods):
            ok = self.wait_endpoints(remove=[p for p in pods if p.ports], timeout=withdraw_timeout)
            progress(f"{names}: withdrawn; callers' proxies {'dropped' if ok else 'may still have'} the endpoint")
        self.sync_vip_rules(fetch=True)  # sidecar-less callers stop opening connections to them too
        # requests already on their way finish (bounded by the drain time): a sidecar's in-flight requests,
        # or the connections still open to a sidecar-less app (callers' proxies close them once idle)
        deadline = time.monotonic() + max(1.0, self.drain_seconds)
        while any(self._inbound_active(p) if p.sidecar else self._plain_connections(p) for p in pods) \
                and time.monotonic() < deadline and not self.force:
            time.sleep(0.1)
        with self.lock:
            apps = [self.apps[p.name] for p in pods if p.name in self.apps]
            agents = [self.agents[p.name] for p in pods if p.name in self.agents]
        for c in apps:
            c.stop(signal.SIGTERM, group=True)
        self._wait_children(apps, 1.0 if self.force else self.app_stop_seconds, group=True)
        progress(f"{names}: app stopped")
        for c in agents:
            c.stop(signal.SIGTERM)
        self._wait_children(agents, 1.0 if self.force else self.drain_seconds + 15.0, group=True)
        for p in pods:
            epid = self.envoy_pids.get(p.name)
            if epid and alive(epid) and any("envoy" in a for a in cmdline(epid)):
                signal_pid(epid, signal.SIGKILL)
        progress(f"{names}: sidecar drained and stopped")
        if not remove:
            return
        with self.lock:
            for p in pods:
                if self.net is not None and p.name in self.net.pods:
                    try:
                        self.net.remove_pod(p.name)
                    except netns.NetnsError as e:
                        log.error("%s: %s", p.name, e)
                self.pods = [x for x in self.pods if x is not p]
                for sock in ("admin.sock", "agent.sock"):  # the dir stays for its logs; dead sockets go
                    try:
                        os.unlink(os.path.join(p.dir, sock))
                    except OSError:
                        pass
                for table in (self.agents, self.apps, self.agent_states, self.envoy_pids):
                    table.pop(p.name, None)
                self.static_registered.pop(p.instance_id, None)
            self.write_status()

    def rollout_restart(self, workload: str, namespace: str | None, progress: Callable[[str], None]) -> list[str]:
        """Replace every replica of a workload, one at a time: new replica up (ready, registered, known to
        callers) → old one stopped in order (see stop_pods). Returns the new pod names."""
        old = self.workload_pods(workload, namespace)
        progress(f"rollout restart {workload}: {len(old)} replica(s): {', '.join(p.name for p in old) or '-'}")
        made = []
        for i, pod in enumerate(old, 1):
            self._op_check()
            new = self.new_pod_like(pod.workload, pod.namespace)
            progress(f"[{i}/{len(old)}] {pod.name} -> {new.name}")
            try:
                self.start_pod(new, progress)
            except OperationError:
                progress(f"{new.name}: did not become ready; removing it, {pod.name} stays")
                self.stop_pods([new], progress, withdraw_timeout=2.0)
                raise
            made.append(new.name)
            self.stop_pods([pod], progress)
            progress(f"[{i}/{len(old)}] {pod.name} replaced by {new.name}")
        return made

    def scale(self, workload: str, namespace: str | None, replicas: int, progress: Callable[[str], None],
              persist: bool = True) -> list[str]:
        """Start or orderly-stop replicas until `replicas` run; `persist`: record the count in the store's
        Workload too (so the runner's reconcile pass, reconcile.py, keeps it)."""
        pods = self.workload_pods(workload, namespace)
        if replicas < 0 or replicas > 64:
            raise OperationError("replicas must be between 0 and 64")
        progress(f"scale {workload}: {len(pods)} -> {replicas}")
        while len(pods) < replicas:
            new = self.new_pod_like(workload, namespace)
            self.start_pod(new, progress)
            pods.append(new)
        if len(pods) > replicas:
            self.stop_pods(pods[replicas:][::-1], progress)
        if persist:
            ns = namespace or next((p.namespace for p in pods), None) or \
                getattr(self._workload_resource(workload, None), "namespace", "default")
            try:
                persist_replicas(self.api, workload, ns, replicas)
            except API_ERRORS as e:
                progress(f"warning: replicas not recorded in the store ({e}); the runner may scale back")
        return [p.name for p in self.workload_pods(workload, namespace)]

    def proxy_upgrade(self, workload: str, namespace: str | None, envoy: str | None,
                      progress: Callable[[str], None]) -> list[dict[str, Any]]:
        """Hot-restart the Envoy of every replica of a workload (one at a time); apps keep running."""
        pods = [p for p in self.workload_pods(workload, namespace) if p.sidecar]
        if not pods:
            raise OperationError(f"workload {workload!r} has no sidecars")
        if envoy:
            envoy = shutil.which(envoy) or envoy
            if not os.access(envoy, os.X_OK):
                raise OperationError(f"envoy binary {envoy!r} not found or not executable")
            envoy = os.path.abspath(envoy)
        out = []
        for pod in pods:
            self._op_check()
            if envoy:  # a restarted agent keeps the new binary
                cfg = read_json(os.path.join(pod.dir, "agent.json")) or self.agent_config(pod)
                cfg["envoyBinary"] = envoy
                write_json(os.path.join(pod.dir, "agent.json"), cfg)
            body = json.dumps({"envoy": envoy} if envoy else {}).encode()
            try:
                status, raw = unix_request(os.path.join(pod.dir, "agent.sock"), "POST", "/hot-restart", body=body,
                                           headers={"Content-Type": "application/json"}, timeout=120)
                answer = json.loads(raw or b"{}")
            except (OSError, ValueError, http.client.HTTPException) as e:
                raise OperationError(f"{pod.name}: agent unreachable: {e}") from None
            if status != 200:
                raise OperationError(f"{pod.name}: hot restart failed: {answer.get('message')}")
            progress(f"{pod.name}: envoy epoch {answer.get('epoch')} (pid {answer.get('envoyPid')}) serves")
            out.append({"pod": pod.name, **answer})
        return out

    def _wait_children(self, children: Sequence[Child], timeout: float, group: bool) -> None:
        deadline = time.monotonic() + timeout
        for c in children:
            if c.popen is None:
                continue
            try:
                c.popen.wait(max(0.0, deadline - time.monotonic()) if not self.force else 0.5)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", c.name)
                signal_pid(c.popen.pid, signal.SIGKILL, group=group)
                signal_pid(c.popen.pid, signal.SIGKILL)
                try:
                    c.popen.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            if group:  # what the process left in its session (e.g. a shell's children)
                signal_pid(c.popen.pid, signal.SIGKILL, group=True)
            c.last_exit = c.popen.returncode
            c.popen = None
