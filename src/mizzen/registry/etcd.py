"""EtcdRegistry: the instances the mesh routes to, kept in etcd under leases.

Keys: `<prefix>registry/instances/<id>` holds `Instance.to_dict()` as JSON, attached to a lease of its own
(TTL `ttl`, default 30 s). The lease is kept alive by the instance's owner: every `upsert` of an unchanged
instance (the agent's heartbeat, whichever control plane receives it) refreshes the lease, so when a host
dies its instances vanish from every control plane once their TTL runs out, with no one deleting them. A
graceful withdrawal (`remove`) deletes the key at once and revokes the lease.

Every control plane keeps an in-memory copy, loaded at start and kept current by one watch on the prefix
(no polling); `version` is the etcd revision of the last change it saw. When etcd is unreachable, `list`
keeps answering from that copy and writes raise StoreUnavailable.
"""
from __future__ import annotations

import builtins

import json
import logging
import threading
from typing import Any, Callable

from ..etcd import messages as pb
from ..etcd.client import EtcdClient, EtcdError, prefix_end
from ..model.types import Instance
from ..store.base import StoreUnavailable

log = logging.getLogger(__name__)


class EtcdRegistry:
    """Registry on etcd. Thread-safe; a local change notifies subscribers in the writer's thread, another
    writer's change (or a lease expiry) in the watch thread."""

    def __init__(self, client: EtcdClient, *, prefix: str = "/mizzen/", ttl: float = 30.0,
                 timeout: float | None = None, own_client: bool = False):
        self.client = client
        self._own_client = own_client
        self.ttl = max(2, int(round(ttl)))  # etcd's lease TTLs are whole seconds (and have a floor)
        self.timeout = client.timeout if timeout is None else timeout
        self._base = (prefix.rstrip("/") + "/registry/instances/").encode()
        self._lock = threading.RLock()
        self._subscribers: list[Callable[[int], None]] = []
        self._instances: dict[str, Instance] = {}
        self._leases: dict[str, int] = {}
        self._local_revs: dict[str, int] = {}  # id -> revision of our own last write (the watch echoes it)
        self._version = 0
        self._seen = 0
        self._closed = False
        self._reload(notify=False)
        self._watch = client.watch(self._base, prefix_end(self._base), self._seen + 1, self._on_events,
                                   on_compacted=self._on_compacted, on_state=self._on_state,
                                   name="etcd-registry-watch")

    @classmethod
    def open(cls, endpoints: list[str], **kw: Any) -> "EtcdRegistry":
        timeout = kw.pop("timeout", 5.0)
        return cls(EtcdClient(endpoints, timeout=timeout), own_client=True, **kw)

    def _key(self, id: str) -> bytes:
        return self._base + id.encode()

    # ------------------------------------------------------------------ loading and watching

    def _reload(self, *, notify: bool = True) -> bool:
        try:
            seen, kvs = self.client.range_prefix(self._base, timeout=self.timeout)
        except EtcdError as e:
            raise StoreUnavailable(f"registry unavailable: {e}") from None
        instances: dict[str, Instance] = {}
        leases: dict[str, int] = {}
        for kv in kvs:
            id_ = kv.key[len(self._base):].decode()
            try:
                instances[id_] = Instance.from_dict(json.loads(kv.value))
            except (KeyError, ValueError, TypeError):
                log.error("etcd registry: dropping unreadable instance %s", id_)
                continue
            leases[id_] = int(kv.lease)
        changed = instances != self._instances
        self._instances, self._leases = instances, leases
        self._seen = max(self._seen, seen)
        if changed or not self._version:
            self._version = max(self._version, seen)
        if changed and notify:
            self._notify()
        return changed

    def _on_events(self, events: list[Any], header_revision: int) -> None:
        with self._lock:
            if self._closed:
                return
            changed = False
            for ev in events:
                rev = int(ev.kv.mod_revision)
                id_ = ev.kv.key[len(self._base):].decode()
                if rev <= self._seen:
                    continue
                mine = self._local_revs.get(id_)
                if mine is not None and rev <= mine:
                    if rev == mine:
                        del self._local_revs[id_]
                    continue  # our own write, already applied
                if ev.type == pb.EVENT_DELETE:
                    if self._instances.pop(id_, None) is not None:
                        changed = True
                        log.info("etcd registry: %s is gone (withdrawn elsewhere, or its lease expired)", id_)
                    self._leases.pop(id_, None)
                else:
                    try:
                        inst = Instance.from_dict(json.loads(ev.kv.value))
                    except (KeyError, ValueError, TypeError):
                        log.error("etcd registry: ignoring unreadable instance %s", id_)
                        continue
                    self._leases[id_] = int(ev.kv.lease)
                    if self._instances.get(id_) != inst:
                        self._instances[id_] = inst
                        changed = True
                if changed:
                    self._version = max(self._version, rev)
            if events:
                self._seen = max(self._seen, int(events[-1].kv.mod_revision))
            if changed:
                self._notify()

    def _on_compacted(self, compact_revision: int) -> int:
        with self._lock:
            self._reload()
            return self._seen + 1

    def _on_state(self, up: bool, reason: str) -> None:
        if up:
            log.info("etcd registry: watching again")
        else:
            log.warning("etcd registry: lost the etcd watch (%s); serving the last %d instances until it "
                        "returns", reason, len(self._instances))

    @property
    def available(self) -> bool:
        return self._watch.connected.is_set()

    # ------------------------------------------------------------------ reading

    @property
    def version(self) -> int:
        return self._version

    def refresh(self) -> bool:
        """Reload from etcd at once (the watch does this by itself; for callers that must be current now)."""
        with self._lock:
            return self._reload()

    def get(self, id: str) -> Instance | None:
        return self._instances.get(id)

    def list(self) -> builtins.list[Instance]:
        with self._lock:
            return [self._instances[k] for k in sorted(self._instances)]

    def subscribe(self, callback: Callable[[int], None]) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def _notify(self) -> None:
        for cb in list(self._subscribers):
            try:
                cb(self._version)
            except Exception:
                log.exception("registry subscriber failed at version %d", self._version)

    # ------------------------------------------------------------------ writing

    def _lease_alive(self, lease: int) -> bool:
        return lease != 0 and self.client.lease_keepalive([lease], timeout=self.timeout).get(lease, 0) > 0

    def upsert(self, instance: Instance) -> bool:
        """Register, change, or (unchanged) refresh the instance's lease. True if anything changed."""
        with self._lock:
            id_ = instance.id
            lease = self._leases.get(id_, 0)
            alive = lease != 0 and self._lease_alive(lease)
            if alive and self._instances.get(id_) == instance:
                return False  # a heartbeat: the lease is refreshed, nothing else changes
            if not alive:
                lease = self.client.lease_grant(self.ttl, timeout=self.timeout)
            body = json.dumps(instance.to_dict(), sort_keys=True).encode()
            try:
                resp = self.client.put(self._key(id_), body, lease=lease, retry_sent=True, timeout=self.timeout)
            except EtcdError as e:
                if "lease not found" not in str(e):
                    raise
                # the lease expired between the keep-alive and the put
                lease = self.client.lease_grant(self.ttl, timeout=self.timeout)
                resp = self.client.put(self._key(id_), body, lease=lease, retry_sent=True, timeout=self.timeout)
            rev = int(resp.header.revision)
            self._instances[id_] = instance
            self._leases[id_] = lease
            self._local_revs[id_] = rev
            self._version = max(self._version, rev)
            self._notify()
            return True

    def remove(self, id: str) -> bool:
        """Withdraw at once (delete and revoke its lease). True if it existed."""
        with self._lock:
            resp = self.client.delete(self._key(id), retry_sent=True, timeout=self.timeout)
            existed = int(resp.deleted) > 0 or id in self._instances
            lease = self._leases.pop(id, 0)
            if lease:
                try:
                    self.client.lease_revoke(lease, timeout=self.timeout)
                except (EtcdError, StoreUnavailable) as e:  # it expires by itself; nothing depends on it
                    log.info("etcd registry: revoking the lease of %s failed (%s); it will expire", id, e)
            if id not in self._instances:
                return existed
            rev = int(resp.header.revision)
            del self._instances[id]
            self._local_revs[id] = rev
            self._version = max(self._version, rev)
            self._notify()
            return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._watch.cancel()
        if self._own_client:
            self.client.close()

    def __enter__(self) -> EtcdRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
