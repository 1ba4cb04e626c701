"""The Redis backend of the rate-limit service: every decision is one Lua script call (ratelimit/lua.py), atomic
in Redis, so any number of service instances on one Redis share each limit exactly.

Time comes from Redis (`TIME` inside the script): instances on different hosts agree on window boundaries
without synchronized clocks. When Redis cannot be reached the backend raises `BackendUnavailable` (the service
answers with each limit's failureMode), logs it once with what to do, and for `retry_interval` fails fast
instead of making every request wait for a connect timeout; then it tries again, and logs the recovery.

Batching (default on, `--no-redis-batch` turns it off): while MAX_INFLIGHT pipelines are on their way, the
decisions asked for meanwhile wait and go together as the next pipeline. Each script stays atomic on its own;
what a pipeline saves is the client's per-call cost and a round trip per decision. When a pipeline fails on a
connection error or timeout, the decisions queued behind it fail with it (failureMode at once).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Sequence

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, TimeoutError as RedisTimeoutError

from ..ratelimit.algorithms import Decision
from ..ratelimit.engine import BackendUnavailable, Check
from ..ratelimit.lua import SCRIPT

log = logging.getLogger("mizzen.ratelimit.redis")

KEY_PREFIX = "mzrl:"
MAX_INFLIGHT = 2  # Redis pipelines on their way at once (the batching below)


def _f(b: bytes | str) -> float:
    return float(b.decode() if isinstance(b, bytes) else b)


def redis_key(state_key: str) -> str:
    # {…}: a Redis Cluster hash tag, so a limit's counter and its class counters live in one slot
    head, sep, klass = state_key.partition("#class=")
    return f"{KEY_PREFIX}{{{head}}}" + (f":class={klass}" if sep else "")


class RedisCounters:
    def __init__(self, url: str, *, timeout: float = 0.1, retry_interval: float = 0.5,
                 clock: Callable[[], float] = time.monotonic, pool_size: int = 64, batch: bool = True):
        self.url = url
        self.retry_interval = retry_interval
        self.clock = clock
        self.client = aioredis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                        retry=Retry(NoBackoff(), 0), max_connections=pool_size)
        self._sha: str | None = None
        self._down_since: float | None = None
        self._retry_at = 0.0
        self.errors = 0
        self.on_state: Callable[[bool], None] | None = None
        # batching (Nagle-like, no timer): while MAX_INFLIGHT pipelines are on their way, decisions asked for
        # meanwhile wait and go as the next pipeline (one write, one read, one round trip for all of them). An
        # idle service sends at once; a busy one amortizes the Redis client's per-call cost over the batch.
        self.batch = batch
        self._inflight = 0
        self._pending: list[tuple[list[str], list[str], asyncio.Future]] = []
        self._tasks: set[asyncio.Task] = set()  # pipelines on their way (a reference, so none is collected)
        # unbatched, every decision takes a pooled connection: past pool_size the client raises "Too many
        # connections" (a ConnectionError: the backend would count as down); callers wait for one instead
        self._slots = asyncio.Semaphore(pool_size)
        self.batches = self.batched = 0  # pipelines sent, decisions in them (stats: mean batch size)

    @property
    def up(self) -> bool:
        return self._down_since is None

    def describe(self) -> str:
        return f"redis {self.url}"

    async def close(self) -> None:
        await self.client.aclose()

    def _args(self, c: Check, now: float | None) -> tuple[list[str], list[str]]:
        lim = c.limit
        assert lim is not None
        r = lim.rate
        keys = [redis_key(lim.state_key(c.counter_key))]
        args = [lim.state_kind, str(r.limit), repr(r.period), str(r.capacity), str(c.hits),
                "" if lim.max_delay is None else repr(lim.max_delay), "" if now is None else repr(now)]
        if lim.priority is None:
            args += ["0", "", ""]
        else:
            keys.append(redis_key(lim.state_key(c.counter_key, c.klass)))
            cr = lim.class_rate(c.klass or "")
            args += ["1", "" if cr is None else str(cr.limit), "" if cr is None else str(cr.capacity)]
        return keys, args

    async def _eval(self, keys: list[str], args: list[str]) -> list[bytes]:
        if self._sha is None:
            self._sha = await self.client.script_load(SCRIPT)
        try:
            return await self.client.evalsha(self._sha, len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted (scripts are not persisted): load again
            self._sha = await self.client.script_load(SCRIPT)
            return await self.client.evalsha(self._sha, len(keys), *keys, *args)

    def _submit(self, keys: list[str], args: list[str]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if not self._pending and self._inflight < MAX_INFLIGHT:
            loop.call_soon(self._flush)  # after every callback ready now: their decisions join this batch
        self._pending.append((keys, args, fut))
        return fut

    def _flush(self) -> None:
        if self._inflight >= MAX_INFLIGHT:
            return  # the pipeline on its way sends what waits when it is back
        batch, self._pending = self._pending, []
        if batch:
            self.batches += 1
            self.batched += len(batch)
            self._inflight += 1
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[list[str], list[str], asyncio.Future]]) -> None:
        try:
            results = await self._pipeline([(k, a) for k, a, _ in batch])
        except BaseException as e:  # noqa: BLE001 - every waiter gets the failure
            if isinstance(e, (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)):
                # Redis is unreachable or hangs: what queued behind this pipeline fails now (failureMode at
                # once) instead of waiting for a timeout of its own
                batch, self._pending = batch + self._pending, []
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        finally:
            self._inflight -= 1
            if self._pending:
                self._flush()
        for (_, _, fut), r in zip(batch, results):
            if not fut.done():
                fut.set_exception(r) if isinstance(r, Exception) else fut.set_result(r)

    async def _pipeline(self, calls: list[tuple[list[str], list[str]]]) -> list:
        if self._sha is None:
            self._sha = await self.client.script_load(SCRIPT)
        results: list = [None] * len(calls)
        todo = list(range(len(calls)))
        for _ in range(2):  # a second round after NOSCRIPT (Redis restarted: scripts are not persisted)
            pipe = self.client.pipeline(transaction=False)
            for i in todo:
                keys, args = calls[i]
                pipe.evalsha(self._sha, len(keys), *keys, *args)
            out = await pipe.execute(raise_on_error=False)
            again = []
            for i, r in zip(todo, out):
                if isinstance(r, NoScriptError):
                    again.append(i)
                else:
                    results[i] = r
            if not again:
                return results
            self._sha = await self.client.script_load(SCRIPT)
            todo = again
        for i in todo:  # still no script after loading it: an error for those calls, not a None result
            results[i] = NoScriptError("the rate-limit script vanished again after SCRIPT LOAD")
        return results

    async def _one(self, c: Check, now: float | None) -> Decision | None:
        if c.limit is None:
            return None
        if self.batch:
            res = await self._submit(*self._args(c, now))
        else:
            async with self._slots:
                res = await self._eval(*self._args(c, now))
        return Decision(res[0] in (b"1", "1"), c.limit.quota, int(res[1]), _f(res[2]), _f(res[3]), _f(res[4]))

    async def run(self, checks: Sequence[Check], now: float | None = None) -> list[Decision | None]:
        """Decide every check (one script call each, concurrently). `now` None: Redis's clock."""
        t = self.clock()
        if self._down_since is not None and t < self._retry_at:
            raise BackendUnavailable(f"{self.describe()} is down (retrying every {self.retry_interval:g} s)")
        try:
            out = await asyncio.gather(*(self._one(c, now) for c in checks))
        except (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError) as e:
            self.errors += 1
            self._retry_at = t + self.retry_interval
            if self._down_since is None:
                self._down_since = t
                log.error("cannot reach %s (%s: %s): answering with each limit's failureMode until it is back; "
                          "start Redis or check --redis", self.describe(), type(e).__name__, e)
                if self.on_state:
                    self.on_state(False)
            raise BackendUnavailable(str(e)) from None
        except RedisError as e:
            self.errors += 1
            log.error("%s rejected a rate-limit script: %s", self.describe(), e)
            raise BackendUnavailable(str(e)) from None
        if self._down_since is not None:
            log.warning("%s is back after %.1f s: enforcing limits again", self.describe(), t - self._down_since)
            self._down_since = None
            if self.on_state:
                self.on_state(True)
        return list(out)
