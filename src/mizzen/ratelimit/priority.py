"""Priority classes over one limit: each class has a reserved share; unused capacity is borrowed.

Two limiters of the same algorithm per key: the *parent* at the full rate, and one per class at its share of
it. A request of class c is admitted
1. by its class limiter (its reserved share) — then the parent is charged too (`force`), so traffic admitted
   from reserved shares uses up the common pool; or else
2. by the parent alone (borrowing capacity no class is using) — the class limiter is left as it was.

With every class above its share, the parent stays drained by reserved traffic, nothing can be borrowed, and
each class gets its share: the lower classes (smaller shares) absorb the cut, the highest keeps its reserve.
With one class idle, the others borrow its unused capacity and the total stays at the limit. Requests that
carry no known class form the default class, whose share is 100 − Σ shares (possibly 0: borrow only).
"""
from __future__ import annotations

from dataclasses import dataclass

from .algorithms import Algorithm, Decision, State

DEFAULT_CLASS = "_default"


@dataclass(frozen=True)
class PriorityClasses:
    header: str
    classes: tuple[tuple[str, int], ...]  # (class value, percent), highest first

    def classify(self, value: str | None) -> str:
        names = {n for n, _ in self.classes}
        return value if value in names else DEFAULT_CLASS

    def share(self, cls: str) -> float:
        for n, pct in self.classes:
            if n == cls:
                return pct / 100.0
        return max(0, 100 - sum(p for _, p in self.classes)) / 100.0


def decide(parent: Algorithm, klass: Algorithm | None, parent_state: State, class_state: State, now: float,
           hits: int) -> tuple[State, State, Decision, bool]:
    """Returns (parent_state, class_state, decision, from_reserve). `klass` None: the class has no share."""
    if klass is not None:
        cs, cd = klass.decide(class_state, now, hits)
        if cd.allowed:
            ps, pd = parent.decide(parent_state, now, hits, force=True)
            return ps, cs, Decision(True, pd.limit, pd.remaining, pd.reset_after), True
    else:
        cd = None
    ps, pd = parent.decide(parent_state, now, hits)
    if pd.allowed:
        return ps, class_state, pd, False
    retry = pd.retry_after if cd is None else min(pd.retry_after, cd.retry_after)
    return ps, class_state, Decision(False, pd.limit, pd.remaining, pd.reset_after, retry), False
