"""The Consul agent behind Mizzen's Consul API: services and checks registered through it, their health,
and the Consul-shaped views (health, catalog) of every instance in the registry.

A service registered through the API becomes ONE registry instance (source "consul-api"), however many tags,
meta entries or interfaces it carries: id `<namespace>.consul-<ServiceID>`, workload = service name,
labels = `app: <name>` + its Meta + `consul.mizzen.dev/service` (its definition as JSON: ID, Name, Tags,
Meta, Address, Port) and `consul.mizzen.dev/checks` (each check's id, name, type and status), so that every
control plane on the same registry answers for it. It is healthy (in the mesh's EDS) while no check is
critical and it is not in maintenance. Instances registered by Mizzen's own agents appear as Consul
services named by their `app` label (or workload), with one check from their health.

Checks run in one thread: TTL (expires to critical unless passed/warned/failed in time), HTTP (GET; 2xx
passing, 429 warning, else critical), TCP (connect). `DeregisterCriticalServiceAfter` deregisters a service
whose check stayed critical that long. Every `refresh` seconds the agent re-registers its instances, which
with the etcd registry keeps their leases alive: if this control plane dies, they expire.
"""
from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable

from ..api.duration import duration_seconds
from ..model.types import Instance, labels_tuple
from ..registry.base import Registry

log = logging.getLogger(__name__)

SERVICE_LABEL = "consul.mizzen.dev/service"
CHECKS_LABEL = "consul.mizzen.dev/checks"
SOURCE = "consul-api"
STATUSES = ("passing", "warning", "critical")


class BadRequest(ValueError):
    pass


def parse_duration(v: Any, what: str) -> float | None:
    """Go duration ("10s", "1m30s", "500ms": the one parser, `api.duration`) or a number of seconds."""
    if v in (None, "", 0):
        return None
    if isinstance(v, (int, float)):
        return float(v) / 1e9 if v > 1e6 else float(v)  # Consul's JSON may carry nanoseconds
    try:
        secs = duration_seconds(str(v).strip())
    except ValueError:
        raise BadRequest(f"{what}: {v!r} is not a duration (e.g. 10s, 1m, 500ms)") from None
    if secs < 0:
        raise BadRequest(f"{what}: {v!r} must not be negative")
    return secs


