"""Debounce and merge change events before pushing (sans-I/O: the caller passes the time in).

    q = PushQueue(quiet_period=0.1, max_wait=1.0)
    q.add({"reviews.default.svc.cluster.local"}, now)   # or q.add(ALL, now)
    ...
    if q.due(now):
        event = q.take()          # PushEvent(keys=frozenset(...) | None for "all", count, first, last)
    sleep_until = q.next_deadline()  # None when nothing is pending

A flush is due once `quiet_period` has passed since the last event, or `max_wait` since the first pending event
(so a steady stream of changes cannot postpone pushes forever).  With `leading=True` a change that comes after
a quiet period (no event in the `quiet_period` before it) is due at once: a lone change is not delayed by the
debounce, while changes that follow within the quiet period are merged as before (a burst costs one extra
push: its first event alone, then the rest).  Keys are any hashables (host names,
instance ids, predicates ...); "all" absorbs everything.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Iterable

__all__ = ["ALL", "PushEvent", "PushQueue"]

ALL = "all"


@dataclass(frozen=True)
class PushEvent:
    """Merged pending changes. `keys is None` means everything is affected."""

    keys: frozenset | None
    count: int  # how many events were merged
    first: float  # time of the first merged event
    last: float  # time of the last merged event

    @property
    def all(self) -> bool:
        return self.keys is None

    def affects(self, key: Hashable) -> bool:
        return self.keys is None or key in self.keys


class PushQueue:
    def __init__(self, quiet_period: float = 0.1, max_wait: float = 1.0, leading: bool = False) -> None:
        if quiet_period < 0 or max_wait < 0:
            raise ValueError("quiet_period and max_wait must be >= 0")
        self.quiet_period = float(quiet_period)
        self.max_wait = float(max(max_wait, quiet_period))
        self.leading = leading
        self._keys: set | None = set()
        self._count = 0
        self._first = 0.0
        self._last = 0.0
        self._previous: float | None = None  # the latest event ever added (flushed or not)
        self._at_once = False  # the pending events began with a change after a quiet period (leading)

    @property
    def pending(self) -> bool:
        return self._count > 0

    def add(self, keys: Iterable[Hashable] | str | None, now: float) -> None:
        """Merge one change event. `keys` = affected keys, or ALL / None for everything."""
        if self._count == 0:
            self._first = now
            self._keys = set()
            self._at_once = self.leading and (self._previous is None or now - self._previous >= self.quiet_period)
        self._previous = now if self._previous is None else max(self._previous, now)
        self._count += 1
        self._last = max(self._last, now) if self._count > 1 else now
        if keys is None or (isinstance(keys, str) and keys == ALL):
            self._keys = None
        elif self._keys is not None:
            if isinstance(keys, (str, bytes)):
                self._keys.add(keys)
            else:
                self._keys.update(keys)

    def next_deadline(self) -> float | None:
        """When the pending changes become due (None: nothing pending)."""
        if self._count == 0:
            return None
        if self._at_once:
            return self._first
        return min(self._last + self.quiet_period, self._first + self.max_wait)

    def due(self, now: float) -> bool:
        d = self.next_deadline()
        return d is not None and now >= d

    def take(self) -> PushEvent | None:
        """Return and clear the merged pending event (None if nothing is pending)."""
        if self._count == 0:
            return None
        ev = PushEvent(keys=None if self._keys is None else frozenset(self._keys), count=self._count,
                       first=self._first, last=self._last)
        self._keys, self._count, self._at_once = set(), 0, False
        return ev
