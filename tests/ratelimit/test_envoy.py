"""A real Envoy (static bootstrap: header_mutation → ratelimit → fault → router) calling `mizzen ratelimit`:
429s with draft-03 headers, Retry-After and the configured body; untouched routes; the delay strategy
shaping a burst through the fault filter; client-sent fault headers stripped; RLS down → failure mode."""
import asyncio
import shutil
import tempfile
import time

import aiohttp
import pytest

from .envoy_static import StaticEnvoy, route
from .procs import RlsProcess, engines

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

LIMITS = """
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: rl, namespace: t}
spec:
  host: app
  mode: global
  response: {body: "slow down\\n"}
  limits:
  - {name: tb, requestsPerUnit: 5, unit: second, algorithm: token_bucket}
  - {name: q, requestsPerUnit: 10, unit: second, algorithm: leaky_bucket, strategy: delay, maxDelay: 500ms}
"""


async def get(session, port, path, hdrs=None):
    t = time.monotonic()
    async with session.get(f"http://127.0.0.1:{port}{path}", headers=hdrs or {}) as r:
        body = await r.text()
        return r.status, time.monotonic() - t, {k.lower(): v for k, v in r.headers.items()}, body


@pytest.mark.parametrize("engine", engines())
def test_envoy_enforces_global_limits_with_headers_and_delay(engine):
    d = tempfile.mkdtemp(prefix="mizzen-rl-envoy-")
    with open(f"{d}/limits.yaml", "w") as f:
        f.write(LIMITS)
    rls = RlsProcess(d, f"{d}/limits.yaml", extra=["--engine", engine])
    envoy = None
    try:
        rls.start()
        envoy = StaticEnvoy(d, rls.port, [route("/tb", "t/rl/tb"), route("/q", "t/rl/q"), route("/free", None)])
        envoy.start()
        port = envoy.port

        async def go():
            async with aiohttp.ClientSession() as s:
                burst = await asyncio.gather(*(get(s, port, "/tb") for _ in range(20)))
                ok = [r for r in burst if r[0] == 200]
                limited = [r for r in burst if r[0] == 429]
                assert len(ok) == 5 and len(limited) == 15, [r[0] for r in burst]
                h = limited[0][2]
                assert h["x-ratelimit-limit"] == "5, 5;w=1" and h["x-ratelimit-remaining"] == "0"
                assert h["retry-after"] == "1" and "x-ratelimit-reset" in h
                assert limited[0][3] == "slow down\n"
                assert {r[2]["x-ratelimit-limit"] for r in ok} == {"5, 5;w=1"}  # on admitted responses too

                free = await asyncio.gather(*(get(s, port, "/free") for _ in range(20)))
                assert all(r[0] == 200 and "x-ratelimit-limit" not in r[2] for r in free)

                # a client cannot make Envoy delay (or abort) its own request: the fault headers are stripped
                r = await get(s, port, "/free", {"x-envoy-fault-delay-request": "3000"})
                assert r[0] == 200 and r[1] < 1.0 and "fault=None" in r[3]

                await asyncio.sleep(1.1)
                shaped = await asyncio.gather(*(get(s, port, "/q") for _ in range(9)))
                passed = sorted(r[1] for r in shaped if r[0] == 200)
                assert len(passed) == 6 and sum(r[0] == 429 for r in shaped) == 3
                # leaky-bucket queue: one request every 100 ms, none waits more than maxDelay
                for i, latency in enumerate(passed):
                    assert 0.1 * i - 0.02 <= latency <= 0.1 * i + 0.25, (i, passed)
                assert all("fault=None" in r[3] for r in shaped if r[0] == 200)  # the app never sees the header
        asyncio.run(go())
        stats = envoy.stats()
        assert stats["http.in.fault.delays_injected"] == 5 and stats["http.in.fault.faults_overflow"] == 0
        assert stats["cluster.app.ratelimit.over_limit"] == 18

        rls.stop()  # RLS gone: the filter's failure mode (allow here) lets requests through

        async def down():
            async with aiohttp.ClientSession() as s:
                return [(await get(s, port, "/tb"))[0] for _ in range(10)]
        assert asyncio.run(down()) == [200] * 10
        assert envoy.stats()["cluster.app.ratelimit.error"] >= 10
    finally:
        if envoy is not None:
            envoy.stop()
        rls.stop()
        shutil.rmtree(d, ignore_errors=True)


def _shaped_burst(delay_mode: str, max_active_faults: int, rls_timeout: str):
    d = tempfile.mkdtemp(prefix="mizzen-rl-envoy-")
    with open(f"{d}/limits.yaml", "w") as f:
        f.write(LIMITS)
    rls = RlsProcess(d, f"{d}/limits.yaml", extra=["--delay-mode", delay_mode])
    envoy = None
    try:
        rls.start()
        envoy = StaticEnvoy(d, rls.port, [route("/q", "t/rl/q")], max_active_faults=max_active_faults,
                            rls_timeout=rls_timeout)
        envoy.start()

        async def go():
            async with aiohttp.ClientSession() as s:
                return await asyncio.gather(*(get(s, envoy.port, "/q") for _ in range(9)))
        shaped = asyncio.run(go())
        return shaped, envoy.stats()
    finally:
        if envoy is not None:
            envoy.stop()
        rls.stop()
        shutil.rmtree(d, ignore_errors=True)


def test_hold_mode_shapes_without_the_fault_filter():
    """--delay-mode hold: the RLS answers late instead; the filter's timeout must exceed maxDelay."""
    shaped, stats = _shaped_burst("hold", 100, "2s")
    passed = sorted(r[1] for r in shaped if r[0] == 200)
    assert len(passed) == 6 and sum(r[0] == 429 for r in shaped) == 3
    for i, latency in enumerate(passed):
        assert 0.1 * i - 0.02 <= latency <= 0.1 * i + 0.25, (i, passed)
    assert stats["http.in.fault.delays_injected"] == 0


def test_max_active_faults_is_not_a_queue_bound():
    """What Envoy does when more delays are active than max_active_faults: it forwards the request at once
    (counted as faults_overflow) instead of rejecting it — so the RLS's maxDelay must bound the queue."""
    shaped, stats = _shaped_burst("header", 1, "1s")
    passed = [r for r in shaped if r[0] == 200]
    assert len(passed) == 6 and stats["http.in.fault.faults_overflow"] >= 3
    asked = [(int(r[2]["x-mizzen-ratelimit-delay-ms"]), r[1]) for r in passed if "x-mizzen-ratelimit-delay-ms" in r[2]]
    assert any(ms >= 300 and took < 0.2 for ms, took in asked), asked  # asked to wait, was not delayed
