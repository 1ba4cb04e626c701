"""The native rate-limit service (native/rls, `mizzen ratelimit --engine native`) as real processes over real gRPC:
the same scripted requests sent to the Python engine and to the native one give the same answers; the
supervisor reloads, restarts a killed binary and refuses what the native engine does not support; a real Envoy
enforces a global limit through it.

Clock-robustness of the differential test: every request goes to the Python service and then at once to the
native one (the two clocks read ~1 ms apart), and the limits are slow (a few per hour, one per 10 s for the
queues), so no admission, remaining count or status can change in that millisecond. What does move with the
clock is compared within a tolerance: X-RateLimit-Reset and Retry-After (whole seconds, rounded up) within 1,
durations until reset within 1 s, delays (ms) within 100 ms. A run that straddles an hour boundary (the fixed
windows turn over between the two services) is retried once."""
import asyncio
import os
import signal
import time

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from mizzen.server import ratelimit_native

from .procs import admin, RlsProcess, wait_port
from .rls_client import OK, OVER, Client, headers

EXE, WHY = ratelimit_native.binary()
pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(EXE is None, reason=f"native RLS not built: {WHY}")]

LIMITS = """
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: rl, namespace: t}
spec:
  host: api
  mode: global
  response: {status: 429, body: "too many requests"}
  limits:
  - {name: fw, requestsPerUnit: 3, unit: hour, algorithm: fixed_window, key: [{header: x-user}]}
  - {name: sw, requestsPerUnit: 3, unit: hour, algorithm: sliding_window, key: [{header: x-user}]}
  - {name: sl, requestsPerUnit: 3, unit: hour, algorithm: sliding_log, key: [{header: x-user}, path]}
  - {name: tb, requestsPerUnit: 3, unit: hour, burst: 4, algorithm: token_bucket, key: [{header: x-user}, {value: c}]}
  - {name: lb, requestsPerUnit: 3, unit: hour, algorithm: leaky_bucket}
  - {name: gc, requestsPerUnit: 3, unit: day, burst: 2, algorithm: gcra, key: [{query: q}]}
  - {name: sh, requestsPerUnit: 1, unit: hour, algorithm: fixed_window, shadow: true}
  - {name: q, rate: 0.1, algorithm: leaky_bucket, strategy: delay, maxDelay: 35s}
  - {name: tbd, rate: 0.1, burst: 1, algorithm: token_bucket, strategy: delay, maxDelay: 25s}
  - {name: gcd, rate: 0.1, burst: 2, algorithm: gcra, strategy: delay, maxDelay: 25s}
"""

PRIORITY = """
---
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: pr, namespace: t}
spec:
  host: api
  mode: global
  limits:
  - {name: p, rate: 5, priority: {header: x-tier, classes: {gold: 70, bronze: 30}}}
"""


def req(*descs, hits: int = 0, domain: str = "mizzen") -> rls_pb2.RateLimitRequest:
    """descs: (limit or None, [(key, value)...], descriptor hits or None)."""
    out = rls_pb2.RateLimitRequest(domain=domain, hits_addend=hits)
    for lim, entries, dh in descs:
        pairs = ([("mizzen_limit", lim)] if lim else []) + list(entries)
        d = ratelimit_pb2.RateLimitDescriptor(entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v)
                                                       for k, v in pairs])
        if dh is not None:
            d.hits_addend.value = dh
        out.descriptors.append(d)
    return out


def one(lim, entries=(), dh=None, **kw):
    return req((lim, entries, dh), **kw)


