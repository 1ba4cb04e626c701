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
from typing import Any, Callable

from .pods import API_ERRORS, OperationError
from .protocols import ControlPlaneApi, Progress
from .table import PodTable, WorkloadKey

log = logging.getLogger("mizzen.local")

RECONCILE_SECONDS = 2.0
RETRY_SECONDS = 30.0
Scale = Callable[[str, str, int, Progress], Any]  # (workload, namespace, replicas, progress), not persisted


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


class Reconciler:
    """A thread that makes the pods match the store's Workloads, one pass every `interval`, under the
    runner's operation lock (`op_lock`: a pass never runs while an operation does)."""

    def __init__(self, table: PodTable, api: ControlPlaneApi, scale: Scale, op_lock: threading.Lock, *,
                 after: Callable[[], None] = lambda: None, interval: float = RECONCILE_SECONDS,
                 accept: Callable[[dict[str, Any]], bool] = lambda item: True):
        self.table = table
        self.api = api
        self.scale = scale
        self.op_lock = op_lock
        self.after = after
        self.interval = interval
        self.accept = accept  # which of the store's Workloads run here (a host of a multi-host mesh: its own)
        self.retry_at: dict[WorkloadKey, float] = {}
        self.thread = threading.Thread(target=self._loop, name="runner-reconcile", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        while not self.table.run.stop_requested:
            time.sleep(self.interval)
            try:
                self.once()
            except Exception:  # noqa: BLE001 - a bug must not stop the runner; say it and go on
                log.exception("reconcile failed")

    def once(self) -> list[tuple[WorkloadKey, int]]:
        """One pass; returns the changes made."""
        run = self.table.run
        if run.stop_requested or run.phase != "running":
            return []
        if not self.op_lock.acquire(blocking=False):
            return []  # an operation runs; the next pass sees its outcome
        done: list[tuple[WorkloadKey, int]] = []
        try:
            try:
                desired = desired_replicas([w for w in self.api.list_resources("Workload") if self.accept(w)])
            except API_ERRORS:
                return []
            running = self.table.running_counts()
            now = time.monotonic()
            for (ns, name), n in plan(desired, running):
                if run.stop_requested or self.retry_at.get((ns, name), 0.0) > now:
                    continue
                what = "deleted" if (ns, name) not in desired else f"replicas {running.get((ns, name), 0)} -> {n}"
                log.info("workload %s/%s changed in the store (%s)", ns, name, what)
                try:
                    self.scale(name, ns, n, lambda m: log.info("%s", m))
                    self.retry_at.pop((ns, name), None)
                    done.append(((ns, name), n))
                except OperationError as e:
                    log.error("workload %s/%s: %s; retrying in %.0fs", ns, name, e, RETRY_SECONDS)
                    self.retry_at[(ns, name)] = time.monotonic() + RETRY_SECONDS
            return done
        finally:
            self.op_lock.release()
            if done:
                self.after()
