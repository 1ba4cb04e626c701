"""Work shared by every stream that looks at the same immutable resource maps (sans-I/O).

A proxy's target is a `{type_url: {name: Rendered}}` whose per-type maps come from the renderer, one map
object per view (proxies with the same view key share it).  A stream's "what the client has" is, in the
steady state, one of those map objects too (or a map derived from two of them, e.g. installed ∪ target
during make-before-break).  So the per-stream questions — what changed between what the client has and the
view, the view's version, the response bytes — have the same answer for every stream holding the same two
objects.  They are answered once here, keyed by the objects' identities, and the answer (for responses: the
serialized bytes and one nonce) is handed to every such stream.

Rules:
- Only maps that are never mutated may be passed here (targets, and maps returned from here).  A stream's own,
  mutable maps are `Own` instances and never keyed by identity.
- The memo holds the keyed objects themselves (so an id cannot be reused by another object while its entry
  lives) and is bounded: entries are evicted oldest first; a miss only recomputes.
- Shared nonces are "v<n>" from one counter: unique per response content, never equal to a stream's own
  counter-based nonces (digits only).  A stream that would get the same nonce twice in a row builds its own.
"""
from __future__ import annotations

import hashlib
import itertools
from typing import Any, Callable, Hashable, Mapping

from mizzen.model.types import Rendered
from mizzen.xds import wire

__all__ = ["Own", "is_shared", "IdentityMemo", "MEMO", "advance", "version", "delta", "same", "merge", "updated_names",
           "without", "seeded", "added_keys", "intern_names", "next_nonce", "memoized"]


class Own(dict):
    """A stream's private, mutable map (never keyed by identity)."""

    __slots__ = ()


def is_shared(m: Mapping) -> bool:
    return type(m) is not Own


_MISSING = object()