def script() -> list[rls_pb2.RateLimitRequest]:
    u = lambda name: [("header:x-user", name)]  # noqa: E731
    s = []
    s += [one("t/rl/fw", u("ann")) for _ in range(4)] + [one("t/rl/fw", u("bob"))]
    s += [one("t/rl/sw", u("ann"), hits=2), one("t/rl/sw", u("ann"), dh=2), one("t/rl/sw", u("ann")),
          one("t/rl/sw", u("cy"), dh=5)]  # more than the limit: never admitted (Retry-After 86400)
    s += [one("t/rl/sl", u("ann") + [("path", "/a")]) for _ in range(4)] + [one("t/rl/sl", u("ann") + [("path", "/b")])]
    s += [one("t/rl/tb", u("ann")) for _ in range(5)] + [one("t/rl/tb", u("dee"), dh=4), one("t/rl/tb", u("dee"))]
    s += [one("t/rl/lb") for _ in range(4)] + [one("t/rl/lb", dh=0)]
    s += [one("t/rl/gc", [("query:q", "x")]) for _ in range(3)] + [one("t/rl/gc")]
    s += [one("t/rl/sh") for _ in range(3)]
    # unknown descriptors: another limit name, no limit entry, another domain
    s += [one("t/other/x"), one(None, [("foo", "bar")]), one("t/rl/fw", u("eve"), domain="other")]
    # several descriptors: the most restrictive limit sets the headers; one over rejects the whole request
    s += [req(("t/rl/fw", u("fay"), None), ("t/rl/tb", u("fay"), None), ("t/rl/sh", [], None)),
          req(("t/rl/gc", [("query:q", "y")], None), ("t/rl/fw", u("ann"), None), ("t/other/y", [], None)),
          req(("t/rl/sw", u("gus"), 3), ("t/rl/sl", u("gus"), 2))]
    # key values that need escaping in counter keys, and a repeated entry (the last one counts)
    s += [one("t/rl/fw", u("a|b")), one("t/rl/fw", u("a\\|b")), one("t/rl/fw", u("a|b")),
          one("t/rl/fw", [("header:x-user", "ignored"), ("header:x-user", "hal")])]
    # delay: a queue, a token bucket and a GCRA that can wait up to maxDelay
    s += [one("t/rl/q") for _ in range(6)] + [one("t/rl/tbd") for _ in range(5)] + [one("t/rl/gcd") for _ in range(6)]
    s += [one("t/rl/gcd", dh=3), one("t/rl/q", dh=2)]
    return s


TOLERANCE = {"x-ratelimit-reset": 1, "retry-after": 1, "x-envoy-fault-delay-request": 100,
             "x-mizzen-ratelimit-delay-ms": 100}


def compare(i: int, a: rls_pb2.RateLimitResponse, b: rls_pb2.RateLimitResponse) -> None:
    where = f"request {i}:\npython {a}\nnative {b}"
    assert a.overall_code == b.overall_code, where
    assert a.raw_body == b.raw_body, where
    assert len(a.statuses) == len(b.statuses), where
    for sa, sb in zip(a.statuses, b.statuses):
        assert (sa.code, sa.current_limit, sa.limit_remaining, sa.HasField("duration_until_reset")) == \
               (sb.code, sb.current_limit, sb.limit_remaining, sb.HasField("duration_until_reset")), where
        da = sa.duration_until_reset.ToNanoseconds() / 1e9
        db = sb.duration_until_reset.ToNanoseconds() / 1e9
        assert abs(da - db) <= 1.0, where
    for ha, hb in ((a.response_headers_to_add, b.response_headers_to_add),
                   (a.request_headers_to_add, b.request_headers_to_add)):
        assert [h.key for h in ha] == [h.key for h in hb], where
        for x, y in zip(ha, hb):
            tol = TOLERANCE.get(x.key)
            if tol is None:
                assert x.value == y.value, where
            else:
                assert abs(int(x.value) - int(y.value)) <= tol, where




def _differential_run(workdir: str) -> tuple[list, list, dict, dict]:
    path = f"{workdir}/limits.yaml"
    with open(path, "w") as f:
        f.write(LIMITS)
    py = RlsProcess(workdir, path, extra=["--engine", "python"])
    nat = RlsProcess(workdir, path, extra=["--engine", "native"])
    try:
        py.start()
        nat.start()

        async def go():
            chans = [grpc.aio.insecure_channel(f"127.0.0.1:{p.port}") for p in (py, nat)]
            stubs = [rls_pb2_grpc.RateLimitServiceStub(c) for c in chans]
            try:
                for s in stubs:  # connected before the script starts
                    await s.ShouldRateLimit(one("t/warm/up"), timeout=10)
                out = ([], [])
                for r in script():
                    for k, s in enumerate(stubs):
                        out[k].append(await s.ShouldRateLimit(r, timeout=5))
                return out
            finally:
                for c in chans:
                    await c.close()
        a, b = asyncio.run(go())
        return a, b, admin(py.admin_port, "/stats"), admin(nat.admin_port, "/stats")
    finally:
        py.stop()
        nat.stop()


