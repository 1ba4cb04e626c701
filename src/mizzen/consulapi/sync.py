"""Services registered through the Consul API become mesh services (as consul-k8s's catalog sync makes
Kubernetes Services of Consul services), so meshed callers reach them by name through their sidecars.

For every service name registered through the Consul API (instances with source `consul-api`) in a namespace,
when no v1 Service or ServiceEntry of the config already defines `<name>.<namespace>.svc.cluster.local`, a
v1 Service `<name>` is kept in the store:
- labelled `consul.mizzen.dev/synced: "true"` (only such Services are ever changed or deleted here: one
  applied by hand wins and is left alone),
- selecting `app: <name>` — the label every Consul-API instance carries, and the one meshed replicas of the
  same service carry during a migration, so one Service spans both kinds of instances,
- one port per distinct port of its Consul instances, named by the registrations' Meta `protocol` (http,
  http2, grpc, tcp, …; Consul's and Istio's default is tcp: routing rules and retries need `protocol: http`),
  `<protocol>-<port>` when there are several.
It is deleted once no instance it selects remains (Consul-registered or meshed). Its endpoints are the
instances themselves (EDS), healthy while no check is critical.

`desired(instances, resources)` decides (pure); `ServiceSync` runs it after registry changes (debounced, in a
thread of its own) on the control plane, writing the store. Every control plane does so: the writes are
idempotent (an unchanged Service is no commit; a Service another control plane already deleted is fine).
"""
from __future__ import annotations

import logging
import re
import threading
from typing import Any, Iterable

from ..api import InvalidConfig, Resource, ResourceKey, from_dict
from ..api.base import CLUSTER_DOMAIN
from ..model.types import Instance
from ..store.base import NotFound, StoreUnavailable
from .agent import SERVICE_LABEL, SOURCE

log = logging.getLogger(__name__)

SYNCED_LABEL = "consul.mizzen.dev/synced"
PROTOCOL_META = "protocol"
DEFAULT_PROTOCOL = "tcp"
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_PROTOCOLS = ("http", "http2", "grpc", "grpc-web", "tcp", "tls", "https", "mongo", "mysql", "redis")


def _protocol(inst: Instance) -> str:
    p = inst.label_dict.get(PROTOCOL_META, "").strip().lower()
    return p if p in _PROTOCOLS else DEFAULT_PROTOCOL


def _defined_hosts(resources: Iterable[Resource]) -> set[str]:
    """Hosts that a v1 Service or ServiceEntry not made here defines."""
    out: set[str] = set()
    for r in resources:
        if r.kind == "Service" and r.metadata.labels.get(SYNCED_LABEL) != "true":
            out.add(f"{r.name}.{r.namespace}.{CLUSTER_DOMAIN}")
        elif r.kind == "ServiceEntry":
            for h in r.spec.hosts:
                out.add(h if "." in h else f"{h}.{r.namespace}.{CLUSTER_DOMAIN}")
    return out


def service_doc(name: str, namespace: str, ports: dict[int, str]) -> dict[str, Any]:
    """The v1 Service kept for a Consul service: `ports` maps port → protocol."""
    several = len(ports) > 1
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": {SYNCED_LABEL: "true"},
                         "annotations": {"consul.mizzen.dev/source": "services registered through the Consul API"}},
            "spec": {"selector": {"app": name},
                     "ports": [{"port": p, "targetPort": p, "name": f"{proto}-{p}" if several else proto}
                               for p, proto in sorted(ports.items())]}}