class IdentityMemo:
    """Bounded memo keyed by tuples of ids (+ hashables), holding the objects whose ids are in the key.

    Entries live for two generations (`advance()`, called once per snapshot the server pushes): an entry not
    used since the previous snapshot only held old views alive. Without that, a long-running control plane with
    steady churn kept up to `max_entries` old views and responses (a chaos soak grew 0.3 MiB/min for 30+
    minutes, issue 16); `max_entries` still bounds one generation's working set."""

    def __init__(self, max_entries: int = 8192) -> None:
        self.max_entries = max_entries
        self._d: dict[Hashable, tuple[tuple, Any, int]] = {}
        self.gen = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any:
        e = self._d.get(key)
        if e is None:
            self.misses += 1
            return _MISSING
        self.hits += 1
        if e[2] != self.gen:  # used in this generation: keep it for the next one
            self._d[key] = (e[0], e[1], self.gen)
        return e[1]

    def put(self, key: Hashable, keep: tuple, value: Any) -> Any:
        d = self._d
        d[key] = (keep, value, self.gen)
        if len(d) > self.max_entries:  # evict the oldest quarter (insertion order)
            for k in list(itertools.islice(d, len(d) // 4)):
                del d[k]
        return value

    def advance(self) -> int:
        """A new snapshot is being pushed: drop the entries not used in this generation or the one before it.
        Returns how many were dropped."""
        self.gen += 1
        floor = self.gen - 1
        stale = [k for k, e in self._d.items() if e[2] < floor]
        for k in stale:
            del self._d[k]
        return len(stale)

    def clear(self) -> None:
        self._d.clear()

    def __len__(self) -> int:
        return len(self._d)


MEMO = IdentityMemo()


def advance() -> None:
    """Called by the server once per pushed snapshot: ages the shared memo and the SotW body cache (see
    `IdentityMemo`), so memory follows the live views, not the history of changes."""
    MEMO.advance()
    wire.SOTW_BODIES.advance()


def memoized(key: Hashable, keep: tuple, build: Callable[[], Any]) -> Any:
    v = MEMO.get(key)
    if v is _MISSING:
        v = MEMO.put(key, keep, build())
    return v


def _version_of(view: Mapping[str, Rendered]) -> str:
    text = "".join([f"{name}\x00{view[name].version}\n" for name in sorted(view)])
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def version(view: Mapping[str, Rendered]) -> str:
    """`xds.stream.version_of(view)` of a shared map, computed once."""
    if not view:
        return _version_of(view)
    return memoized(("ver", id(view)), (view,), lambda: _version_of(view))


def _delta(view: Mapping[str, Rendered], have: Mapping[str, Rendered]) -> tuple[tuple[Rendered, ...], tuple[str, ...]]:
    if view is have:
        return (), ()
    get = have.get
    updates = [r for r in [r for n, r in view.items() if get(n) is not r]
               if (h := get(r.name)) is None or h.version != r.version]
    updates.sort(key=lambda r: r.name)
    removed = sorted(have.keys() - view.keys())
    return tuple(updates), tuple(removed)


def delta(view: Mapping[str, Rendered], have: Mapping[str, Rendered]) -> tuple[tuple[Rendered, ...], tuple[str, ...]]:
    """(entries of `view` that `have` lacks or has at another version, sorted by name; names only in `have`,
    sorted) for two shared maps."""
    if view is have:
        return (), ()
    return memoized(("delta", id(view), id(have)), (view, have), lambda: _delta(view, have))


def same(a: Mapping[str, Rendered], b: Mapping[str, Rendered]) -> bool:
    return a is b or delta(a, b) == ((), ())


def merge(have: Mapping[str, Rendered], target: Mapping[str, Rendered]) -> Mapping[str, Rendered]:
    """have ∪ target (target's entry wins), as a shared map: `target` itself when it has every name of `have`."""
    if have is target or not have:
        return target

    def build() -> Mapping[str, Rendered]:
        if have.keys() <= target.keys():
            return target
        m = dict(have)
        m.update(target)
        return m

    return memoized(("merge", id(have), id(target)), (have, target), build)


def updated_names(before: Mapping[str, Rendered], after: Mapping[str, Rendered]) -> tuple[str, ...]:
    """Names present in both at different versions (shared maps)."""
    if before is after:
        return ()

    def build() -> tuple[str, ...]:
        get = before.get
        return tuple(n for n, r in after.items() if (b := get(n)) is not None and b is not r and b.version != r.version)

    return memoized(("upd", id(before), id(after)), (before, after), build)


def added_keys(base: Mapping[str, Rendered], m: Mapping[str, Rendered]) -> frozenset[str]:
    """Names of `m` that `base` lacks (shared maps)."""
    return memoized(("added", id(base), id(m)), (base, m), lambda: frozenset(m.keys() - base.keys()))


def without(m: Mapping[str, Rendered], names: tuple[str, ...]) -> Mapping[str, Rendered]:
    """`m` minus `names`, as a shared map (one object for every stream removing the same names from `m`)."""
    if not any(n in m for n in names):
        return m

    def build() -> Mapping[str, Rendered]:
        drop = set(names)
        return {n: r for n, r in m.items() if n not in drop}

    return memoized(("without", id(m), names), (m,), build)


def seeded(m: Mapping[str, Rendered], type_url: str, stale: tuple[tuple[str, str], ...],
           lacking: tuple[str, ...]) -> Mapping[str, Rendered]:
    """What a reconnecting Delta client holds, as a shared map: `m` (the target it subscribes to) with the
    `stale` names at the (name, version) it reported (payload-less entries) and without the `lacking` names. Every
    stream that comes back holding the same old versions gets the same object, so what it must be sent is
    computed, serialized and given a nonce once (`delta`, the streams' response memo), not per stream."""
    if not stale and not lacking:
        return m

    def build() -> Mapping[str, Rendered]:
        out = dict(m)
        for n in lacking:
            del out[n]
        for n, v in stale:
            out[n] = Rendered(type_url, n, v, b"")
        return out

    return memoized(("seeded", id(m), stale, lacking), (m,), build)


_NAMES: dict[frozenset, frozenset] = {}
_NAMES_MAX = 4096


def intern_names(names: set[str] | frozenset[str]) -> frozenset[str]:
    """One frozenset per distinct subscription (1000 Envoys naming the same 1000 clusters hold one set)."""
    fs = names if isinstance(names, frozenset) else frozenset(names)
    hit = _NAMES.get(fs)
    if hit is None:
        if len(_NAMES) >= _NAMES_MAX:
            _NAMES.clear()
        hit = _NAMES[fs] = fs
    return hit


_NONCES = itertools.count(1)


def next_nonce() -> str:
    return f"v{next(_NONCES)}"
