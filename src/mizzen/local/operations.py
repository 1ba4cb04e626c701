"""The runner's operations on running pods: the orderly stop of replicas, starting one more replica, and what
the control channel and the reconciler ask for on top of those: rolling restart, scale (with
`persist_replicas`, which records the new count in the store) and sidecar hot upgrade.

The stop order (rollout, scale down, `mizzen down`):
    1. withdraw: the agent takes the instance out of the registry and keeps serving (the runner deregisters
       it itself when the agent cannot be asked);
    2. wait until every connected proxy has ACKed an EDS without the pod's endpoints (bounded by the
       withdraw timeout); the sidecar-less callers' VIP rules are updated too;
    3. wait until nothing is in flight to the pod (bounded by the drain time);
    4. stop the app; 5. stop the sidecar (the agent drains Envoy); 6. remove the pod (namespace, sockets).

`Operations` is built from its collaborators (protocols.py): the `PodTable`, a `Launcher`, the control
plane's API and the `PodNetwork`; it holds no lock of its own (one operation at a time is the runner's
`op_lock`) and changes the table only under `table.lock`, never waiting while it holds it.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from typing import Any, Sequence

import yaml

from ..api import Resource
from ..api.base import InvalidConfig
from ..api.load import from_dict
from ..client import HttpError
from . import meshview
from .meshstate import not_ready_reasons
from .netns import NetnsError
from .options import Options
from .pods import API_ERRORS, POLL_SECONDS, OperationError, Pod, plan_pods
from .protocols import ControlPlaneApi, Launcher, PodNetwork, Progress
from .table import PodTable, status_of

log = logging.getLogger("mizzen.local")

_SYNCED = ("SYNCED", "NOT_SENT")


def _quiet(msg: str) -> None:
    pass


def persist_replicas(api: ControlPlaneApi, workload: str, namespace: str, replicas: int) -> None:
    """Write a Workload's new replica count to the store (what `mizzen scale` did at runtime), so the
    reconciler (reconcile.py) keeps it."""
    d = api.get_resource("Workload", namespace, workload)
    d.setdefault("spec", {})["replicas"] = replicas
    meta = d.get("metadata") or {}
    d["metadata"] = {k: v for k, v in meta.items() if k in ("name", "namespace", "labels", "annotations")}
    api.apply([(f"<mizzen scale {workload}>", yaml.safe_dump(d, sort_keys=False))])


class Operations:
    def __init__(self, table: PodTable, launcher: Launcher, api: ControlPlaneApi, network: PodNetwork,
                 options: Options, *, resources: Sequence[Resource] = (), mesh_dir: str = "."):
        self.table = table
        self.launcher = launcher
        self.api = api
        self.network = network
        self.options = options
        self.resources = list(resources)  # the mesh file's, when the store cannot be read
        self.mesh_dir = mesh_dir

    def _check(self) -> None:
        if self.table.run.stop_requested:
            raise OperationError("the mesh is stopping")

    # ------------------------------------------------------------------ workloads
    def workload_pods(self, workload: str, namespace: str | None = None) -> list[Pod]:
        pods = self.table.live(workload, namespace)
        if not pods and not self._file_workload(workload, namespace) and \
                not (namespace and self.current_workload(workload, namespace)):
            with self.table.lock:
                names = sorted({p.workload for p in self.table.pods})
            raise OperationError(f"no workload {workload!r} (workloads: {', '.join(names) or 'none'})")
        return pods

    def _file_workload(self, workload: str, namespace: str | None) -> Resource | None:
        for r in self.resources:
            if r.kind == "Workload" and r.name == workload and (namespace is None or r.namespace == namespace):
                return r
        return None

    def current_workload(self, workload: str, namespace: str | None) -> list[Resource]:
        """The workload as the store has it now (a change applied after `up`, e.g. `sidecar: false`, takes
        effect on the next rollout/scale) with its Namespace when there is one; the mesh file's copy when
        the store cannot be read."""
        r = self._file_workload(workload, namespace)
        ns = r.namespace if r is not None else namespace
        if ns is None:
            return [r] if r is not None else []
        try:
            out = [from_dict(self.api.get_resource("Workload", ns, workload))]
        except (InvalidConfig, *API_ERRORS) as e:
            if isinstance(e, HttpError) and e.status == 404:
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
        """Plan one more replica of a workload (as the store has it now), named `<workload>-<5 hex>`."""
        found = self.current_workload(workload, namespace)
        if not found or found[0].kind != "Workload":
            raise OperationError(f"no workload {workload!r}")
        r = found[0]
        template = plan_pods([dataclasses.replace(r, spec=r.spec.model_copy(update={"replicas": 1})), *found[1:]],
                             self.mesh_dir)[0]
        return self.table.name_new(template)

    # ------------------------------------------------------------------ a new replica
    def start_pod(self, pod: Pod, progress: Progress) -> None:
        """Make and start one new replica and wait until it is ready, registered and known to the callers
        that know its workload's other replicas."""
        self._check()
        self.network.add_pod(pod, meshview.vip_chain(self.table, self.api, pod))
        self.launcher.make_pod(pod)
        self.table.add(pod)
        self.launcher.launch(pod)
        progress(f"{pod.name}: started ({pod.ip}), waiting until it is ready and registered")
        deadline = time.monotonic() + self.options.timeout
        while True:
            self._check()
            with self.table.lock:
                st = status_of(self.table)
            mine = next((p for p in st["pods"] if p["name"] == pod.name), None)
            if mine and mine["ready"] and meshview.instance_healthy(self.api, pod):
                break
            if time.monotonic() > deadline:
                raise OperationError(f"{pod.name} not ready after {self.options.timeout:.0f}s: " + "; ".join(
                    not_ready_reasons({"pods": [mine] if mine else [], "components": st["components"]})))
            time.sleep(POLL_SECONDS)
        if pod.ports:
            with self.table.lock:
                near = [p for p in self.table.pods if p.workload == pod.workload and p is not pod and p.ports]
            ok = self.wait_endpoints(add=pod, near=near)
            progress(f"{pod.name}: ready; callers' proxies {'have' if ok else 'may not have'} its endpoint")
        else:
            progress(f"{pod.name}: ready")
        meshview.sync_vip_rules(self.table, self.api, self.network, fetch=True)

    # ------------------------------------------------------------------ endpoint propagation
    def wait_endpoints(self, *, add: Pod | None = None, remove: Sequence[Pod] = (), near: Sequence[Pod] = (),
                       timeout: float | None = None) -> bool:
        """Wait (bounded) until every connected proxy has ACKed its EDS and what it was sent has no endpoint
        of the `remove` pods and, when it has one of a `near` pod (a sibling replica), has the endpoints of
        `add`. True if that happened within the bound."""
        timeout = self.options.withdraw_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        gone = set().union(*(p.endpoints() for p in remove))
        new = add.endpoints() if add else set()
        sibling = set().union(*(p.endpoints() for p in near))
        while True:
            if self.table.run.stop_requested and not remove:
                return False
            seen = meshview.proxies_eds(self.api, [*remove, *([add] if add else [])])
            if seen is not None:
                pending = [pid for pid, state, eps in seen
                           if state not in _SYNCED or eps & gone or (new and not new <= eps and eps & sibling)]
                if not pending:
                    return True
            if time.monotonic() > deadline:
                log.warning("endpoints not propagated within %.0fs (add %s, remove %s)", timeout,
                            add.name if add else "-", ",".join(p.name for p in remove) or "-")
                return False
            time.sleep(0.2)

    # ------------------------------------------------------------------ the orderly stop
    def withdraw(self, pods: Sequence[Pod]) -> None:
        """Step 1: take the instances out of the registry, keep everything running."""
        for pod in pods:
            with self.table.lock:
                pod.stopping = True  # the supervisor leaves its processes alone from now on
            if not pod.ports:
                continue
            if not self.launcher.withdraw(pod):
                # no agent, or it could not be asked (it was signalled): the runner withdraws it as well
                meshview.deregister(self.table, self.api, pod.instance_id)

    def stop_pods(self, pods: Sequence[Pod], progress: Progress = _quiet, *, withdraw_timeout: float | None = None,
                  remove: bool = True) -> None:
        """The orderly stop of replicas (see the module's docstring)."""
        pods = list(pods)
        if not pods:
            return
        names = ", ".join(p.name for p in pods)
        self.withdraw(pods)
        if any(p.ports for p in pods):
            ok = self.wait_endpoints(remove=[p for p in pods if p.ports], timeout=withdraw_timeout)
            progress(f"{names}: withdrawn; callers' proxies {'dropped' if ok else 'may still have'} the endpoint")
        meshview.sync_vip_rules(self.table, self.api, self.network, fetch=True)  # sidecar-less callers too
        # requests already on their way finish (bounded by the drain time): a sidecar's in-flight requests,
        # or the connections still open to a sidecar-less app (callers' proxies close them once idle)
        deadline = time.monotonic() + max(1.0, self.options.drain_seconds)
        while any(self.launcher.in_flight(p) for p in pods) and time.monotonic() < deadline \
                and not self.table.run.force:
            time.sleep(0.1)
        force = self.table.run.force
        self.launcher.stop_apps(pods, 1.0 if force else self.options.app_stop_seconds)
        progress(f"{names}: app stopped")
        self.launcher.stop_sidecars(pods, 1.0 if force else self.options.drain_seconds + 15.0)
        progress(f"{names}: sidecar drained and stopped")
        if remove:
            for p in pods:
                self.remove(p)

    def remove(self, pod: Pod) -> None:
        """Step 6: a stopped pod's namespace and sockets go (its dir stays for the logs)."""
        try:
            self.network.remove_pod(pod)
        except NetnsError as e:
            log.error("%s: %s", pod.name, e)
        self.launcher.forget(pod)
        self.table.remove(pod)

    # ------------------------------------------------------------------ what the control channel asks for
    def rollout_restart(self, workload: str, namespace: str | None, progress: Progress) -> list[str]:
        """Replace every replica of a workload, one at a time: new replica up (ready, registered, known to
        callers) → old one stopped in order. Returns the new pod names."""
        old = self.workload_pods(workload, namespace)
        progress(f"rollout restart {workload}: {len(old)} replica(s): {', '.join(p.name for p in old) or '-'}")
        made = []
        for i, pod in enumerate(old, 1):
            self._check()
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

    def scale(self, workload: str, namespace: str | None, replicas: int, progress: Progress,
              persist: bool = True) -> list[str]:
        """Start or orderly-stop replicas until `replicas` run; `persist`: record the count in the store's
        Workload too (`persist_replicas`), so the reconciler keeps it."""
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
                getattr(self._file_workload(workload, None), "namespace", "default")
            try:
                persist_replicas(self.api, workload, ns, replicas)
            except API_ERRORS as e:
                progress(f"warning: replicas not recorded in the store ({e}); the runner may scale back")
        return [p.name for p in self.workload_pods(workload, namespace)]

    def proxy_upgrade(self, workload: str, namespace: str | None, envoy: str | None,
                      progress: Progress) -> list[dict[str, Any]]:
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
            self._check()
            answer = self.launcher.hot_restart(pod, envoy)
            progress(f"{pod.name}: envoy epoch {answer.get('epoch')} (pid {answer.get('envoyPid')}) serves")
            out.append({"pod": pod.name, **answer})
        return out

