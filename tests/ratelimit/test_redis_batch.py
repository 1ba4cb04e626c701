"""The Redis backend's batching against a real redis-server: concurrent decisions share pipelines and still
admit a limit exactly once; a script flushed from Redis is reloaded inside a pipeline; decisions queued behind
a pipeline to a hung Redis fail with it (failureMode at once) and the backend recovers when Redis resumes."""
import asyncio
import os
import signal

import pytest
import redis

from mizzen.api import load_text
from mizzen.ratelimit.engine import BackendUnavailable, plan
from mizzen.ratelimit.table import build_table
from mizzen.server.ratelimit_redis import RedisCounters

from .procs import redis_server

pytestmark = pytest.mark.timeout(60)

LIMITS = """
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: b, namespace: t}
spec:
  host: svc
  mode: global
  limits:
  - {name: tb, requestsPerUnit: 100, unit: minute, algorithm: token_bucket}
  - {name: fw, requestsPerUnit: 40, unit: minute, algorithm: fixed_window}
"""
NOW = 2_000_000.0


def _checks(name: str):
    return plan(build_table(load_text(LIMITS).resources), "mizzen", [([("mizzen_limit", f"t/b/{name}")], None)])


async def _admitted(backend: RedisCounters, name: str, n: int) -> int:
    checks = _checks(name)
    out = await asyncio.gather(*(backend.run(checks, NOW) for _ in range(n)))
    return sum(d.allowed for (d,) in out)


@pytest.mark.parametrize("batch", [True, False])
def test_concurrent_decisions_admit_the_limit_exactly_once(batch):
    async def go(url):
        b = RedisCounters(url, timeout=2.0, batch=batch)
        try:
            return await _admitted(b, "tb", 300), await _admitted(b, "fw", 100), b.batches, b.batched
        finally:
            await b.close()

    with redis_server() as srv:
        tb, fw, batches, batched = asyncio.run(go(srv.url))
    assert (tb, fw) == (100, 40)
    if batch:
        assert batched == 400 and batches < batched / 10  # most decisions shared a pipeline
    else:
        assert batches == 0


def test_a_flushed_script_is_reloaded_inside_a_pipeline():
    async def go(url):
        b = RedisCounters(url, timeout=2.0)
        try:
            first = await _admitted(b, "fw", 10)
            redis.Redis.from_url(url).script_flush()  # what a Redis restart does to the script cache
            return first, await _admitted(b, "fw", 50)
        finally:
            await b.close()

    with redis_server() as srv:
        assert asyncio.run(go(srv.url)) == (10, 30)


def test_decisions_queued_behind_a_hung_redis_fail_with_it_and_recover():
    async def go(srv):
        b = RedisCounters(srv.url, timeout=0.3, retry_interval=0.2)
        checks = _checks("tb")
        try:
            assert await _admitted(b, "tb", 5) == 5
            sent = b.batches
            os.kill(srv.proc.pid, signal.SIGSTOP)  # hung, not dead: the connection stays open, nothing answers
            try:
                tasks = [asyncio.create_task(b.run(checks, NOW))]
                await asyncio.sleep(0.02)
                tasks.append(asyncio.create_task(b.run(checks, NOW)))
                await asyncio.sleep(0.02)  # two pipelines on their way: what comes now waits behind them
                tasks += [asyncio.create_task(b.run(checks, NOW)) for _ in range(20)]
                results = await asyncio.gather(*tasks, return_exceptions=True)
                assert all(isinstance(r, BackendUnavailable) for r in results), results
                hung_pipelines = b.batches - sent
                assert not b.up
                with pytest.raises(BackendUnavailable):  # fails fast while down
                    await b.run(checks, NOW)
            finally:
                os.kill(srv.proc.pid, signal.SIGCONT)
            await asyncio.sleep(0.3)  # past retry_interval
            (d,) = await b.run(checks, NOW)
            return hung_pipelines, d.allowed, b.up
        finally:
            await b.close()

    with redis_server() as srv:
        hung_pipelines, allowed, up = asyncio.run(go(srv))
    # the 20 queued decisions were never sent to the hung Redis: they failed with the pipelines ahead of them
    assert hung_pipelines == 2
    assert allowed and up
