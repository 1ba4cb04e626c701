"""EtcdStore: the ConfigStore on an etcd v3 cluster, shared by every control plane that names it.

Keys under `<prefix>config/`: `res/<kind>/<namespace>/<name>` holds a resource's canonical JSON; `rev`
is written by every commit (its value names the commit, `{"txn": <uuid>}`), so its mod_revision is the
store's revision. Revisions are etcd revisions: a resource's revision is its key's mod_revision.

- Reads are served from an in-memory copy, loaded at start (a control plane that cannot load the store
  fails to start, it never serves an empty config) and kept current by one etcd watch on the prefix (no
  polling). When etcd is unreachable, readers keep the last state; the watch resumes from the revision
  after the last event it delivered, so no change is missed.
- Every apply or delete is one etcd transaction: `if mod_revision(rev) == <the revision the plan was made
  against> then <puts/deletes, put rev> else <read rev>`. With `if_revision`, a failed comparison is a
  RevisionConflict; without, the store reloads and plans again.
- All-or-nothing: one transaction. etcd caps a transaction's operations (--max-txn-ops, default 128) and
  size (--max-request-bytes, default 1.5 MiB); an apply over the cluster's caps is refused as a whole
  with an error naming the cap (`mizzen etcd up` sets 4096 operations and 8 MiB). Nothing is split.
- A write whose answer is lost (member killed, leader change) is retried as the same transaction, which
  can only commit once; a failed comparison then checks whether `rev` names our commit. If etcd cannot
  be asked within the deadline, StoreUnavailable(outcome_unknown=True) is raised, never a guess.
"""
from __future__ import annotations

import builtins

import json
import logging
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable

from ..api import InvalidConfig, Issue, Resource, ResourceKey, from_dict
from ..etcd import messages as pb
from ..etcd.client import EtcdClient, EtcdCompacted, EtcdError, EtcdUnavailable, prefix_end
from .base import Action, ApplyResult, Change, HistoryCompacted, NotFound, RevisionConflict, StoreUnavailable

log = logging.getLogger(__name__)

LOG_SIZE = 1000  # changes kept in memory for changes_since (older ones are read from etcd's history)


def _canonical(r: Resource) -> str:
    return json.dumps(r.to_dict(), sort_keys=True, separators=(",", ":"))


def _sort_key(k: ResourceKey) -> tuple[str, str, str]:
    return (k.kind, k.namespace, k.name)


