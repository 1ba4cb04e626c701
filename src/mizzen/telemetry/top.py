"""The busiest paths of a sidecar with bounded memory, for `mizzen top`. PURE.

Space-saving (Metwally, Agrawal, El Abbadi 2005): at most `capacity` entries; a new key evicts the entry
with the smallest count and inherits that count as its over-estimate (`error`). Every key whose true count
exceeds total/capacity is guaranteed to be present. Paths are cut at `records.MAX_PATH` characters and
never become metric labels.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Iterator

from .istio import is_success
from .records import RequestRecord


@dataclass
class PathStats:
    key: tuple[str, str, str, str]  # (direction, peer, method, path)
    count: int = 0
    error: int = 0  # how much of `count` may belong to evicted keys
    failures: int = 0
    min_ms: float = float("inf")
    max_ms: float = 0.0
    last_ms: float = 0.0
    last_seen: float = 0.0

    def to_dict(self) -> dict:
        direction, peer, method, path = self.key
        return {"direction": direction, "peer": peer, "method": method, "path": path, "count": self.count,
                "error": self.error, "failures": self.failures,
                "successRate": round((self.count - self.failures) / self.count, 4) if self.count else None,
                "minMs": None if self.min_ms == float("inf") else round(self.min_ms, 3),
                "maxMs": round(self.max_ms, 3), "lastMs": round(self.last_ms, 3), "lastSeen": self.last_seen}


@dataclass
class TopPaths:
    capacity: int = 200
    total: int = 0
    _entries: dict[tuple[str, str, str, str], PathStats] = field(default_factory=dict)
    _heap: list[tuple[int, int, tuple[str, str, str, str]]] = field(default_factory=list)
    _seq: int = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _push(self, e: PathStats) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (e.count, self._seq, e.key))

    def _evict_min(self) -> PathStats:
        # heap entries are lazy: a count may have grown since it was pushed; re-push until the top is true
        while True:
            count, _, key = heapq.heappop(self._heap)
            e = self._entries.get(key)
            if e is None:
                continue
            if e.count != count:
                self._push(e)
                continue
            return self._entries.pop(key)

    def add(self, key: tuple[str, str, str, str], duration_ms: float, ok: bool, now: float) -> None:
        self.total += 1
        e = self._entries.get(key)
        if e is None:
            if len(self._entries) >= self.capacity:
                old = self._evict_min()
                e = PathStats(key, count=old.count, error=old.count)
            else:
                e = PathStats(key)
            self._entries[key] = e
            e.count += 1
            self._push(e)
        else:
            e.count += 1
        if not ok:
            e.failures += 1
        e.min_ms = min(e.min_ms, duration_ms)
        e.max_ms = max(e.max_ms, duration_ms)
        e.last_ms = duration_ms
        e.last_seen = now
        if len(self._heap) > 4 * self.capacity:  # bound the lazy heap too
            self._heap = [(x.count, i, x.key) for i, x in enumerate(self._entries.values())]
            heapq.heapify(self._heap)
            self._seq = len(self._heap)

    def add_record(self, rec: RequestRecord, peer: str, now: float) -> None:
        self.add((rec.direction, peer, rec.method, rec.path), rec.duration_ms,
                 is_success(rec.response_code, rec.grpc_status), now)

    def top(self, n: int = 20) -> list[PathStats]:
        return sorted(self._entries.values(), key=lambda e: (-e.count, e.key))[:n]

    def __iter__(self) -> Iterator[PathStats]:
        return iter(self._entries.values())

    def snapshot(self, n: int = 20) -> dict:
        return {"total": self.total, "capacity": self.capacity, "paths": [e.to_dict() for e in self.top(n)]}


def merge_snapshots(snaps: list[dict], n: int = 20) -> list[dict]:
    """Rows of several sidecars' snapshots (e.g. every replica of a workload) merged by key."""
    merged: dict[tuple, dict] = {}
    for s in snaps:
        for p in s.get("paths", ()):
            k = (p["direction"], p["peer"], p["method"], p["path"])
            m = merged.get(k)
            if m is None:
                merged[k] = dict(p)
                continue
            failures = m["failures"] + p["failures"]
            count = m["count"] + p["count"]
            m.update(count=count, error=m["error"] + p["error"], failures=failures,
                     successRate=round((count - failures) / count, 4) if count else None,
                     minMs=min(x for x in (m["minMs"], p["minMs"]) if x is not None) if (m["minMs"] is not None or p["minMs"] is not None) else None,
                     maxMs=max(m["maxMs"], p["maxMs"]))
            if p["lastSeen"] > m["lastSeen"]:
                m.update(lastMs=p["lastMs"], lastSeen=p["lastSeen"])
    return sorted(merged.values(), key=lambda r: (-r["count"], r["path"]))[:n]
