"""The key/value store behind the Consul KV API: SQLite (embedded, `consul-kv.db`) or etcd (shared by every
control plane). Consul's indexes map to the backend's revisions: on etcd, CreateIndex/ModifyIndex are the
key's create/mod revisions and check-and-set (`cas`) is an etcd transaction comparing them."""
from __future__ import annotations

import base64
import builtins
import json
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from ..etcd import messages as pb
from ..etcd.client import EtcdClient, prefix_end
from ..sqlitedb import open_shared


@dataclass(frozen=True)
class KVEntry:
    key: str
    value: bytes
    flags: int = 0
    create_index: int = 0
    modify_index: int = 0

    def to_consul(self) -> dict[str, Any]:
        return {"Key": self.key, "Value": base64.b64encode(self.value).decode() if self.value is not None else None,
                "Flags": self.flags, "CreateIndex": self.create_index, "ModifyIndex": self.modify_index,
                "LockIndex": 0, "Session": ""}


class KVStore(Protocol):
    @property
    def index(self) -> int:
        """Moves with every change (deletes too): the X-Consul-Index of KV reads."""
        ...

    def get(self, key: str) -> KVEntry | None: ...

    def list(self, prefix: str) -> builtins.list[KVEntry]: ...

    def put(self, key: str, value: bytes, *, flags: int = 0, cas: int | None = None) -> bool:
        """cas=None: always; cas=0: only if absent; cas=N: only if its ModifyIndex is N."""
        ...

    def delete(self, key: str, *, recurse: bool = False, cas: int | None = None) -> bool: ...

    def subscribe(self, callback: Callable[[int], None]) -> Callable[[], None]: ...

    def close(self) -> None: ...


class _Subscribers:
    def __init__(self) -> None:
        self._subs: list[Callable[[int], None]] = []
        self._lock = threading.Lock()

    def subscribe(self, callback: Callable[[int], None]) -> Callable[[], None]:
        with self._lock:
            self._subs.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subs:
                    self._subs.remove(callback)

        return unsubscribe

    def notify(self, index: int) -> None:
        for cb in list(self._subs):
            try:
                cb(index)
            except Exception:
                pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB, flags INTEGER NOT NULL,
                               create_index INTEGER NOT NULL, modify_index INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('index', 1);