class EtcdStore:
    """ConfigStore on etcd. Thread-safe; a local commit notifies subscribers in the writer's thread,
    another writer's commit in the watch thread."""

    def __init__(self, client: EtcdClient, *, prefix: str = "/mizzen/", timeout: float | None = None,
                 own_client: bool = False):
        self.client = client
        self._own_client = own_client
        self.timeout = client.timeout if timeout is None else timeout
        self._base = (prefix.rstrip("/") + "/config/").encode()
        self._rev_key = self._base + b"rev"
        self._res = self._base + b"res/"
        self._lock = threading.RLock()
        self._subscribers: list[Callable[[int], None]] = []
        self._cache: dict[ResourceKey, Resource] = {}
        self._json: dict[ResourceKey, str] = {}
        self._revision = 0  # mod_revision of `rev`: the last store commit
        self._seen = 0  # etcd revision up to which the cache is current
        self._closed = False
        self.reloads = 0  # full reloads after the first load (a lost race, a compacted watch, refresh())
        # the changes this copy applied (its own commits and the watch's events), so `changes_since` needs no
        # etcd round trip for the recent past: every change with a revision above _log_from is in _log
        self._log: deque[Change] = deque()
        self._log_from = 0
        self._reload(notify=False)
        self._watch = client.watch(self._base, prefix_end(self._base), self._seen + 1, self._on_events,
                                   on_compacted=self._on_compacted, on_state=self._on_state,
                                   name="etcd-store-watch")

    @classmethod
    def open(cls, endpoints: list[str], **kw: Any) -> "EtcdStore":
        timeout = kw.pop("timeout", 5.0)
        return cls(EtcdClient(endpoints, timeout=timeout), own_client=True, **kw)

    # ------------------------------------------------------------------ loading and watching

    def _key(self, k: ResourceKey) -> bytes:
        return self._res + f"{k.kind}/{k.namespace}/{k.name}".encode()

    def _parse_key(self, key: bytes) -> ResourceKey | None:
        if not key.startswith(self._res):
            return None
        parts = key[len(self._res):].decode().split("/")
        return ResourceKey(*parts) if len(parts) == 3 else None

    def _decode(self, key: ResourceKey, kv: Any) -> Resource:
        try:
            return from_dict(json.loads(kv.value), revision=int(kv.mod_revision))
        except (InvalidConfig, ValueError) as e:
            detail = "; ".join(str(i) for i in e.issues) if isinstance(e, InvalidConfig) else str(e)
            raise InvalidConfig([Issue(f"stored resource no longer loads: {detail}", kv.key.decode(), None,
                                       key.kind, key.namespace, key.name)]) from None

    def _reload(self, *, notify: bool = True) -> bool:
        """Read the whole store at one revision; notify if it differs from the cache. Caller holds the lock
        (or is the constructor)."""
        try:
            seen, kvs = self.client.range_prefix(self._base, timeout=self.timeout)
        except EtcdError as e:
            raise StoreUnavailable(f"store unavailable: {e}") from None
        cache: dict[ResourceKey, Resource] = {}
        texts: dict[ResourceKey, str] = {}
        revision = 0
        issues: list[Issue] = []
        for kv in kvs:
            if kv.key == self._rev_key:
                revision = int(kv.mod_revision)
                continue
            key = self._parse_key(kv.key)
            if key is None:
                continue
            try:
                res = self._decode(key, kv)
            except InvalidConfig as e:  # one bad document must not keep the control plane from starting
                issues.extend(e.issues)
                continue
            cache[key] = res
            texts[key] = _canonical(res)
        if issues != getattr(self, "load_issues", None):
            for i in issues:
                log.error("%s — left out of the config; re-apply a fixed version or delete it", i)
        self.load_issues = issues
        changed = texts != self._json or revision != self._revision
        if notify:
            self.reloads += 1
        self._cache, self._json, self._revision = cache, texts, revision
        self._seen = max(self._seen, seen)
        self._log.clear()  # what changed between the old copy and this one is not known key by key
        self._log_from = revision
        if changed and notify:
            self._notify(self._revision)
        return changed

    def _on_events(self, events: list[Any], header_revision: int) -> None:
        with self._lock:
            if self._closed:
                return
            changed = False
            for ev in events:
                rev = int(ev.kv.mod_revision)
                if rev <= self._seen:
                    continue  # our own commit (already applied) or already loaded
                if ev.kv.key == self._rev_key:
                    self._revision = max(self._revision, rev)
                    changed = True
                    continue
                key = self._parse_key(ev.kv.key)
                if key is None:
                    continue
                self._logged(Change(rev, key, "delete" if ev.type == pb.EVENT_DELETE else "put"))
                if ev.type == pb.EVENT_DELETE:
                    self._cache.pop(key, None)
                    self._json.pop(key, None)
                else:
                    try:
                        res = self._decode(key, ev.kv)
                    except InvalidConfig as e:
                        log.error("etcd store: ignoring %s: %s", key, e)
                        continue
                    self._cache[key] = res
                    self._json[key] = _canonical(res)
                self._revision = max(self._revision, rev)
                changed = True
            if events:
                self._seen = max(self._seen, int(events[-1].kv.mod_revision))
            if changed:
                self._notify(self._revision)

    def _on_compacted(self, compact_revision: int) -> int:
        with self._lock:
            self._reload()
            return self._seen + 1

    def _on_state(self, up: bool, reason: str) -> None:
        if up:
            log.info("etcd store: watching %s again", self.client.endpoints)
        else:
            log.warning("etcd store: lost the etcd watch (%s); serving the last state (revision %d) until it "
                        "returns", reason, self._revision)

    @property
    def available(self) -> bool:
        """The watch is connected (the cache follows etcd); False while etcd is unreachable."""
        return self._watch.connected.is_set()

    def wait_synced(self, revision: int, timeout: float = 5.0) -> bool:
        """Wait until the cache has caught up with etcd revision `revision` (another writer's commit)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._seen >= revision:
                return True
            time.sleep(0.01)
        return self._seen >= revision

    # ------------------------------------------------------------------ reading

    @property
    def revision(self) -> int:
        return self._revision

    def refresh(self) -> bool:
        """Catch up with etcd at once (a linearizable read of the revision key; a reload if it moved).
        Not needed for change notification, which the watch does."""
        with self._lock:
            try:
                kv = self.client.get(self._rev_key, timeout=self.timeout)
            except EtcdError as e:
                raise StoreUnavailable(f"store unavailable: {e}") from None
            if (int(kv.mod_revision) if kv else 0) == self._revision:
                return False
            return self._reload()

    def get(self, key: ResourceKey) -> Resource | None:
        return self._cache.get(key)

    def list(self, kind: str | None = None, namespace: str | None = None) -> builtins.list[Resource]:
        with self._lock:
            items = [r for k, r in self._cache.items()
                     if (kind is None or k.kind == kind) and (namespace is None or k.namespace == namespace)]
        items.sort(key=lambda r: _sort_key(r.key))
        return items

    def _logged(self, change: Change) -> None:
        self._log.append(change)
        while len(self._log) > LOG_SIZE:
            self._log_from = self._log.popleft().revision

    def changes_since(self, revision: int) -> builtins.list[Change]:
        """From this copy's own log of changes when it reaches back that far (no etcd round trip), else from
        etcd's history (a watch from revision+1 up to the current store revision)."""
        with self._lock:
            if revision >= self._log_from:
                return sorted((c for c in self._log if c.revision > revision),
                              key=lambda c: (c.revision, *_sort_key(c.key)))
        kv = self.client.get(self._rev_key, timeout=self.timeout)
        current = int(kv.mod_revision) if kv else 0
        if revision >= current:
            return []
        try:
            events = self.client.history(self._base, prefix_end(self._base), revision + 1,
                                         lambda ev: ev.kv.key == self._rev_key and ev.kv.mod_revision >= current,
                                         timeout=self.timeout)
        except EtcdCompacted as e:
            raise HistoryCompacted(revision, e.compact_revision) from None
        out = []
        for ev in events:
            key = self._parse_key(ev.kv.key)
            if key is not None:
                out.append(Change(int(ev.kv.mod_revision), key, "delete" if ev.type == pb.EVENT_DELETE else "put"))
        out.sort(key=lambda c: (c.revision, *_sort_key(c.key)))
        return out

    # ------------------------------------------------------------------ writing

    def subscribe(self, callback: Callable[[int], None]) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def _notify(self, revision: int) -> None:
        for cb in list(self._subscribers):
            try:
                cb(revision)
            except Exception:  # a subscriber's bug must not undo or hide a committed write
                log.exception("config store subscriber failed at revision %d", revision)

    def _commit(self, writes: builtins.list[tuple[ResourceKey, str | None]], guard: int) -> tuple[bool, int]:
        """One transaction over `guard`: (True, new revision) or (False, the revision found instead).
        Retries the same transaction while its outcome is unknown (it can commit at most once)."""
        txid = uuid.uuid4().hex
        ops = [pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=self._key(k))) if text is None
               else pb.RequestOp(request_put=pb.PutRequest(key=self._key(k), value=text.encode()))
               for k, text in writes]
        ops.append(pb.RequestOp(request_put=pb.PutRequest(key=self._rev_key, value=json.dumps({"txn": txid}).encode())))
        compare = [pb.Compare(result=pb.CMP_EQUAL, target=pb.TARGET_MOD, key=self._rev_key, mod_revision=guard)]
        failure = [pb.RequestOp(request_range=pb.RangeRequest(key=self._rev_key))]
        deadline = time.monotonic() + self.timeout
        unknown: EtcdUnavailable | None = None
        while True:
            try:
                resp = self.client.txn(compare, ops, failure, timeout=max(0.1, deadline - time.monotonic()))
            except EtcdError as e:
                if unknown is None and ("too many operations" in str(e) or "too large" in str(e)):
                    raise InvalidConfig([Issue(
                        f"this change needs {len(ops)} operations in one etcd transaction and the cluster refused "
                        f"it ({e}); raise the etcd members' --max-txn-ops / --max-request-bytes (mizzen etcd up "
                        f"uses 4096 and 8 MiB) or apply in smaller parts; nothing was changed", "<apply>")]) from None
                raise
            except EtcdUnavailable as e:
                if e.outcome_unknown:
                    unknown = e
                elif unknown is None:
                    raise  # certainly not written, and the client already tried every member: fail fast
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                if unknown is not None:
                    raise StoreUnavailable(f"{unknown} (revision {guard}; re-read the store before retrying)",
                                           outcome_unknown=True) from None
                raise
            if resp.succeeded:
                return True, int(resp.header.revision)
            kvs = resp.responses[0].response_range.kvs if resp.responses else []
            actual = int(kvs[0].mod_revision) if kvs else 0
            if kvs and unknown is not None:
                if json.loads(kvs[0].value).get("txn") == txid:
                    return True, actual  # an attempt whose answer was lost did commit
                # someone else wrote after guard: was the first commit after guard ours?
                try:
                    first = self.client.history(self._rev_key, b"", guard + 1, lambda ev: True,
                                                timeout=max(0.5, deadline - time.monotonic()))
                except (EtcdUnavailable, EtcdCompacted) as e:
                    raise StoreUnavailable(f"store unavailable: cannot tell whether the write was applied ({e})",
                                           outcome_unknown=True) from None
                if first and json.loads(first[0].kv.value).get("txn") == txid:
                    return True, int(first[0].kv.mod_revision)
            return False, actual

    def _write(self, planned: Callable[[], builtins.list[tuple[ResourceKey, str | None]] | None],
               if_revision: int | None) -> int | None:
        """Plan against the cache and commit over its revision; on a lost race, reload and plan again (or
        RevisionConflict with `if_revision`). Returns the commit revision, or None if nothing to write."""
        if if_revision is not None and if_revision != self._revision:
            self.refresh()
            if if_revision != self._revision:
                raise RevisionConflict(if_revision, self._revision)
        for _ in range(50):
            writes = planned()
            if not writes:
                return None
            guard = self._revision
            ok, rev = self._commit(writes, guard)
            if ok:
                # the comparison proved no store commit between guard and rev: cache + writes is the state
                self._seen = max(self._seen, rev)
                return rev
            self._reload()  # so that the caller's re-read sees what won
            if if_revision is not None:
                raise RevisionConflict(if_revision, rev)
        raise StoreUnavailable("store busy: 50 attempts lost the race to other writers; retry")

    def apply(self, resources: builtins.list[Resource], *, if_revision: int | None = None) -> ApplyResult:
        with self._lock:
            seen: set[ResourceKey] = set()
            for r in resources:
                if r.key in seen:
                    raise ValueError(f"{r.key} appears twice in one apply")
                seen.add(r.key)
            plan: list[tuple[Resource, Action, str]] = []

            def planned() -> list[tuple[ResourceKey, str | None]]:
                plan.clear()
                for r in resources:
                    text = _canonical(r)
                    old = self._json.get(r.key)
                    plan.append((r, "created" if old is None else ("unchanged" if old == text else "configured"),
                                 text))
                return [(r.key, t) for r, a, t in plan if a != "unchanged"]

            rev = self._write(planned, if_revision)
            if rev is None:
                return ApplyResult(self._revision, [(self._cache[r.key], a) for r, a, _ in plan])
            actions: list[tuple[Resource, Action]] = []
            for r, a, text in plan:
                if a != "unchanged":
                    self._logged(Change(rev, r.key, "put"))
                    self._cache[r.key] = r.with_revision(rev)
                    self._json[r.key] = text
                actions.append((self._cache[r.key], a))
            self._revision = rev
            self._notify(rev)
            return ApplyResult(rev, actions)

    def delete(self, keys: builtins.list[ResourceKey], *, if_revision: int | None = None) -> int:
        with self._lock:
            unique: list[ResourceKey] = list(dict.fromkeys(keys))

            def planned() -> list[tuple[ResourceKey, str | None]]:
                missing = [k for k in unique if k not in self._cache]
                if missing:
                    raise NotFound(missing)
                return [(k, None) for k in unique]

            rev = self._write(planned, if_revision)
            if rev is None:
                return self._revision
            for k in unique:
                self._logged(Change(rev, k, "delete"))
                self._cache.pop(k, None)
                self._json.pop(k, None)
            self._revision = rev
            self._notify(rev)
            return rev

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._watch.cancel()
        if self._own_client:
            self.client.close()

    def __enter__(self) -> EtcdStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
