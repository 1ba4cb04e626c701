"""The ConfigStore contract: durable, atomic storage of validated resources with change notification."""
from __future__ import annotations

import builtins

from dataclasses import dataclass, field
from typing import Callable, Literal, Protocol

from ..api import Resource, ResourceKey

Action = Literal["created", "configured", "unchanged"]
Op = Literal["put", "delete"]


class NotFound(Exception):
    """One or more resources (or other named objects) do not exist; nothing was changed."""

    def __init__(self, keys: list[ResourceKey] | None = None, message: str | None = None):
        self.keys = list(keys or [])
        super().__init__(message or "not found: " + ", ".join(str(k) for k in self.keys))


class HistoryCompacted(Exception):
    """`changes_since(revision)` was asked for changes older than the retained change log."""

    def __init__(self, requested: int, oldest: int):
        self.requested = requested
        self.oldest = oldest
        super().__init__(f"changes since revision {requested} are no longer kept (oldest: {oldest}); resync")


class RevisionConflict(Exception):
    """A conditional write (`if_revision`) found the store at another revision: someone else (another
    control-plane replica) committed since the caller read it. Nothing was written; re-read and retry."""

    def __init__(self, expected: int, actual: int):
        self.expected = expected
        self.actual = actual
        super().__init__(f"the store moved from revision {expected} to {actual}; re-read and retry")


class StoreUnavailable(Exception):
    """The store's backend (an etcd cluster) cannot be reached or has no quorum. Readers keep the last state
    they loaded. `outcome_unknown` is False when nothing was written; True when a write was sent and its
    result could not be learned (it may have been committed: re-read before retrying)."""

    def __init__(self, message: str, *, outcome_unknown: bool = False):
        self.outcome_unknown = outcome_unknown
        super().__init__(message)


@dataclass(frozen=True)
class ApplyResult:
    revision: int  # the store revision after the apply (unchanged if nothing changed)
    actions: list[tuple[Resource, Action]] = field(default_factory=list)  # in input order

    @property
    def changed(self) -> bool:
        return any(a != "unchanged" for _, a in self.actions)


@dataclass(frozen=True)
class Change:
    revision: int
    key: ResourceKey
    op: Op


class ConfigStore(Protocol):
    @property
    def revision(self) -> int: ...

    def apply(self, resources: list[Resource], *, if_revision: int | None = None) -> ApplyResult:
        """Write all resources in one transaction (all-or-nothing). A resource whose canonical form
        equals the stored one is `unchanged`; if nothing changes, the revision does not move. With
        `if_revision`, write only if the store is still at that revision (else RevisionConflict): what
        the caller validated against is what it writes over."""
        ...

    def delete(self, keys: list[ResourceKey], *, if_revision: int | None = None) -> int:
        """Delete all keys in one transaction; raise NotFound (listing missing keys) and delete nothing
        if any is absent. Returns the new revision. `if_revision` as for apply."""
        ...

    def get(self, key: ResourceKey) -> Resource | None: ...

    def list(self, kind: str | None = None, namespace: str | None = None) -> builtins.list[Resource]:
        """Sorted by (kind, namespace, name)."""
        ...

    def subscribe(self, callback: Callable[[int], None]) -> Callable[[], None]:
        """Call `callback(new_revision)` synchronously after each commit. Returns an unsubscribe function."""
        ...

    def changes_since(self, revision: int) -> builtins.list[Change]:
        """Changes with revision > `revision`, oldest first. Raises HistoryCompacted if too old."""
        ...

    def close(self) -> None: ...