def test_native_answers_like_the_python_engine(workdir):
    for attempt in range(2):
        hour = int(time.time() // 3600)
        a, b, sa, sb = _differential_run(workdir)
        if int(time.time() // 3600) == hour:
            break
    for i, (x, y) in enumerate(zip(a, b)):
        compare(i, x, y)
    # the script covers what it says it does
    codes = [x.overall_code for x in a]
    assert codes.count(OVER) >= 10 and codes.count(OK) >= 30, codes
    assert any(h.key == "retry-after" and h.value == "86400" for x in a for h in x.response_headers_to_add)
    assert sum(any(h.key == "x-envoy-fault-delay-request" for h in x.request_headers_to_add) for x in a) == 7
    # same counters on /stats (delay_seconds moves with the clock: within 1 s)
    for k in ("requests", "unknown_descriptors"):
        assert sa["service"][k] == sb["service"][k], (sa, sb)
    assert sa["limits"].keys() == sb["limits"].keys()
    for lid, m in sa["limits"].items():
        n = sb["limits"][lid]
        assert abs(m.pop("delay_seconds") - n.pop("delay_seconds")) < 1.0
        assert m == n, (lid, m, n)


PARITY = """
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: p, namespace: t}
spec:
  host: svc
  mode: global
  response: {body: "no"}
  limits:
  - {name: fw, requestsPerUnit: 5, unit: second, algorithm: fixed_window, key: [{header: u}]}
  - {name: sw, requestsPerUnit: 7, unit: second, algorithm: sliding_window, key: [{header: u}]}
  - {name: sl, requestsPerUnit: 6, unit: second, algorithm: sliding_log, key: [{header: u}, path]}
  - {name: tb, requestsPerUnit: 4, unit: second, burst: 6, algorithm: token_bucket, key: [{header: u}, {value: k}]}
  - {name: tbd, rate: 8, burst: 2, algorithm: token_bucket, strategy: delay, maxDelay: 300ms}
  - {name: lb, requestsPerUnit: 5, unit: second, burst: 3, algorithm: leaky_bucket}
  - {name: lq, requestsPerUnit: 10, unit: second, algorithm: leaky_bucket, strategy: delay, maxDelay: 400ms}
  - {name: gc, requestsPerUnit: 6, unit: second, burst: 3, algorithm: gcra, key: [{query: q}]}
  - {name: gcd, rate: 5, burst: 2, algorithm: gcra, strategy: delay, maxDelay: 500ms}
  - {name: slow, rate: 0.3, algorithm: gcra}
  - {name: sh, requestsPerUnit: 2, unit: second, algorithm: fixed_window, shadow: true}
"""


def _parity_requests(seed: int, n: int, speed: float = 1.0):
    """(now, request) pairs: random limits, keys, hits (request and descriptor level), several descriptors,
    unknown ones, time steps from 0 to 2.3 s (windows turn over, buckets refill, queues drain)."""
    import random

    rnd = random.Random(seed)
    names = ["fw", "sw", "sl", "tb", "tbd", "lb", "lq", "gc", "gcd", "slow", "sh"]
    t = 1_800_000_000.0 + rnd.random()
    for _ in range(n):
        t += rnd.choice([0.0, 0.0, 0.001, 0.01, 0.05, 0.13, 0.3, 0.7, 1.1, 2.3]) / speed
        descs = []
        for _ in range(rnd.choice([1, 1, 1, 2, 3])):
            name = rnd.choice(names + ["nope"])
            entries = [("header:u", rnd.choice(["a", "b", "a|b", ""])), ("path", rnd.choice(["/x", "/y"])),
                       ("query:q", rnd.choice(["1", "2"]))]
            rnd.shuffle(entries)
            descs.append((f"t/p/{name}", entries[:rnd.randint(0, 3)], rnd.choice([None, None, None, 0, 1, 2, 4, 9])))
        yield t, req(*descs, hits=rnd.choice([0, 0, 0, 1, 2, 3]), domain=rnd.choice(["mizzen"] * 9 + ["other"]))


def test_native_engine_answers_byte_for_byte_like_python_on_the_same_clock(workdir):
    """No tolerance: the binary's --replay mode takes the clock from its input, so the same random request
    sequence at the same times gives the Python engine's exact response bytes (wire.encode_response)."""
    import subprocess

    from mizzen.api import load_text
    from mizzen.ratelimit import engine, wire
    from mizzen.ratelimit.memory import MemoryCounters
    from mizzen.ratelimit.table import build_table

    table = build_table(load_text(PARITY).resources)
    ratelimit_native.write_table(f"{workdir}/table.json", table)
    delayed = 0
    for seed in range(6):
        reqs = list(_parity_requests(seed, 400, speed=(1.0, 8.0)[seed % 2]))
        mem = MemoryCounters()
        expected = []
        for now, r in reqs:
            descs = [([(e.key, e.value) for e in d.entries], d.hits_addend.value if d.HasField("hits_addend") else None)
                     for d in r.descriptors]
            checks = engine.plan(table, r.domain, descs, r.hits_addend)
            expected.append(wire.encode_response(engine.respond(checks, mem.run(checks, now))))
        lines = "".join(f"{now!r} {r.SerializeToString().hex()}\n" for now, r in reqs)
        out = subprocess.run([EXE, "--replay", "--table", f"{workdir}/table.json"], input=lines, capture_output=True,
                             text=True, timeout=60, check=True).stdout.split()
        assert len(out) == len(reqs)
        for i, (want, got) in enumerate(zip(expected, out)):
            assert got == want.hex(), (seed, i, reqs[i], rls_pb2.RateLimitResponse.FromString(want),
                                       rls_pb2.RateLimitResponse.FromString(bytes.fromhex(got)))
        answers = [rls_pb2.RateLimitResponse.FromString(x) for x in expected]
        assert sum(a.overall_code == OVER for a in answers) > 40 and sum(a.overall_code == OK for a in answers) > 100
        delayed += sum(any(h.key == "x-envoy-fault-delay-request" for h in a.request_headers_to_add) for a in answers)
    assert delayed > 20


def test_supervisor_reloads_restarts_and_refuses(workdir):
    path = f"{workdir}/limits.yaml"
    with open(path, "w") as f:
        f.write(LIMITS)
    nat = RlsProcess(workdir, path, extra=["--engine", "native"])
    try:
        nat.start()
        h = admin(nat.admin_port, "/healthz")
        assert h["engine"] == "native" and h["ready"] and h["limits"] == 10

        async def ask(limit="t/rl/fw", user="zed"):
            c = Client(f"127.0.0.1:{nat.port}")
            try:
                return await c.check(limit, [("header:x-user", user)])
            finally:
                await c.close()

        assert asyncio.run(ask()).overall_code == OK
        # reload: a changed file reaches the binary (SIGHUP) without a restart
        with open(path, "w") as f:
            f.write(LIMITS.replace("{name: fw, requestsPerUnit: 3", "{name: fw, requestsPerUnit: 7"))
        deadline = time.monotonic() + 10
        while headers(asyncio.run(ask(user="yan")))["x-ratelimit-limit"] != "7, 7;w=3600":
            assert time.monotonic() < deadline, nat.log()
            time.sleep(0.2)
        assert admin(nat.admin_port, "/healthz")["pid"] == h["pid"]

        # a table the native engine cannot serve (priority classes) is refused, the last one kept
        with open(path, "w") as f:
            f.write(LIMITS + PRIORITY)
        deadline = time.monotonic() + 10
        while "refused" not in admin(nat.admin_port, "/healthz"):
            assert time.monotonic() < deadline, nat.log()
            time.sleep(0.2)
        assert "t/pr/p: priority classes" in admin(nat.admin_port, "/healthz")["refused"]
        assert headers(asyncio.run(ask(user="xi")))["x-ratelimit-limit"] == "7, 7;w=3600"

        # the binary dies: restarted, with the reason logged
        os.kill(h["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 15
        while True:
            try:
                hh = admin(nat.admin_port, "/healthz")
                if hh["ready"] and hh["pid"] != h["pid"]:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, nat.log()
            time.sleep(0.2)
        assert hh["restarts"] == 1
        assert asyncio.run(ask(user="wu")).overall_code == OK
        assert "exited (killed by signal 9); restarting" in nat.log()
    finally:
        nat.stop()
    # the binary went with its supervisor
    with pytest.raises(ProcessLookupError):
        os.kill(hh["pid"], 0)


def test_auto_uses_python_for_what_native_does_not_support(workdir):
    path = f"{workdir}/limits.yaml"
    with open(path, "w") as f:
        f.write(LIMITS + PRIORITY)
    auto = RlsProcess(workdir, path, extra=["--engine", "auto"])
    try:
        try:
            auto.start()
        except RuntimeError:
            raise AssertionError(auto.log())
        assert "engine" not in admin(auto.admin_port, "/healthz")  # the Python engine's admin
        assert "using the Python engine (the native engine does not support t/pr/p: priority classes)" in auto.log()
    finally:
        auto.stop()
    nat = RlsProcess(workdir, path, extra=["--engine", "native"])
    with pytest.raises(RuntimeError, match="exited"):
        nat.start()
    nat.stop()
    assert "does not support t/pr/p: priority classes" in nat.log()


def test_auto_switches_to_python_when_a_reload_needs_it(workdir):
    path = f"{workdir}/limits.yaml"
    with open(path, "w") as f:
        f.write(LIMITS)
    auto = RlsProcess(workdir, path, extra=["--engine", "auto"])
    try:
        auto.start()
        assert admin(auto.admin_port, "/healthz")["engine"] == "native"
        with open(path, "w") as f:
            f.write(LIMITS + PRIORITY)
        deadline = time.monotonic() + 20
        while True:  # the same process (pid) re-executes itself with --engine python
            try:
                h = admin(auto.admin_port, "/healthz")
                if "engine" not in h and h["ready"]:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and auto.proc.poll() is None, auto.log()
            time.sleep(0.2)
        assert h["limits"] == 11
        wait_port(auto.port, 20, auto.proc)

        async def ask():
            c = Client(f"127.0.0.1:{auto.port}")
            try:
                return await c.check("t/pr/p", [("mizzen_class", "gold")])
            finally:
                await c.close()
        assert asyncio.run(ask()).overall_code == OK
        assert "restarting this service with the Python engine" in auto.log()
    finally:
        auto.stop()


@pytest.mark.e2e
def test_envoy_enforces_a_global_limit_through_the_native_service(workdir):
    import aiohttp

    from .envoy_static import StaticEnvoy, route

    limits = """
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: rl, namespace: t}
spec:
  host: app
  mode: global
  response: {body: "slow down\\n"}
  limits:
  - {name: tb, requestsPerUnit: 5, unit: second, algorithm: token_bucket}
"""
    with open(f"{workdir}/limits.yaml", "w") as f:
        f.write(limits)
    rls = RlsProcess(workdir, f"{workdir}/limits.yaml", extra=["--engine", "native"])
    envoy = None
    try:
        rls.start()
        assert admin(rls.admin_port, "/healthz")["engine"] == "native"
        envoy = StaticEnvoy(workdir, rls.port, [route("/tb", "t/rl/tb"), route("/free", None)])
        envoy.start()
        wait_port(envoy.port)

        async def go():
            async with aiohttp.ClientSession() as s:
                async def get(path):
                    async with s.get(f"http://127.0.0.1:{envoy.port}{path}") as r:
                        return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.text()
                burst = await asyncio.gather(*(get("/tb") for _ in range(20)))
                free = await asyncio.gather(*(get("/free") for _ in range(5)))
                return burst, free
        burst, free = asyncio.run(go())
        ok = [r for r in burst if r[0] == 200]
        limited = [r for r in burst if r[0] == 429]
        assert len(ok) == 5 and len(limited) == 15, [r[0] for r in burst]
        h = limited[0][1]
        assert h["x-ratelimit-limit"] == "5, 5;w=1" and h["x-ratelimit-remaining"] == "0"
        assert h["retry-after"] == "1" and "x-ratelimit-reset" in h and limited[0][2] == "slow down\n"
        assert {r[1]["x-ratelimit-limit"] for r in ok} == {"5, 5;w=1"}
        assert all(r[0] == 200 and "x-ratelimit-limit" not in r[1] for r in free)
        assert envoy.stats()["cluster.app.ratelimit.over_limit"] == 15
        st = admin(rls.admin_port, "/stats")["limits"]["t/rl/tb"]
        assert (st["within_limit"], st["over_limit"]) == (5, 15)
    finally:
        if envoy is not None:
            envoy.stop()
        rls.stop()
