"""The Registry contract: the instances (running replicas) the mesh routes to."""
from __future__ import annotations

import builtins

from typing import Callable, Protocol

from ..model.types import Instance


class Registry(Protocol):
    @property
    def version(self) -> int:
        """Bumped by every effective change (never by a no-op re-upsert)."""
        ...

    def upsert(self, instance: Instance) -> bool:
        """Register or refresh an instance. True if anything changed."""
        ...

    def remove(self, id: str) -> bool:
        """Withdraw an instance. True if it existed."""
        ...

    def get(self, id: str) -> Instance | None: ...

    def list(self) -> builtins.list[Instance]:
        """Sorted by id."""
        ...

    def subscribe(self, callback: Callable[[int], None]) -> Callable[[], None]:
        """Call `callback(new_version)` synchronously after each change. Returns an unsubscribe function."""
        ...

    def close(self) -> None: ...
