"""Rate-limit algorithms as pure state transitions: `decide(state, now, hits) -> (new_state, Decision)`.

No clock, no I/O: the caller passes `now` (seconds, any monotonic origin shared by all calls on one key) and
keeps the state (an immutable tuple, or None for a key never seen). The same arithmetic is written in Lua in
`lua.py` for the Redis backend; `tests/ratelimit/test_redis_parity.py` runs both on the same sequences.

Common rules
- `hits` (Envoy's `hits_addend`, ≥ 1) is how much one request costs. A request is admitted whole or not at all.
- Rejected requests are **not** counted (the counter only holds admitted work): a client that keeps retrying
  while over the limit is admitted again as soon as capacity returns, and `remaining` never goes negative.
- `force=True` admits unconditionally and charges the state (priority classes charge the shared limiter for
  traffic their reserved share already admitted); the debt is bounded so a key never stays blocked forever.
- `max_delay` (seconds, or None) asks for the "delay" strategy: a request the limiter cannot admit now, but
  could admit within `max_delay`, is admitted with `delay` > 0 and its slot is reserved; later ones queue
  behind it. Only algorithms that can compute a fair wait support it (`SUPPORTS_DELAY`).

Decision fields: `remaining` — admissions of `hits`=1 left right now; `reset_after` — seconds until the
limiter is back to its full quota (window end for windows); `retry_after` — for a rejection, seconds until the
same request would be admitted (0 when admitted); `delay` — seconds the admitted request must wait.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

EPS = 1e-9


@dataclass(frozen=True)
class Rate:
    """`limit` requests per `period` seconds; `burst` is the bucket capacity (defaults to `limit`)."""

    limit: int
    period: float
    burst: int = 0

    def __post_init__(self) -> None:
        if self.limit <= 0 or self.period <= 0:
            raise ValueError("a rate needs limit > 0 and period > 0")
        if self.burst < 0:
            raise ValueError("burst must not be negative")

    @property
    def capacity(self) -> int:
        return self.burst or self.limit

    @property
    def per_second(self) -> float:
        return self.limit / self.period

    @property
    def interval(self) -> float:
        """Seconds between two admissions at the steady rate (GCRA's emission interval T)."""
        return self.period / self.limit

    def scaled(self, share: float) -> "Rate":
        """This rate times `share` (0 < share ≤ 1), keeping the period; used for priority classes."""
        limit = max(1, int(round(self.limit * share)))
        burst = max(1, int(round(self.capacity * share)))
        return Rate(limit, self.period, burst)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float = 0.0
    delay: float = 0.0


State = tuple[Any, ...] | None


class Algorithm(Protocol):
    name: str

    def decide(self, state: State, now: float, hits: int = 1, *, force: bool = False,
               max_delay: float | None = None) -> tuple[State, Decision]: ...

    def expires(self, state: State) -> float:
        """The time (same origin as `now`) after which `state` equals a fresh key and can be dropped."""
        ...


def _floor(x: float) -> int:
    return max(0, int(math.floor(x + EPS)))


# ---------------------------------------------------------------- fixed window

@dataclass(frozen=True)
class FixedWindow:
    """Counts admissions per aligned window [k·period, (k+1)·period). Cheap (one counter) but lets up to
    2× the limit through across a window boundary. State: (window_start, count)."""

    rate: Rate
    name: str = "fixed_window"

    def decide(self, state: State, now: float, hits: int = 1, *, force: bool = False,
               max_delay: float | None = None) -> tuple[State, Decision]:
        p, lim = self.rate.period, self.rate.limit
        start = math.floor(now / p) * p
        count = state[1] if state is not None and state[0] == start else 0
        reset = start + p - now
        if force or count + hits <= lim:
            count += hits
            return (start, count), Decision(True, lim, max(0, lim - count), reset)
        retry = reset if hits <= lim else math.inf
        return (start, count), Decision(False, lim, max(0, lim - count), reset, retry)

    def expires(self, state: State) -> float:
        return -math.inf if state is None else state[0] + self.rate.period


# ---------------------------------------------------------------- sliding window (counter approximation)

@dataclass(frozen=True)
class SlidingWindow:
    """The previous window's count weighted by how much of it still overlaps the sliding window, plus the
    current window's count. Two counters per key; assumes the previous window's requests were spread evenly,
    so it can be off by a fraction of a window's worth at the edges (Cloudflare measured 0.003% wrong
    decisions on real traffic). State: (window_start, previous_count, current_count)."""

    rate: Rate
    name: str = "sliding_window"

    def _roll(self, state: State, now: float) -> tuple[float, int, int]:
        p = self.rate.period
        start = math.floor(now / p) * p
        if state is None:
            return start, 0, 0
        s0, prev, cur = state
        if s0 == start:
            return start, prev, cur
        if s0 == start - p:
            return start, cur, 0
        return start, 0, 0

    def decide(self, state: State, now: float, hits: int = 1, *, force: bool = False,
               max_delay: float | None = None) -> tuple[State, Decision]:
        p, lim = self.rate.period, self.rate.limit
        start, prev, cur = self._roll(state, now)
        elapsed = now - start
        weight = 1.0 - elapsed / p
        used = prev * weight + cur
        if force or used + hits <= lim + EPS:
            cur += hits
            used += hits
            return (start, prev, cur), Decision(True, lim, _floor(lim - used), self._reset(prev, cur, elapsed))
        return (start, prev, cur), Decision(False, lim, _floor(lim - used), self._reset(prev, cur, elapsed),
                                            self._retry(prev, cur, elapsed, hits))

    def _reset(self, prev: int, cur: int, elapsed: float) -> float:
        p = self.rate.period
        # the estimate reaches 0 once both windows have slid out: the current one ends at p - elapsed,
        # after which it becomes "previous" and fades over one more period
        if cur > 0:
            return 2 * p - elapsed
        return (p - elapsed) if prev > 0 else 0.0

    def _retry(self, prev: int, cur: int, elapsed: float, hits: int) -> float:
        p, lim = self.rate.period, self.rate.limit
        if hits > lim:
            return math.inf
        if cur + hits <= lim and prev > 0:
            # prev·(1 − (elapsed+t)/p) + cur + hits ≤ lim
            t = p * (1.0 - (lim - cur - hits) / prev) - elapsed
            return max(t, 0.0)
        # wait for the next window, where today's count becomes the fading previous one
        t_next = p * (1.0 - (lim - hits) / cur) if cur > 0 else 0.0
        return (p - elapsed) + max(t_next, 0.0)

    def expires(self, state: State) -> float:
        return -math.inf if state is None else state[0] + 2 * self.rate.period


# ---------------------------------------------------------------- sliding log (exact)

@dataclass(frozen=True)
class SlidingLog:
    """Exact: keeps the time of every admitted request of the last period and admits while their sum
    stays within the limit. Memory and time grow with the limit (O(limit) per key, per decision), so it
    suits small limits (e.g. 10 logins per minute) where the counter approximation's error matters.
    State: tuple of (timestamp, hits) pairs, oldest first."""

    rate: Rate
    name: str = "sliding_log"

    def decide(self, state: State, now: float, hits: int = 1, *, force: bool = False,
               max_delay: float | None = None) -> tuple[State, Decision]:
        p, lim = self.rate.period, self.rate.limit
        log = tuple(e for e in (state or ()) if e[0] > now - p)
        used = sum(h for _, h in log)
        if force or used + hits <= lim:
            log = log + ((now, hits),)
            used += hits
            return log, Decision(True, lim, max(0, lim - used), log[0][0] + p - now)
        # the earliest time enough old entries have left the window
        need, freed, retry = used + hits - lim, 0, math.inf
        if hits <= lim:
            for t, h in log:
                freed += h
                if freed >= need:
                    retry = t + p - now
                    break
        return log, Decision(False, lim, max(0, lim - used), log[0][0] + p - now if log else 0.0, retry)

    def expires(self, state: State) -> float:
        return -math.inf if not state else state[-1][0] + self.rate.period


# ---------------------------------------------------------------- token bucket

@dataclass(frozen=True)
class TokenBucket:
    """A bucket of `capacity` (= burst) tokens refilled at limit/period per second; a request takes `hits`
    tokens. Bursts up to the capacity pass at once. With a delay, the bucket may go into debt down to
    −max_delay·rate: the request waits until its tokens would have arrived. State: (tokens, last_time)."""

    rate: Rate
    name: str = "token_bucket"

    def _level(self, state: State, now: float) -> float:
        cap = self.rate.capacity
        if state is None:
            return float(cap)
        tokens, last = state
        return min(float(cap), tokens + max(0.0, now - last) * self.rate.per_second)

    def decide(self, state: State, now: float, hits: int = 1, *, force: bool = False,
               max_delay: float | None = None) -> tuple[State, Decision]:
        r, cap = self.rate.per_second, self.rate.capacity
        tokens = self._level(state, now)
        if tokens + EPS >= hits:
            tokens -= hits
            return (tokens, now), Decision(True, cap, _floor(tokens), (cap - tokens) / r)
        wait = (hits - tokens) / r
        if force:
            tokens = max(tokens - hits, -float(cap))
            return (tokens, now), Decision(True, cap, 0, (cap - tokens) / r)
        if max_delay is not None and wait <= max_delay + EPS and hits <= cap:
            tokens -= hits
            return (tokens, now), Decision(True, cap, 0, (cap - tokens) / r, 0.0, wait)
        if hits > cap:
            wait = math.inf
        elif max_delay is not None:
            wait -= max_delay  # until the queue is short enough to take this request
        return (tokens, now), Decision(False, cap, _floor(tokens), (cap - tokens) / r, wait)

    def expires(self, state: State) -> float:
        if state is None:
            return -math.inf
        tokens, last = state
        return last + (self.rate.capacity - tokens) / self.rate.per_second


# ---------------------------------------------------------------- leaky bucket as a meter

@dataclass(frozen=True)
class LeakyBucketMeter:
    """The leaky bucket as a meter: each request pours `hits` into a bucket of `capacity` that leaks at
    limit/period per second; a request that would overflow it is rejected. It admits exactly what a token
    bucket of the same rate and capacity admits (the level is capacity − tokens); it is here because teams
    name it, and its state reads as "how full". State: (level, last_time)."""

    rate: Rate
    name: str = "leaky_bucket"

    def _level(self, state: State, now: float) -> float:
        if state is None:
            return 0.0
        level, last = state
        return max(0.0, level - max(0.0, now - last) * self.rate.per_second)

    def decide(self, state: State, now: float, hits: int = 1, *, force: bool = False,
               max_delay: float | None = None) -> tuple[State, Decision]:
        r, cap = self.rate.per_second, self.rate.capacity
        level = self._level(state, now)
        if force or level + hits <= cap + EPS:
            level = min(level + hits, 2.0 * cap)
            return (level, now), Decision(True, cap, _floor(cap - level), level / r)
        retry = (level + hits - cap) / r if hits <= cap else math.inf
        return (level, now), Decision(False, cap, _floor(cap - level), level / r, retry)

    def expires(self, state: State) -> float:
        return -math.inf if state is None else state[1] + state[0] / self.rate.per_second


# ---------------------------------------------------------------- leaky bucket as a queue (shaper)

@dataclass(frozen=True)
class LeakyBucketQueue:
    """The leaky bucket as a queue: requests leave at a constant rate, one every period/limit, never in a
    burst. A request is scheduled at the queue's next free slot; it waits `delay` = slot − now, and is
    rejected when that wait exceeds `max_delay` (the queue is full: max_delay·rate requests). With
    max_delay None (strategy reject) only a request that finds the queue empty passes — a strict no-burst
    meter. State: (next_free_time,)."""

    rate: Rate
    name: str = "leaky_bucket_queue"

    def decide(self, state: State, now: float, hits: int = 1, *, force: bool = False,
               max_delay: float | None = None) -> tuple[State, Decision]:
        t, lim = self.rate.interval, self.rate.limit
        bound = max_delay or 0.0
        start = max(now, state[0] if state is not None else now)
        delay = start - now
        if force or delay <= bound + EPS:
            nxt = start + hits * t
            if force:
                nxt = min(nxt, now + bound + lim * t)
            return (nxt,), Decision(True, lim, self._free(nxt, now, bound), nxt - now, 0.0, delay)
        return (start,), Decision(False, lim, 0, start - now, delay - bound)

    def _free(self, nxt: float, now: float, bound: float) -> int:
        # slots still free in the queue: requests that could be scheduled within the bound
        return _floor((bound - (nxt - now)) / self.rate.interval + 1) if nxt - now <= bound + EPS else 0

    def expires(self, state: State) -> float:
        return -math.inf if state is None else state[0]


# ---------------------------------------------------------------- GCRA

@dataclass(frozen=True)
class GCRA:
    """Generic cell rate algorithm: one timestamp per key, the theoretical arrival time (TAT) of the next
    request at the steady rate. A request of `hits` is admitted if TAT + hits·T − now ≤ burst·T (T = period /
    limit). Same admissions as a token bucket with capacity = burst, in one number, and it yields the exact
    wait: with a delay the request is admitted at TAT + hits·T − burst·T and its slot is reserved.
    State: (tat,)."""

    rate: Rate
    name: str = "gcra"

    def decide(self, state: State, now: float, hits: int = 1, *, force: bool = False,
               max_delay: float | None = None) -> tuple[State, Decision]:
        t, cap = self.rate.interval, self.rate.capacity
        tat = max(state[0], now) if state is not None else now
        new_tat = tat + hits * t
        allow_at = new_tat - cap * t
        wait = allow_at - now
        if wait <= EPS or force or (max_delay is not None and wait <= max_delay + EPS and hits <= cap):
            if force:
                new_tat = min(new_tat, now + 2 * cap * t)
            delay = max(0.0, wait) if (max_delay is not None and not force) else 0.0
            remaining = _floor((cap * t - (new_tat - now)) / t)
            return (new_tat,), Decision(True, cap, remaining, new_tat - now, 0.0, delay)
        retry = math.inf if hits > cap else wait - (max_delay or 0.0)
        remaining = _floor((cap * t - (tat - now)) / t)
        return (tat,), Decision(False, cap, remaining, tat - now, retry)

    def expires(self, state: State) -> float:
        return -math.inf if state is None else state[0]


ALGORITHMS = ("fixed_window", "sliding_window", "sliding_log", "token_bucket", "leaky_bucket", "gcra")
SUPPORTS_DELAY = frozenset({"token_bucket", "leaky_bucket", "gcra"})


def make(name: str, rate: Rate, *, delay: bool = False) -> Algorithm:
    """The algorithm for an API name. `leaky_bucket` is the meter for strategy reject and the queue
    (shaper) for strategy delay."""
    if name == "fixed_window":
        return FixedWindow(rate)
    if name == "sliding_window":
        return SlidingWindow(rate)
    if name == "sliding_log":
        return SlidingLog(rate)
    if name == "token_bucket":
        return TokenBucket(rate)
    if name == "leaky_bucket":
        return LeakyBucketQueue(rate) if delay else LeakyBucketMeter(rate)
    if name == "leaky_bucket_queue":
        return LeakyBucketQueue(rate)
    if name == "gcra":
        return GCRA(rate)
    raise ValueError(f"unknown algorithm {name!r} (known: {', '.join(ALGORITHMS)})")
