"""The Lua scripts decide exactly what the Python algorithms decide: the same random request sequences (times,
hits, keys) go to the in-memory counters and to a real redis-server, with the same clock, and every
decision is compared."""
import asyncio
import random
import zlib

import pytest

from mizzen.ratelimit.engine import plan
from mizzen.ratelimit.memory import MemoryCounters
from mizzen.ratelimit.table import build_table
from mizzen.api import load_text
from mizzen.server.ratelimit_redis import RedisCounters

from .procs import redis_server

LIMITS = """
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: p, namespace: t}
spec:
  host: svc
  mode: global
  limits:
  - {name: fw, requestsPerUnit: 5, unit: second, algorithm: fixed_window, key: [{header: u}]}
  - {name: sw, requestsPerUnit: 7, unit: second, algorithm: sliding_window, key: [{header: u}]}
  - {name: sl, requestsPerUnit: 6, unit: second, algorithm: sliding_log, key: [{header: u}]}
  - {name: tb, requestsPerUnit: 4, unit: second, burst: 6, algorithm: token_bucket, key: [{header: u}]}
  - {name: tbd, rate: 8, burst: 2, algorithm: token_bucket, strategy: delay, maxDelay: 300ms}
  - {name: lb, requestsPerUnit: 5, unit: second, burst: 3, algorithm: leaky_bucket}
  - {name: lq, requestsPerUnit: 10, unit: second, algorithm: leaky_bucket, strategy: delay, maxDelay: 400ms}
  - {name: gc, requestsPerUnit: 6, unit: second, burst: 3, algorithm: gcra, key: [{header: u}]}
  - {name: gcd, rate: 5, burst: 2, algorithm: gcra, strategy: delay, maxDelay: 500ms}
  - name: pr
    requestsPerUnit: 10
    unit: second
    algorithm: token_bucket
    priority: {header: x-tier, classes: {gold: 70, bronze: 20}}
  - name: prg
    requestsPerUnit: 10
    unit: second
    algorithm: gcra
    priority: {header: x-tier, classes: {gold: 60}}
  - name: prw
    requestsPerUnit: 10
    unit: second
    algorithm: sliding_window
    priority: {header: x-tier, classes: {gold: 50, bronze: 50}}
"""


def _sequence(seed: int, n: int = 150, speed: float = 1.0):
    rnd = random.Random(seed)
    t = 1_000_000.0 + rnd.random()
    for _ in range(n):
        t += rnd.choice([0.0, 0.0, 0.01, 0.05, 0.13, 0.3, 0.7, 1.1]) / speed
        yield t, rnd.choice([1, 1, 1, 2, 3]), rnd.choice(["a", "b"]), rnd.choice(["gold", "bronze", "", "x"])


@pytest.mark.parametrize("name", ["fw", "sw", "sl", "tb", "tbd", "lb", "lq", "gc", "gcd", "pr", "prg", "prw"])
def test_lua_matches_python(name):
    table = build_table(load_text(LIMITS).resources)
    lid = f"t/p/{name}"

    async def go(url):
        redis = RedisCounters(url, timeout=2.0)
        mem = MemoryCounters()
        mismatches, admitted = [], 0
        try:
            for i, (now, hits, user, tier) in enumerate(_sequence(zlib.crc32(name.encode()), speed=5.0 if name.startswith("pr") else 1.0)):
                entries = [("mizzen_limit", lid), ("header:u", user)]
                if tier:
                    entries.append(("mizzen_class", tier))
                checks = plan(table, "mizzen", [(entries, hits)])
                (m,) = mem.run(checks, now)
                (r,) = await redis.run(checks, now)
                admitted += m.allowed
                same = (m.allowed, m.remaining, m.limit) == (r.allowed, r.remaining, r.limit) and all(
                    (a == b) or abs(a - b) < 1e-6 for a, b in ((m.reset_after, r.reset_after),
                                                               (m.retry_after, r.retry_after), (m.delay, r.delay)))
                if not same:
                    mismatches.append((i, now, hits, user, tier, m, r))
        finally:
            await redis.close()
        return mismatches, admitted

    with redis_server() as srv:
        mismatches, admitted = asyncio.run(go(srv.url))
    assert not mismatches, mismatches[:3]
    assert 0 < admitted < 150  # the sequence exercised both outcomes
