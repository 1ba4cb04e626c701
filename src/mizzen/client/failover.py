"""The one failover policy across control-plane replicas, used by the sync client (CLI, runner) and the
asyncio one (agent). Pure: it only decides the order and the time each attempt gets.

- Replicas are tried in order, starting with the one that answered last (replica 0 at first).
- A connection failure (socket absent, refused, reset, or no answer in time) moves on to the next one.
- An answer is final, HTTP errors included: every replica shares one store, another would say the same —
  except from a replica that has not loaded its store (a 503 marked `storeNotLoaded`, server/storewait.py):
  it is skipped like one that does not answer, and its answer is raised only if no other replica answers.
- One time budget per call: each attempt gets an equal share of what is left, so a hung replica cannot
  eat all of it; an address known to be absent (a unix socket file that does not exist) takes no share.
"""
from __future__ import annotations

from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")

MIN_ATTEMPT_SECONDS = 0.05


class Failover(Generic[T]):
    def __init__(self, targets: Sequence[T]):
        if not targets:
            raise ValueError("no address to try")
        self.targets = list(targets)
        self.preferred = 0

    def order(self) -> list[int]:
        n = len(self.targets)
        return [(self.preferred + k) % n for k in range(n)]

    def answered(self, index: int) -> bool:
        """Record who answered; True when that changes the preferred replica."""
        changed = index != self.preferred
        self.preferred = index
        return changed

    @staticmethod
    def attempts(order: Sequence[int], present: Callable[[int], bool]) -> list[int]:
        """The attempts worth making: absent targets are skipped (they would fail at once anyway)."""
        return [i for i in order if present(i)]

    @staticmethod
    def not_loaded(status: int, body: object) -> bool:
        """The answer of a replica that serves nothing yet (its store is not loaded): try the others."""
        return status == 503 and isinstance(body, dict) and bool(body.get("storeNotLoaded"))

    @staticmethod
    def share(left: float, remaining: int) -> float:
        """The time one attempt gets when `remaining` attempts (this one included) share `left` seconds."""
        return max(left / max(remaining, 1), MIN_ATTEMPT_SECONDS)