def fields(d: Any, what: str) -> dict[str, Any]:
    """Consul reads its JSON keys case-insensitively (clients send `Name`, `name`, `deregister_critical_...`):
    the object with keys folded to lower case without underscores (values untouched)."""
    if not isinstance(d, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return {str(k).lower().replace("_", ""): v for k, v in d.items()}


@dataclass
class Check:
    id: str
    name: str
    service_id: str
    kind: str  # ttl | http | tcp | maintenance
    status: str = "critical"
    output: str = ""
    notes: str = ""
    ttl: float | None = None
    target: str = ""  # URL or host:port
    interval: float = 10.0
    timeout: float = 10.0
    deregister_after: float | None = None
    updated: float = field(default_factory=time.monotonic)
    critical_since: float | None = None
    next_run: float = 0.0

    def set(self, status: str, output: str, now: float) -> bool:
        changed = status != self.status
        self.status, self.output, self.updated = status, output, now
        if status == "critical":
            self.critical_since = self.critical_since if self.critical_since is not None and not changed else now
        else:
            self.critical_since = None
        return changed

    def to_consul(self, node: str, service_name: str) -> dict[str, Any]:
        return {"Node": node, "CheckID": self.id, "Name": self.name, "Status": self.status, "Notes": self.notes,
                "Output": self.output, "ServiceID": self.service_id, "ServiceName": service_name,
                "ServiceTags": [], "Type": self.kind if self.kind != "maintenance" else "",
                "CreateIndex": 1, "ModifyIndex": 1}


@dataclass
class Service:
    id: str
    name: str
    namespace: str = "default"
    tags: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    address: str = ""
    port: int = 0
    maintenance: str | None = None

    def definition(self) -> dict[str, Any]:
        return {"ID": self.id, "Service": self.name, "Tags": self.tags, "Meta": self.meta, "Address": self.address,
                "Port": self.port}


def _check_from(raw: dict[str, Any], service_id: str, default_id: str, default_name: str) -> Check:
    d = fields(raw, "a check")
    cid = str(d.get("checkid") or d.get("id") or default_id)
    name = str(d.get("name") or default_name)
    ttl = parse_duration(d.get("ttl"), f"check {cid} TTL")
    interval = parse_duration(d.get("interval"), f"check {cid} Interval") or 10.0
    timeout = parse_duration(d.get("timeout"), f"check {cid} Timeout") or min(10.0, interval)
    dereg = parse_duration(d.get("deregistercriticalserviceafter"), f"check {cid} DeregisterCriticalServiceAfter")
    if ttl is not None:
        kind, target = "ttl", ""
    elif d.get("http"):
        kind, target = "http", str(d["http"])
        if urllib.parse.urlsplit(target).scheme not in ("http", "https"):
            raise BadRequest(f"check {cid}: HTTP must be an http(s) URL")
    elif d.get("tcp"):
        kind, target = "tcp", str(d["tcp"])
        if ":" not in target:
            raise BadRequest(f"check {cid}: TCP must be host:port")
    else:
        raise BadRequest(f"check {cid}: only TTL, HTTP and TCP checks are supported")
    status = str(d.get("status") or "critical")
    if status not in STATUSES:
        raise BadRequest(f"check {cid}: Status must be one of {', '.join(STATUSES)}")
    return Check(cid, name, service_id, kind, status=status, notes=str(d.get("notes") or ""), ttl=ttl,
                 target=target, interval=interval, timeout=timeout, deregister_after=dereg,
                 critical_since=time.monotonic() if status == "critical" else None)


class ConsulAgent:
    """Thread-safe. `registry` calls may block (etcd): callers in an event loop use a worker thread."""

    def __init__(self, registry: Registry, *, node: str = "mizzen", datacenter: str = "dc1",
                 default_address: str = "127.0.0.1", refresh: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.registry = registry
        self.node, self.datacenter, self.default_address = node, datacenter, default_address
        self.refresh = refresh
        self.clock = clock
        self._lock = threading.RLock()
        self.services: dict[str, Service] = {}
        self.checks: dict[str, Check] = {}
        self.node_maintenance: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_refresh = 0.0

    # ------------------------------------------------------------------ registration

    def instance_id(self, svc: Service) -> str:
        return f"{svc.namespace}.consul-{svc.id}"

    def register_service(self, body: dict[str, Any], *, replace_checks: bool = False) -> Service:
        body = fields(body, "a service registration")
        if not body.get("name"):
            raise BadRequest("a service registration needs a Name")
        name = str(body["name"])
        sid = str(body.get("id") or name)
        tags = body.get("tags") or []
        meta = body.get("meta") or {}
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise BadRequest(f"service {sid}: Tags must be a list of strings")
        if not isinstance(meta, dict):
            raise BadRequest(f"service {sid}: Meta must be an object")
        try:
            port = int(body.get("port") or 0)
        except (TypeError, ValueError):
            raise BadRequest(f"service {sid}: Port must be a number") from None
        svc = Service(sid, name, str(body.get("namespace") or "default"), list(tags),
                      {str(k): str(v) for k, v in meta.items()}, str(body.get("address") or ""), port)
        defs = ([body["check"]] if body.get("check") else []) + list(body.get("checks") or [])
        checks = [_check_from(d, sid, f"service:{sid}" + (f":{i + 1}" if len(defs) > 1 else ""),
                              f"Service '{name}' check") for i, d in enumerate(defs)]
        with self._lock:
            old = self.services.get(sid)
            if old is not None:
                svc.maintenance = old.maintenance
            self.services[sid] = svc
            keep = {c.id for c in checks}
            for cid, c in list(self.checks.items()):
                if c.service_id == sid and (replace_checks or cid in keep) and c.kind != "maintenance":
                    del self.checks[cid]
            for c in checks:
                self.checks[c.id] = c
        self.sync(sid)
        return svc

    def deregister_service(self, sid: str) -> bool:
        with self._lock:
            svc = self.services.pop(sid, None)
            if svc is None:
                return False
            for cid in [cid for cid, c in self.checks.items() if c.service_id == sid]:
                del self.checks[cid]
        self.registry.remove(self.instance_id(svc))
        return True

    def register_check(self, raw: dict[str, Any]) -> Check:
        body = fields(raw, "a check registration")
        sid = str(body.get("serviceid") or "")
        with self._lock:
            if sid and sid not in self.services:
                raise BadRequest(f"ServiceID {sid!r} is not registered with this agent")
        c = _check_from(raw, sid, str(body.get("name") or ""), str(body.get("name") or ""))
        if not c.id:
            raise BadRequest("a check needs a Name or CheckID")
        with self._lock:
            self.checks[c.id] = c
        if sid:
            self.sync(sid)
        return c

    def deregister_check(self, cid: str) -> bool:
        with self._lock:
            c = self.checks.pop(cid, None)
        if c is None:
            return False
        if c.service_id:
            self.sync(c.service_id)
        return True

    def update_check(self, cid: str, status: str, output: str = "") -> None:
        """TTL check update (pass/warn/fail, or PUT /v1/agent/check/update)."""
        if status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
        with self._lock:
            c = self.checks.get(cid)
            if c is None:
                raise KeyError(cid)
            if c.kind != "ttl":
                raise BadRequest(f"check {cid} is not a TTL check")
            changed = c.set(status, output, self.clock())
        if changed and c.service_id:
            self.sync(c.service_id)

    def set_service_maintenance(self, sid: str, enable: bool, reason: str = "") -> None:
        with self._lock:
            svc = self.services.get(sid)
            if svc is None:
                raise KeyError(sid)
            svc.maintenance = (reason or "Maintenance mode is enabled for this service") if enable else None
        self.sync(sid)

    def set_node_maintenance(self, enable: bool, reason: str = "") -> None:
        with self._lock:
            self.node_maintenance = (reason or "Maintenance mode is enabled for this node") if enable else None
            sids = list(self.services)
        for sid in sids:
            self.sync(sid)

    # ------------------------------------------------------------------ health and the registry

    def service_checks(self, sid: str) -> list[Check]:
        with self._lock:
            svc = self.services.get(sid)
            out = [c for c in self.checks.values() if c.service_id == sid]
            if svc is not None and svc.maintenance:
                out.append(Check(f"_service_maintenance:{sid}", "Service Maintenance Mode", sid, "maintenance",
                                 "critical", notes=svc.maintenance))
            if self.node_maintenance:
                out.append(Check("_node_maintenance", "Node Maintenance Mode", "", "maintenance", "critical",
                                 notes=self.node_maintenance))
            return out

    def instance_of(self, svc: Service) -> Instance:
        checks = self.service_checks(svc.id)
        labels = {**svc.meta, "app": svc.name, SERVICE_LABEL: json.dumps(svc.definition(), sort_keys=True,
                                                                          separators=(",", ":")),
                  CHECKS_LABEL: json.dumps([{"CheckID": c.id, "Name": c.name, "Status": c.status, "Type": c.kind,
                                             "ServiceID": c.service_id} for c in checks],
                                           sort_keys=True, separators=(",", ":"))}
        return Instance(id=self.instance_id(svc), namespace=svc.namespace, workload=svc.name,
                        address=svc.address or self.default_address, ports=(svc.port,) if svc.port else (),
                        labels=labels_tuple(labels), healthy=all(c.status != "critical" for c in checks),
                        sidecar=False, source=SOURCE)

    def sync(self, sid: str) -> None:
        with self._lock:
            svc = self.services.get(sid)
            inst = self.instance_of(svc) if svc is not None else None
        if inst is not None:
            self.registry.upsert(inst)

    # ------------------------------------------------------------------ the check runner

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="consul-checks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.tick()
            except Exception:
                log.exception("consul agent: running checks failed (the registry may be unavailable); retrying")

    def tick(self) -> None:
        now = self.clock()
        dirty: set[str] = set()
        with self._lock:
            due = [c for c in self.checks.values() if c.kind in ("http", "tcp") and c.next_run <= now]
            for c in self.checks.values():
                if c.kind == "ttl" and c.ttl is not None and c.status != "critical" and now - c.updated > c.ttl:
                    c.set("critical", f"TTL expired (no update for {c.ttl:g}s)", now)
                    dirty.add(c.service_id)
        for c in due:  # outside the lock: probes take time
            status, output = _probe(c)
            with self._lock:
                c.next_run = self.clock() + c.interval
                if c.id in self.checks and c.set(status, output, self.clock()):
                    dirty.add(c.service_id)
        now = self.clock()
        gone: list[str] = []
        with self._lock:
            for c in self.checks.values():
                if (c.deregister_after is not None and c.status == "critical" and c.critical_since is not None
                        and now - c.critical_since >= c.deregister_after and c.service_id in self.services):
                    gone.append(c.service_id)
        for sid in set(gone):
            log.info("consul agent: deregistering %s: a check was critical for longer than "
                     "DeregisterCriticalServiceAfter", sid)
            self.deregister_service(sid)
            dirty.discard(sid)
        if now - self._last_refresh >= self.refresh:
            self._last_refresh = now
            with self._lock:
                dirty |= set(self.services)
        for sid in dirty:
            if sid:
                self.sync(sid)


def _probe(c: Check) -> tuple[str, str]:
    if c.kind == "tcp":
        host, _, port = c.target.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=c.timeout):
                return "passing", f"TCP connect {c.target}: Success"
        except (OSError, ValueError) as e:
            return "critical", f"dial tcp {c.target}: {e}"
    u = urllib.parse.urlsplit(c.target)
    conn_cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    try:
        conn = conn_cls(u.hostname or "127.0.0.1", u.port, timeout=c.timeout)
        try:
            conn.request("GET", (u.path or "/") + (f"?{u.query}" if u.query else ""))
            resp = conn.getresponse()
            body = resp.read(4096).decode(errors="replace")
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as e:
        return "critical", f"Get {c.target}: {e}"
    out = f"HTTP GET {c.target}: {resp.status} {resp.reason} Output: {body}"
    if 200 <= resp.status < 300:
        return "passing", out
    return ("warning" if resp.status == 429 else "critical"), out
