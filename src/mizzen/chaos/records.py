"""The fault records of one mesh: `STATE/chaos/<id>.json` (paths from `client.StateLayout`).

Every fault ever injected into a run is a record (what, where, when, seed, state, what to undo). Writes are
atomic (temp file + rename); `locked()` serializes the read-modify-write of several processes (the CLI, a
fault's keeper, the runner's teardown) with an flock on `chaos/lock`.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from typing import Iterator

from ..client import StateLayout
from .spec import Fault


class FaultStore:
    def __init__(self, state_dir: str):
        self.layout = StateLayout(state_dir)

    @property
    def dir(self) -> str:
        return self.layout.chaos_dir

    def new_id(self, kind: str) -> str:
        prefix = {"kill": "kill", "network": "net", "partition": "part", "stress": "cpu"}.get(kind, kind[:4])
        os.makedirs(self.dir, exist_ok=True)
        while True:
            fid = f"{prefix}-{secrets.token_hex(2)}"
            if not os.path.exists(self.layout.chaos_record(fid)):
                return fid

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        os.makedirs(self.dir, exist_ok=True)
        fd = os.open(self.layout.chaos_lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def save(self, fault: Fault) -> None:
        os.makedirs(self.dir, exist_ok=True)
        path = self.layout.chaos_record(fault.id)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(fault.to_dict(), f, indent=1)
            f.write("\n")
        os.replace(tmp, path)

    def load(self, fault_id: str) -> Fault | None:
        try:
            with open(self.layout.chaos_record(fault_id)) as f:
                return Fault.from_dict(json.load(f))
        except (OSError, ValueError, TypeError):
            return None

    def all(self) -> list[Fault]:
        try:
            names = sorted(n for n in os.listdir(self.dir) if n.endswith(".json"))
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            f = self.load(n[:-5])
            if f is not None:
                out.append(f)
        return sorted(out, key=lambda f: f.created)

    def active(self) -> list[Fault]:
        return [f for f in self.all() if not f.final]

    def update(self, fault_id: str, **changes: object) -> Fault | None:
        """Change fields of a record under the lock; returns the new record (None if there is none)."""
        with self.locked():
            f = self.load(fault_id)
            if f is None:
                return None
            for k, v in changes.items():
                setattr(f, k, v)
            self.save(f)
            return f
