"""Workloads changed on a running mesh: the runner follows the control plane's store.

`mizzen up` starts the Workloads of the mesh file. Afterwards the store is the source of truth, as a
Kubernetes Deployment's spec is: every `RECONCILE_SECONDS` the runner reads the Workloads and
- starts the replicas of a Workload applied later (`mizzen apply -f new-workload.yaml`),
- scales a Workload whose `replicas` changed (new replicas ready first; removed ones stopped in order),
- stops, in order, every replica of a Workload deleted from the store.
A change of a Workload's template (command, env, ports, sidecar, ...) takes effect on the next
`mizzen rollout restart`, which makes new replicas from the store's Workload. `mizzen scale` writes the new
count to the store, so the two agree.

Each pass is an operation like those of the control channel: it runs only when no other one does (it shares
their lock), and a Workload whose change failed (e.g. a replica that never became ready) is retried after
`RETRY_SECONDS`, not in a loop.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import yaml

from .control import OperationError
from .pods import API_ERRORS

if TYPE_CHECKING:
    from ..cli.client import ApiClient
    from .runner import Runner

log = logging.getLogger("mizzen.local")

RECONCILE_SECONDS = 2.0
RETRY_SECONDS = 30.0
WorkloadKey = tuple[str, str]  # (namespace, name)


def desired_replicas(items: list[dict[str, Any]]) -> dict[WorkloadKey, int]:
    """(namespace, name) -> spec.replicas of the store's Workloads (as the REST API lists them)."""
    out: dict[WorkloadKey, int] = {}
    for d in items:
        meta, spec = d.get("metadata") or {}, d.get("spec") or {}
        out[(str(meta.get("namespace") or "default"), str(meta.get("name")))] = int(spec.get("replicas", 1))
    return out


def plan(desired: dict[WorkloadKey, int], running: dict[WorkloadKey, int]) -> list[tuple[WorkloadKey, int]]:
    """(workload, replicas wanted) for every workload whose running count differs (0 = deleted)."""
    changes = [(k, n) for k, n in desired.items() if running.get(k, 0) != n]
    changes += [(k, 0) for k, n in running.items() if k not in desired and n]
    return sorted(changes)


def persist_replicas(api: "ApiClient", workload: str, namespace: str, replicas: int) -> None:
    """Write a Workload's new replica count to the store (what `mizzen scale` did at runtime)."""
    d = api.get_resource("Workload", namespace, workload)
    d.setdefault("spec", {})["replicas"] = replicas
    meta = d.get("metadata") or {}
    d["metadata"] = {k: v for k, v in meta.items() if k in ("name", "namespace", "labels", "annotations")}
    api.apply([(f"<mizzen scale {workload}>", yaml.safe_dump(d, sort_keys=False))])


class Reconciler:
    def __init__(self, runner: "Runner", interval: float = RECONCILE_SECONDS):
        self.runner = runner
        self.interval = interval
        self.retry_at: dict[WorkloadKey, float] = {}
        self.thread = threading.Thread(target=self._loop, name="runner-reconcile", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        while not self.runner.stop_requested:
            time.sleep(self.interval)
            try:
                self.once()
            except Exception:  # noqa: BLE001 - a bug must not stop the runner; say it and go on
                log.exception("reconcile failed")

    def once(self) -> list[tuple[WorkloadKey, int]]:
        """One pass; returns the changes made."""
        r = self.runner
        if r.stop_requested or r.phase != "running" or r.control is None:
            return []
        lock = r.control.server.op_lock
        if not lock.acquire(blocking=False):
            return []  # an operation runs; the next pass sees its outcome
        done: list[tuple[WorkloadKey, int]] = []
        try:
            try:
                desired = desired_replicas(r.api.list_resources("Workload"))
            except API_ERRORS:
                return []
            with r.lock:
                running: dict[WorkloadKey, int] = {}
                for p in r.pods:
                    if not p.stopping:
                        running[(p.namespace, p.workload)] = running.get((p.namespace, p.workload), 0) + 1
            now = time.monotonic()
            for (ns, name), n in plan(desired, running):
                if r.stop_requested or self.retry_at.get((ns, name), 0.0) > now:
                    continue
                what = "deleted" if (ns, name) not in desired else f"replicas {running.get((ns, name), 0)} -> {n}"
                log.info("workload %s/%s changed in the store (%s)", ns, name, what)
                try:
                    r.scale(name, ns, n, lambda m: log.info("%s", m), persist=False)
                    self.retry_at.pop((ns, name), None)
                    done.append(((ns, name), n))
                except OperationError as e:
                    log.error("workload %s/%s: %s; retrying in %.0fs", ns, name, e, RETRY_SECONDS)
                    self.retry_at[(ns, name)] = time.monotonic() + RETRY_SECONDS
            return done
        finally:
            lock.release()
            if done:
                with r.lock:
                    r.write_status()
