"""The decision engine of the rate-limit service, without I/O: plan the checks of one request, and turn the
backend's decisions into the answer (code per descriptor, headers, delay, body).

    checks = plan(table, domain, descriptors, hits)       # pure
    decisions = await backend.run(checks)                  # memory (memory.py) or Redis (server/)
    answer = respond(checks, decisions)                    # pure

Headers follow draft-polli-ratelimit-headers-03, from the most restrictive enforced limit of the request:
`X-RateLimit-Limit: <quota>, <quota>;w=<window s>`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (seconds,
rounded up), and `Retry-After` (seconds, rounded up, ≥ 1) on a rejection. They go to the response both when
admitted and when rejected. Shadow limits are counted and reported in stats but never reject nor set headers.
A delayed request carries `x-envoy-fault-delay-request: <ms>` (the fault filter after the rate-limit filter
waits that long; see docs/ratelimit.md) and its response `x-mizzen-ratelimit-delay-ms`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from .algorithms import Decision
from .table import DOMAIN, LIMIT_ENTRY, CompiledLimit, LimitTable

DELAY_HEADER = "x-envoy-fault-delay-request"
DELAY_RESPONSE_HEADER = "x-mizzen-ratelimit-delay-ms"
NEAR_LIMIT_RATIO = 0.8


class BackendUnavailable(Exception):
    """The counters cannot be reached (e.g. Redis down): answer with each limit's failureMode."""


@dataclass(frozen=True)
class Check:
    index: int  # the descriptor's position in the request
    limit: CompiledLimit | None  # None: unknown descriptor, answered OK
    counter_key: str = ""
    hits: int = 1
    klass: str | None = None  # priority class


@dataclass(frozen=True)
class Status:
    over: bool
    limit: CompiledLimit | None
    decision: Decision | None


@dataclass
class Answer:
    ok: bool
    statuses: list[Status]
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0
    body: str | None = None
    status: int = 429  # HTTP status a rejection should get (the sidecar's filter is configured with it)


def plan(table: LimitTable, domain: str, descriptors: Sequence[tuple[Sequence[tuple[str, str]], int | None]],
         hits_addend: int = 0) -> list[Check]:
    """`descriptors`: (entries, descriptor hits_addend or None) per descriptor, as Envoy sent them."""
    default_hits = hits_addend or 1
    out: list[Check] = []
    for i, (entries, d_hits) in enumerate(descriptors):
        kv = dict(entries)
        lim = table.get(kv.get(LIMIT_ENTRY, "")) if domain == DOMAIN else None
        hits = default_hits if d_hits is None else d_hits
        if lim is None:
            out.append(Check(i, None, hits=hits))
            continue
        out.append(Check(i, lim, lim.counter_key(kv), hits, lim.class_of(kv)))
    return out


def _ceil_s(x: float) -> int:
    return 0 if x <= 0 else int(math.ceil(x - 1e-9))


def window_seconds(lim: CompiledLimit) -> int:
    return max(1, int(round(lim.rate.period)))


def respond(checks: Sequence[Check], decisions: Sequence[Decision | None]) -> Answer:
    """`decisions[i]` None: no limit for check i (unknown descriptor) or a failure-mode answer (see fail)."""
    statuses: list[Status] = []
    worst: tuple[CompiledLimit, Decision] | None = None
    over: list[tuple[CompiledLimit, Decision]] = []
    delay = 0.0
    for c, d in zip(checks, decisions):
        if c.limit is None or d is None:
            statuses.append(Status(False, c.limit, d))
            continue
        rejected = not d.allowed and not c.limit.shadow
        statuses.append(Status(rejected, c.limit, d))
        if c.limit.shadow:
            continue
        if rejected:
            over.append((c.limit, d))
        else:
            delay = max(delay, d.delay)
        if worst is None or d.remaining < worst[1].remaining:
            worst = (c.limit, d)
    ans = Answer(ok=not over, statuses=statuses)
    if over:
        lim, dec = max(over, key=lambda ld: ld[1].retry_after)
        worst = (lim, dec)
        ans.status, ans.body = lim.status, lim.body
        retry = dec.retry_after
        ans.response_headers.append(("retry-after", str(max(1, _ceil_s(retry)) if math.isfinite(retry) else 86400)))
    if worst is not None:
        lim, dec = worst
        ans.response_headers[:0] = [
            ("x-ratelimit-limit", f"{dec.limit}, {dec.limit};w={window_seconds(lim)}"),
            ("x-ratelimit-remaining", str(max(0, dec.remaining))),
            ("x-ratelimit-reset", str(_ceil_s(dec.reset_after))),
        ]
    if ans.ok and delay > 0:
        ms = max(1, int(math.ceil(delay * 1000 - 1e-6)))
        ans.delay = delay
        ans.request_headers.append((DELAY_HEADER, str(ms)))
        ans.response_headers.append((DELAY_RESPONSE_HEADER, str(ms)))
    return ans


def fail(checks: Sequence[Check]) -> Answer:
    """The answer when the backend cannot be reached: each limit's failureMode decides (allow: OK, deny:
    over limit). Unknown descriptors stay OK."""
    statuses = [Status(c.limit is not None and c.limit.failure_mode == "deny" and not c.limit.shadow, c.limit, None)
                for c in checks]
    denied = [s for s in statuses if s.over]
    ans = Answer(ok=not denied, statuses=statuses)
    if denied:
        lim = denied[0].limit
        assert lim is not None
        ans.status, ans.body = lim.status, lim.body
        ans.response_headers.append(("retry-after", "1"))
    return ans


def is_near(d: Decision) -> bool:
    return d.allowed and d.remaining < d.limit * (1 - NEAR_LIMIT_RATIO)
