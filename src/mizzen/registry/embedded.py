"""EmbeddedRegistry: instances kept in memory and persisted to SQLite (`registry.db` in the state dir),
so a restarted control plane still knows every instance and never publishes an empty endpoint set."""
from __future__ import annotations

import builtins

import json
import logging
import os
import threading
from typing import Callable

from ..model.types import Instance
from ..sqlitedb import open_shared

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, json TEXT NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('version', 0);
"""


class EmbeddedRegistry:
    """Registry backed by SQLite. Thread-safe; subscribers run synchronously in the writer's thread."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        self._lock = threading.RLock()
        self._subscribers: list[Callable[[int], None]] = []
        self._db = open_shared(self.path, _SCHEMA)
        try:
            self._version, self._instances = self._read_all()
        except BaseException:
            self._db.close()
            raise

    def _db_version(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0])

    def _read_all(self) -> tuple[int, dict[str, Instance]]:
        version = self._db_version()
        instances: dict[str, Instance] = {}
        for id_, text in self._db.execute("SELECT id, json FROM instances"):
            try:
                instances[id_] = Instance.from_dict(json.loads(text))
            except (KeyError, ValueError, TypeError):
                log.error("registry %s: dropping unreadable instance %s", self.path, id_)
        return version, instances

    def refresh(self) -> bool:
        """Pick up what another process (a second control-plane replica) committed; notify if changed."""
        with self._lock:
            if self._db_version() == self._version:
                return False
            self._version, self._instances = self._read_all()
            self._notify()
            return True

    @property
    def version(self) -> int:
        return self._version

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

    def _write(self, id: str, instance: Instance | None) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if instance is None:
                db.execute("DELETE FROM instances WHERE id = ?", (id,))
            else:
                db.execute("INSERT OR REPLACE INTO instances (id, json) VALUES (?, ?)",
                           (id, json.dumps(instance.to_dict(), sort_keys=True)))
            version = int(db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0]) + 1
            db.execute("UPDATE meta SET value = ? WHERE key = 'version'", (version,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if version != self._version + 1:  # another replica wrote in between: take its writes too
            self._version, self._instances = self._read_all()
        else:
            self._version = version
            if instance is None:
                self._instances.pop(id, None)
            else:
                self._instances[id] = instance
        self._notify()

    def _notify(self) -> None:
        for cb in list(self._subscribers):
            try:
                cb(self._version)
            except Exception:
                log.exception("registry subscriber failed at version %d", self._version)

    def upsert(self, instance: Instance) -> bool:
        with self._lock:
            self.refresh()
            if self._instances.get(instance.id) == instance:
                return False
            self._write(instance.id, instance)
            return True

    def remove(self, id: str) -> bool:
        with self._lock:
            self.refresh()
            if id not in self._instances:
                return False
            self._write(id, None)
            return True

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> EmbeddedRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
