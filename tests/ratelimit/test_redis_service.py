"""Two `mizzen ratelimit` processes on one real redis-server share each limit; Redis killed → each limit's
failureMode (counted, logged with what to do); Redis back → limits enforced again, recovery logged."""
import asyncio
import json
import shutil
import tempfile
import time
import urllib.request

import pytest

from .procs import RlsProcess, redis_server
from .rls_client import OK, OVER, Client

pytestmark = pytest.mark.timeout(120)

LIMITS = """
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: strict, namespace: t}
spec:
  host: api
  mode: global
  failureMode: deny
  limits:
  - {name: fw, requestsPerUnit: 10, unit: minute, algorithm: fixed_window}
  - {name: gc, requestsPerUnit: 6, unit: minute, burst: 6, algorithm: gcra}
  - {name: sl, requestsPerUnit: 5, unit: minute, algorithm: sliding_log}
---
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: lenient, namespace: t}
spec:
  host: api
  mode: global
  limits:
  - {name: tb, requestsPerUnit: 4, unit: minute, algorithm: token_bucket}
"""


def stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        return json.load(r)


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="mizzen-rl-")
    with open(f"{d}/limits.yaml", "w") as f:
        f.write(LIMITS)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_two_instances_share_counters_and_survive_a_redis_outage(workdir):
    with redis_server() as redis:
        a = RlsProcess(workdir, f"{workdir}/limits.yaml", backend=redis.url)
        b = RlsProcess(workdir, f"{workdir}/limits.yaml", backend=redis.url)
        a.start()
        b.start()
        try:
            async def shared():
                ca, cb = Client(f"127.0.0.1:{a.port}"), Client(f"127.0.0.1:{b.port}")
                try:
                    out = {}
                    for lim, n in (("t/strict/fw", 14), ("t/strict/gc", 10), ("t/strict/sl", 8), ("t/lenient/tb", 7)):
                        codes = await asyncio.gather(*(c.check(lim) for c in [ca, cb] * (n // 2)))
                        out[lim] = sum(r.overall_code == OK for r in codes)
                    return out
                finally:
                    await ca.close()
                    await cb.close()

            # each instance alone would admit up to the full limit: together they admit it once
            assert asyncio.run(shared()) == {"t/strict/fw": 10, "t/strict/gc": 6, "t/strict/sl": 5,
                                             "t/lenient/tb": 4}

            redis.stop()

            async def down():
                c = Client(f"127.0.0.1:{a.port}")
                try:
                    t0 = time.monotonic()
                    codes = [(await c.check("t/strict/fw")).overall_code, (await c.check("t/lenient/tb")).overall_code]
                    for _ in range(20):  # fast failure while down: no request waits for a connect timeout
                        await c.check("t/lenient/tb")
                    return codes, time.monotonic() - t0
                finally:
                    await c.close()

            codes, took = asyncio.run(down())
            assert codes == [OVER, OK]  # failureMode deny / allow (default)
            assert took < 5
            s = stats(a.admin_port)
            assert s["limits"]["t/strict/fw"]["failure_mode_denied"] >= 1
            assert s["limits"]["t/lenient/tb"]["failure_mode_allowed"] >= 21
            assert s["service"]["backend_errors"] >= 1 and s["service"]["backend_up"] == 0

            redis.start()  # same port, empty: counters start afresh

            async def back():
                c = Client(f"127.0.0.1:{a.port}")
                try:
                    deadline = time.monotonic() + 15
                    while (await c.check("t/strict/sl")).overall_code != OK:
                        assert time.monotonic() < deadline, "not recovered"
                        await asyncio.sleep(0.2)
                    return [(await c.check("t/strict/sl")).overall_code for _ in range(5)]
                finally:
                    await c.close()

            assert asyncio.run(back()) == [OK] * 4 + [OVER]
            assert stats(a.admin_port)["service"]["backend_up"] == 1
        finally:
            a.stop()
            b.stop()
    log = a.log()
    assert "cannot reach redis" in log and "start Redis or check --redis" in log
    assert "is back after" in log
