"""SqliteStore: the embedded ConfigStore, one SQLite file (WAL) in the state dir.

Single writer per file: the in-memory cache is authoritative for reads, so two processes writing the same
file would each see only their own writes until reopened. The control plane is the only writer.
"""
from __future__ import annotations

import builtins

import json
import logging
import os
import threading
from typing import Callable

from ..api import InvalidConfig, Issue, Resource, ResourceKey, from_dict
from ..sqlitedb import open_shared
from .base import Action, ApplyResult, Change, HistoryCompacted, NotFound, RevisionConflict

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    json TEXT NOT NULL, revision INTEGER NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS changes (
    revision INTEGER NOT NULL, kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('put', 'delete')),
    PRIMARY KEY (revision, kind, namespace, name)
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0), ('compacted', 0);
"""


def _canonical(r: Resource) -> str:
    return json.dumps(r.to_dict(), sort_keys=True, separators=(",", ":"))


def _sort_key(k: ResourceKey) -> tuple[str, str, str]:
    return (k.kind, k.namespace, k.name)


class SqliteStore:
    """ConfigStore backed by SQLite. Thread-safe; subscribers run synchronously in the writer's thread."""

    def __init__(self, path: str | os.PathLike[str], *, history: int = 1000):
        self.path = os.fspath(path)
        self._history = max(1, history)
        self._lock = threading.RLock()
        self._subscribers: list[Callable[[int], None]] = []
        self._db = open_shared(self.path, _SCHEMA)
        try:
            self._cache: dict[ResourceKey, Resource] = {}
            self._json: dict[ResourceKey, str] = {}
            self._revision = self._meta("revision")
            self._load()
        except BaseException:
            self._db.close()
            raise

    # ------------------------------------------------------------------ reading

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _load(self) -> None:
        """Read every stored resource. One that no longer loads (stored by an older, laxer version, or edited
        by hand) is set aside — logged and listed in `load_issues` — so that the control plane still starts
        with everything else; re-applying a fixed version, or deleting it, clears it."""
        issues: list[Issue] = []
        self.quarantined: set[ResourceKey] = set()
        for kind, ns, name, text, rev in self._db.execute(
                "SELECT kind, namespace, name, json, revision FROM resources"):
            key = ResourceKey(kind, ns, name)
            try:
                res = from_dict(json.loads(text), revision=int(rev))
            except (InvalidConfig, ValueError) as e:
                detail = "; ".join(str(i) for i in e.issues) if isinstance(e, InvalidConfig) else str(e)
                issues.append(Issue(f"stored resource no longer loads: {detail[:500]}", str(self.path), None, kind, ns,
                                    name))
                self.quarantined.add(key)
                continue
            self._cache[key] = res
            self._json[key] = _canonical(res)
        self.load_issues = issues
        for i in issues:
            log.error("%s — left out of the config; re-apply a fixed version or delete it", i)

    @property
    def revision(self) -> int:
        return self._revision

    def refresh(self) -> bool:
        """Pick up what another process (a second control-plane replica) committed; notify if changed."""
        with self._lock:
            rev = self._meta("revision")
            if rev == self._revision:
                return False
            self._cache, self._json = {}, {}
            self._load()
            self._revision = rev
            self._notify(rev)
            return True

    def get(self, key: ResourceKey) -> Resource | None:
        return self._cache.get(key)

    def list(self, kind: str | None = None, namespace: str | None = None) -> builtins.list[Resource]:
        with self._lock:
            items = [r for k, r in self._cache.items()
                     if (kind is None or k.kind == kind) and (namespace is None or k.namespace == namespace)]
        items.sort(key=lambda r: _sort_key(r.key))
        return items

    def changes_since(self, revision: int) -> builtins.list[Change]:
        with self._lock:
            compacted = self._meta("compacted")
            if revision < compacted:
                raise HistoryCompacted(revision, compacted)
            rows = self._db.execute(
                "SELECT revision, kind, namespace, name, op FROM changes WHERE revision > ? "
                "ORDER BY revision, kind, namespace, name", (revision,)).fetchall()
        return [Change(int(rev), ResourceKey(k, ns, n), op) for rev, k, ns, n, op in rows]

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

    def _commit(self, writes: builtins.list[tuple[ResourceKey, str | None]], if_revision: int | None = None) -> int:
        """Write (key, json) pairs (json None = delete) in one transaction; return the new revision. With
        `if_revision`, only if the database is still at that revision (checked under the write lock)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            current = self._meta("revision")
            if if_revision is not None and current != if_revision:
                raise RevisionConflict(if_revision, current)
            rev = current + 1
            for key, text in writes:
                if text is None:
                    db.execute("DELETE FROM resources WHERE kind = ? AND namespace = ? AND name = ?",
                               (key.kind, key.namespace, key.name))
                else:
                    db.execute("INSERT OR REPLACE INTO resources (kind, namespace, name, json, revision) "
                               "VALUES (?, ?, ?, ?, ?)", (key.kind, key.namespace, key.name, text, rev))
                db.execute("INSERT OR REPLACE INTO changes (revision, kind, namespace, name, op) "
                           "VALUES (?, ?, ?, ?, ?)",
                           (rev, key.kind, key.namespace, key.name, "delete" if text is None else "put"))
            db.execute("UPDATE meta SET value = ? WHERE key = 'revision'", (rev,))
            horizon = rev - self._history
            if horizon > self._meta("compacted"):
                db.execute("DELETE FROM changes WHERE revision <= ?", (horizon,))
                db.execute("UPDATE meta SET value = ? WHERE key = 'compacted'", (horizon,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return rev

    def apply(self, resources: builtins.list[Resource], *, if_revision: int | None = None) -> ApplyResult:
        with self._lock:
            self.refresh()
            if if_revision is not None and self._revision != if_revision:
                raise RevisionConflict(if_revision, self._revision)
            seen: set[ResourceKey] = set()
            planned: list[tuple[Resource, Action, str]] = []
            for r in resources:
                if r.key in seen:
                    raise ValueError(f"{r.key} appears twice in one apply")
                seen.add(r.key)
                text = _canonical(r)
                old = self._json.get(r.key)
                action: Action = "created" if old is None else ("unchanged" if old == text else "configured")
                planned.append((r, action, text))
            writes: list[tuple[ResourceKey, str | None]] = [(r.key, t) for r, a, t in planned if a != "unchanged"]
            if not writes:
                return ApplyResult(self._revision, [(self._cache[r.key], a) for r, a, _ in planned])
            rev = self._commit(writes, if_revision)
            if rev != self._revision + 1:  # another replica committed in between: reload, then ours is in
                self._cache, self._json = {}, {}
                self._load()
            actions: list[tuple[Resource, Action]] = []
            for r, a, text in planned:
                if a != "unchanged":
                    self._cache[r.key] = r.with_revision(rev)
                    self._json[r.key] = text
                actions.append((self._cache[r.key], a))
            self._revision = rev
            self._notify(rev)
            return ApplyResult(rev, actions)

    def delete(self, keys: builtins.list[ResourceKey], *, if_revision: int | None = None) -> int:
        with self._lock:
            self.refresh()
            if if_revision is not None and self._revision != if_revision:
                raise RevisionConflict(if_revision, self._revision)
            unique: list[ResourceKey] = list(dict.fromkeys(keys))
            missing = [k for k in unique if k not in self._cache and k not in self.quarantined]
            if missing:
                raise NotFound(missing)
            if not unique:
                return self._revision
            rev = self._commit([(k, None) for k in unique], if_revision)
            if rev != self._revision + 1:
                self._cache, self._json = {}, {}
                self._load()
            for k in unique:
                self._cache.pop(k, None)
                self._json.pop(k, None)
                self.quarantined.discard(k)
            self._revision = rev
            self._notify(rev)
            return rev

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