"""


class SqliteKV(_Subscribers):
    """Every read goes to the file, so control-plane replicas on one state dir agree."""

    def __init__(self, path: str | os.PathLike[str]):
        super().__init__()
        self._db = open_shared(path, _SCHEMA)
        self._lock = threading.RLock()

    @property
    def index(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT value FROM meta WHERE key='index'").fetchone()[0])

    def get(self, key: str) -> KVEntry | None:
        with self._lock:
            row = self._db.execute("SELECT key, value, flags, create_index, modify_index FROM kv WHERE key = ?",
                                   (key,)).fetchone()
        return KVEntry(row[0], bytes(row[1]) if row[1] is not None else b"", *row[2:]) if row else None

    def list(self, prefix: str) -> builtins.list[KVEntry]:
        with self._lock:
            rows = self._db.execute("SELECT key, value, flags, create_index, modify_index FROM kv "
                                    "WHERE substr(key, 1, ?) = ? ORDER BY key", (len(prefix), prefix)).fetchall()
        return [KVEntry(r[0], bytes(r[1]) if r[1] is not None else b"", *r[2:]) for r in rows]

    def _bump(self) -> int:
        idx = int(self._db.execute("SELECT value FROM meta WHERE key='index'").fetchone()[0]) + 1
        self._db.execute("UPDATE meta SET value = ? WHERE key='index'", (idx,))
        return idx

    def put(self, key: str, value: bytes, *, flags: int = 0, cas: int | None = None) -> bool:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT create_index, modify_index FROM kv WHERE key = ?", (key,)).fetchone()
                if cas is not None and ((cas == 0 and row is not None) or (cas != 0 and (row is None or row[1] != cas))):
                    db.execute("ROLLBACK")
                    return False
                idx = self._bump()
                db.execute("INSERT OR REPLACE INTO kv (key, value, flags, create_index, modify_index) "
                           "VALUES (?, ?, ?, ?, ?)", (key, value, flags, row[0] if row else idx, idx))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        self.notify(idx)
        return True

    def delete(self, key: str, *, recurse: bool = False, cas: int | None = None) -> bool:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                if cas is not None and not recurse:
                    row = db.execute("SELECT modify_index FROM kv WHERE key = ?", (key,)).fetchone()
                    if row is None or row[0] != cas:
                        db.execute("ROLLBACK")
                        return False
                if recurse:
                    n = db.execute("DELETE FROM kv WHERE substr(key, 1, ?) = ?", (len(key), key)).rowcount
                else:
                    n = db.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount
                idx = self._bump() if n else None
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        if idx is not None:
            self.notify(idx)
        return True

    def close(self) -> None:
        with self._lock:
            self._db.close()


class EtcdKV(_Subscribers):
    """Keys under `<prefix>consul-kv/`; values kept as `{"v": base64, "f": flags}`. Reads come from a copy
    kept current by a watch (and kept when etcd is unreachable); writes go to etcd."""

    def __init__(self, client: EtcdClient, *, prefix: str = "/mizzen/"):
        super().__init__()
        self.client = client
        self._base = (prefix.rstrip("/") + "/consul-kv/").encode()
        self._lock = threading.RLock()
        rev, kvs = client.range_prefix(self._base)
        self._entries = {e.key: e for e in (self._entry(kv) for kv in kvs)}
        self._index = rev
        self._watch = client.watch(self._base, prefix_end(self._base), rev + 1, self._on_events,
                                   on_compacted=self._on_compacted, name="etcd-consul-kv-watch")

    def _entry(self, kv: Any) -> KVEntry:
        d = json.loads(kv.value)
        return KVEntry(kv.key[len(self._base):].decode(), base64.b64decode(d.get("v") or ""), int(d.get("f", 0)),
                       int(kv.create_revision), int(kv.mod_revision))

    def _on_events(self, events: list[Any], header_revision: int) -> None:
        with self._lock:
            for ev in events:
                key = ev.kv.key[len(self._base):].decode()
                if ev.type == pb.EVENT_DELETE:
                    self._entries.pop(key, None)
                else:
                    self._entries[key] = self._entry(ev.kv)
                self._index = max(self._index, int(ev.kv.mod_revision))
            idx = self._index
        self.notify(idx)

    def _on_compacted(self, compact_revision: int) -> int:
        rev, kvs = self.client.range_prefix(self._base)
        with self._lock:
            self._entries = {e.key: e for e in (self._entry(kv) for kv in kvs)}
            self._index = max(self._index, rev)
        self.notify(self._index)
        return rev + 1

    @property
    def index(self) -> int:
        return self._index

    def get(self, key: str) -> KVEntry | None:
        return self._entries.get(key)

    def list(self, prefix: str) -> builtins.list[KVEntry]:
        with self._lock:
            return [self._entries[k] for k in sorted(self._entries) if k.startswith(prefix)]

    def _wait(self, revision: int) -> None:
        """Return once the watch has delivered `revision`, so a read after a write sees it (1 s at most)."""
        import time
        deadline = time.monotonic() + 1.0
        while self._index < revision and time.monotonic() < deadline:
            time.sleep(0.005)

    def put(self, key: str, value: bytes, *, flags: int = 0, cas: int | None = None) -> bool:
        k = self._base + key.encode()
        body = json.dumps({"v": base64.b64encode(value).decode(), "f": flags}).encode()
        compare = []
        if cas == 0:
            compare = [pb.Compare(result=pb.CMP_EQUAL, target=pb.TARGET_CREATE, key=k, create_revision=0)]
        elif cas is not None:
            compare = [pb.Compare(result=pb.CMP_EQUAL, target=pb.TARGET_MOD, key=k, mod_revision=cas)]
        resp = self.client.txn(compare, [pb.RequestOp(request_put=pb.PutRequest(key=k, value=body))])
        if resp.succeeded:
            self._wait(int(resp.header.revision))
        return bool(resp.succeeded)

    def delete(self, key: str, *, recurse: bool = False, cas: int | None = None) -> bool:
        k = self._base + key.encode()
        compare = []
        if cas is not None and not recurse:
            compare = [pb.Compare(result=pb.CMP_EQUAL, target=pb.TARGET_MOD, key=k, mod_revision=cas)]
        op = pb.DeleteRangeRequest(key=k, range_end=prefix_end(k) if recurse else b"")
        resp = self.client.txn(compare, [pb.RequestOp(request_delete_range=op)], retry_sent=cas is None)
        if resp.succeeded and resp.responses and resp.responses[0].response_delete_range.deleted:
            self._wait(int(resp.header.revision))
        return bool(resp.succeeded)

    def close(self) -> None:
        self._watch.cancel()
