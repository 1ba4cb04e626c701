"""The in-memory backend: counters of one process, decided with the pure algorithms. No clock of its own
(`now` is passed in), no I/O; states that are back to a fresh key's are swept as the table grows."""
from __future__ import annotations

from typing import Sequence

from . import priority
from .algorithms import Algorithm, Decision, State, make
from .engine import Check
from .table import CompiledLimit

SWEEP_EVERY = 4096


class MemoryCounters:
    def __init__(self) -> None:
        self._states: dict[str, tuple[Algorithm, State]] = {}
        self._algs: dict[tuple[CompiledLimit, str | None], Algorithm | None] = {}
        self._writes = 0

    def __len__(self) -> int:
        return len(self._states)

    def _alg(self, lim: CompiledLimit, klass: str | None = None) -> Algorithm | None:
        k = (lim, klass)
        if k not in self._algs:
            if len(self._algs) > 10000:
                self._algs.clear()
            rate = lim.rate if klass is None else lim.class_rate(klass)
            self._algs[k] = None if rate is None else make(lim.algorithm, rate, delay=lim.delay)
        return self._algs[k]

    def _get(self, key: str) -> State:
        got = self._states.get(key)
        return None if got is None else got[1]

    def _put(self, key: str, alg: Algorithm, state: State) -> None:
        self._states[key] = (alg, state)
        self._writes += 1

    def decide(self, check: Check, now: float) -> Decision | None:
        lim = check.limit
        if lim is None:
            return None
        key = lim.state_key(check.counter_key)
        parent = self._alg(lim)
        assert parent is not None
        if lim.priority is None:
            state, dec = parent.decide(self._get(key), now, check.hits, max_delay=lim.max_delay)
            self._put(key, parent, state)
        else:
            ckey = lim.state_key(check.counter_key, check.klass)
            klass = self._alg(lim, check.klass)
            ps, cs, dec, _ = priority.decide(parent, klass, self._get(key), self._get(ckey), now, check.hits)
            self._put(key, parent, ps)
            if klass is not None:
                self._put(ckey, klass, cs)
        if self._writes >= SWEEP_EVERY:
            self.sweep(now)
        return dec

    def run(self, checks: Sequence[Check], now: float) -> list[Decision | None]:
        return [self.decide(c, now) for c in checks]

    def sweep(self, now: float) -> int:
        """Drop states that are back to a fresh key's; returns how many."""
        self._writes = 0
        dead = [k for k, (alg, st) in self._states.items() if alg.expires(st) <= now]
        for k in dead:
            del self._states[k]
        return len(dead)