def desired(instances: Iterable[Instance], resources: Iterable[Resource]) -> tuple[list[Resource], list[ResourceKey]]:
    """(Services to apply, synced Services to delete). Only changes: a synced Service already as wanted is
    not returned."""
    resources = list(resources)
    insts = list(instances)
    synced = {(r.namespace, r.name): r for r in resources
              if r.kind == "Service" and r.metadata.labels.get(SYNCED_LABEL) == "true"}
    if not synced and not any(i.source == SOURCE for i in insts):
        return [], []  # the usual mesh, nothing registered through the Consul API: no per-host work on every change
    defined = _defined_hosts(resources)
    wanted: dict[tuple[str, str], dict[int, str]] = {}
    for inst in insts:
        if inst.source != SOURCE or SERVICE_LABEL not in inst.label_dict:
            continue
        name = inst.label_dict.get("app") or inst.workload
        if not _NAME.match(name):
            continue  # not a valid Service name (Consul allows more): reachable through the Consul API only
        if f"{name}.{inst.namespace}.{CLUSTER_DOMAIN}" in defined:
            continue
        ports = wanted.setdefault((inst.namespace, name), {})
        for p in inst.ports:
            ports.setdefault(p, _protocol(inst))
    # a synced Service stays while anything it selects remains (e.g. meshed replicas that replaced the
    # Consul-registered ones during a migration), with the ports it had
    for (ns, name), r in synced.items():
        if (ns, name) in wanted or f"{name}.{ns}.{CLUSTER_DOMAIN}" in defined:
            continue
        if any(i.namespace == ns and i.label_dict.get("app") == name for i in insts):
            wanted[(ns, name)] = {p.port: (p.name.split("-")[0] or DEFAULT_PROTOCOL) for p in r.spec.ports}
    apply: list[Resource] = []
    for (ns, name), ports in sorted(wanted.items()):
        if not ports:
            continue  # a registration without a port has nothing to route to
        res = from_dict(service_doc(name, ns, ports))
        old = synced.get((ns, name))
        if old is None or old.to_dict()["spec"] != res.to_dict()["spec"] \
                or old.metadata.labels != res.metadata.labels:
            apply.append(res)
    delete = [ResourceKey("Service", ns, name) for (ns, name) in sorted(synced)
              if (ns, name) not in wanted or not wanted[(ns, name)]]
    return apply, delete


class ServiceSync:
    """Runs `desired` after registry and store changes (debounced by `quiet` seconds) and writes the result.
    Its own thread: store writes may be network round trips (etcd). A failed write is retried."""

    def __init__(self, store: Any, registry: Any, *, quiet: float = 0.2, retry: float = 2.0):
        self.store, self.registry = store, registry
        self.quiet, self.retry = quiet, retry
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="consul-service-sync", daemon=True)
        self._unsubscribe: list[Any] = []
        self._refused: set[tuple[str, str]] = set()

    def start(self) -> None:
        self._unsubscribe = [self.registry.subscribe(lambda _v: self._wake.set()),
                             self.store.subscribe(lambda _r: self._wake.set())]
        self._wake.set()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for u in self._unsubscribe:
            u()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            if self._stop.wait(self.quiet):
                return
            self._wake.clear()
            try:
                self.once()
            except StoreUnavailable as e:
                log.warning("consul service sync: %s; retrying in %.0f s", e, self.retry)
                self._stop.wait(self.retry)
                self._wake.set()
            except Exception:  # a bug must not end syncing for good
                log.exception("consul service sync failed; retrying")
                self._stop.wait(self.retry)
                self._wake.set()

    def once(self) -> tuple[list[Resource], list[ResourceKey]]:
        apply, delete = desired(self.registry.list(), self.store.list())
        if apply:
            try:
                self.store.apply(apply)
                log.info("consul service sync: %s", ", ".join(f"Service {r.namespace}/{r.name}" for r in apply))
            except InvalidConfig as e:  # e.g. a Router owning the host: say so once, leave it
                key = tuple(sorted((r.namespace, r.name) for r in apply))
                if key not in self._refused:
                    log.warning("consul service sync: the store refused %s: %s", key, e)
                    self._refused.add(key)  # type: ignore[arg-type]
        for k in delete:
            try:
                self.store.delete([k])
                log.info("consul service sync: removed Service %s/%s (nothing left that it selects)",
                         k.namespace, k.name)
            except NotFound:
                pass  # another control plane was first
        return apply, delete
