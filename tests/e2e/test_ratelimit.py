"""Rate limits end to end (issue 11 §5): a real mesh (netns mode) started with `mizzen up --ratelimit-redis
managed --ratelimit-replicas 2` — real Envoys with the generated filters, two real `mizzen ratelimit`
replicas sharing a real redis-server, all supervised by the runner.

Mesh: `api` (2 replicas of tests/e2e/apps/policy_app.py on 8080) and three clients caller-a, caller-b,
caller-c. Load comes from tests/ratelimit/rl_load.py inside the callers (fixed rate, keep-alive), through
their sidecars. Rates and durations are modest (this machine has 2 shared cores).

Tolerances (stated once, used below): a token bucket admits `burst + rate·t` over t seconds; counts must be
within ±25% of that (the clients' schedule slips under load, and requests in flight at the end are cut);
shares within ±12 percentage points. Every assertion also checks that nothing but 200/429 (or the expected
failure status) came back.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mizzen.client import StateLayout, unix_request
from mizzen.local.options import LISTENER_DRAIN_SECONDS

from .mesh import ROOT, SLEEP_COMMAND, Mesh, can_run_netns, running_mesh

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(can_run_netns() is not None, reason=str(can_run_netns())),
              pytest.mark.timeout(1500)]

APP = ROOT / "tests" / "e2e" / "apps" / "policy_app.py"
LOAD = ROOT / "tests" / "ratelimit" / "rl_load.py"
API = "http://api:8080"
TOL = 0.25


def _mesh_text() -> str:
    callers = "".join(f"""---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {{name: caller-{c}, labels: {{app: caller-{c}}}}}
spec:
  command: {SLEEP_COMMAND}
""" for c in "abc")
    return f"""apiVersion: v1
kind: Service
metadata: {{name: api}}
spec: {{selector: {{app: api}}, ports: [{{port: 8080, name: http}}]}}
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {{name: api, labels: {{app: api}}}}
spec:
  replicas: 2
  command: [{sys.executable}, {APP}]
  ports: [{{containerPort: 8080}}]
""" + callers


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    if not Path("/usr/bin/redis-server").exists() and not any(
            os.path.exists(os.path.join(p, "redis-server")) for p in os.environ.get("PATH", "").split(":")):
        pytest.skip("redis-server is not installed (make sysdeps installs it)")
    with running_mesh(tmp_path_factory.mktemp("rl"), text=_mesh_text(),
                      extra=("--ratelimit-redis", "managed", "--ratelimit-replicas", "2")) as m:
        yield m


# ------------------------------------------------------------------------------------------------ helpers

def limit(m: Mesh, text: str) -> None:
    """Apply RateLimit(s), then wait until every sidecar ACKed and both services serve the global ones, and
    until the filter chains the change replaced are gone (the listener drain): until then a connection opened
    before it may serve one more request without the limit, or be cut mid-request when its chain is removed
    (seen: 2 IncompleteRead in a burst)."""
    t0 = time.monotonic()
    m.apply_text(text)
    m.wait_synced()
    _serving(m, text)
    time.sleep(max(0.0, t0 + LISTENER_DRAIN_SECONDS + 0.5 - time.monotonic()))


def _serving(m: Mesh, text: str) -> None:
    docs = [yaml.safe_load(d) for d in text.split("\n---\n")]
    want = {f"default/{d['metadata']['name']}/{lim['name']}" for d in docs if d["spec"].get("mode") == "global"
            for lim in d["spec"]["limits"]}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        served = [{(i["id"], i["limit"], i["algorithm"]) for i in rls_get(m, r, "/limits")["items"]} for r in (0, 1)]
        if all(want <= {lid for lid, _, _ in s} for s in served) and served[0] == served[1]:
            return
        time.sleep(0.3)
    raise AssertionError(f"rate-limit services do not serve {want}")


def unlimit(m: Mesh, *names: str) -> None:
    for n in names:
        m.cli("delete", "ratelimit", n, "-n", "default")
    m.wait_synced()


def rls_get(m: Mesh, replica: int, path: str) -> dict:
    status, body = unix_request(StateLayout(str(m.state_dir)).ratelimit_admin_socket(replica), "GET", path, timeout=5)
    assert status in (200, 503), (path, status, body[:200])
    return json.loads(body)


def load_argv(path: str, rps: float, seconds: float, concurrency: int, headers: dict[str, str] | None,
              extra: tuple[str, ...] = ()) -> list[str]:
    args = ["python3", str(LOAD), API + path, "--rps", str(rps), "--seconds", str(seconds),
            "--concurrency", str(concurrency), *extra]
    for k, v in (headers or {}).items():
        args += ["-H", f"{k}: {v}"]
    return args


def load(m: Mesh, caller: str, path: str, rps: float, seconds: float, concurrency: int = 6,
         headers: dict[str, str] | None = None, extra: tuple[str, ...] = ()) -> dict:
    p = m.exec(caller, *load_argv(path, rps, seconds, concurrency, headers, extra), timeout=seconds + 90)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def loads(m: Mesh, jobs: list[tuple[str, str, float, float]], concurrency: int = 6, *, poisson: bool = False
          ) -> list[dict]:
    """Several callers at once: (caller, path, rps, seconds) each, in background `mizzen exec`s that start
    sending together (a go file, created once every client said `ready`: `mizzen exec` alone can take
    seconds on a busy machine, and a caller that starts early has the limit to itself). `poisson`: each
    caller's requests are a Poisson process of its own seed, not an even schedule (see the global test)."""
    go = m.state_dir.parent / f"rl-go-{time.monotonic_ns()}"  # the mesh's private dir, searchable by pod uids
    procs = []
    for i, (caller, path, rps, secs) in enumerate(jobs):
        extra = ("--go-file", str(go)) + (("--arrivals", "poisson", "--seed", str(i + 1)) if poisson else ())
        procs.append(subprocess.Popen([sys.executable, "-m", "mizzen.cli.main", "exec", "--state-dir",
                                       str(m.state_dir), caller, "--",
                                       *load_argv(path, rps, secs, concurrency, None, extra)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()  # "ready", or "" when the client failed before its start
            assert line.strip() == "ready", line + p.stdout.read() + p.stderr.read()
        go.touch()
        out = []
        for p in procs:
            stdout, stderr = p.communicate(timeout=240)
            assert p.returncode == 0, stdout + stderr
            out.append(json.loads(stdout.strip().splitlines()[-1]))
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        go.unlink(missing_ok=True)


def ok(r: dict) -> int:
    return r["status"].get("200", 0)


def only(r: dict, *codes: str) -> bool:
    return not r["errors"] and set(r["status"]) <= set(codes)


def near(got: float, want: float, tol: float = TOL) -> bool:
    return want * (1 - tol) <= got <= want * (1 + tol)


def flowing(m: Mesh, n: int = 20, timeout: float = 60) -> None:
    """Wait until the rate-limit services answered `n` more calls: a background load has really started
    (`mizzen exec` alone can take seconds on a busy machine)."""
    def calls() -> float:
        return sum(rls_get(m, r, "/stats")["service"].get("requests", 0) for r in (0, 1))

    start, deadline = calls(), time.monotonic() + timeout
    while calls() < start + n:
        assert time.monotonic() < deadline, "the load did not start"
        time.sleep(0.2)


def component(m: Mesh, name: str) -> dict:
    return next(c for c in m.status()["components"] if c["name"] == name)


# ------------------------------------------------------------------------------------------------ tests

def test_local_limit_on_one_route(mesh: Mesh) -> None:
    """10 r/s on /slow at the caller's sidecar (host target), under 50 r/s: ~10 r/s pass, the rest get 429 with
    X-RateLimit-* and Retry-After; another route of the same service is untouched."""
    limit(mesh, """apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: slow-route}
spec:
  host: api
  limits: [{name: slow, match: {uri: {prefix: /slow}}, requestsPerUnit: 10, unit: second}]
""")
    try:
        slow, other = loads(mesh, [("caller-a", "/slow?ms=1", 50, 6), ("caller-a", "/other", 20, 6)])
    finally:
        unlimit(mesh, "slow-route")
    assert only(slow, "200", "429") and near(ok(slow), 10 + 10 * 6), slow
    assert slow["first"]["429"]["x-ratelimit-limit"] == "10" and slow["first"]["429"]["retry-after"] == "1"
    assert slow["first"]["ok"]["x-ratelimit-limit"] == "10"
    assert other["status"] == {"200": other["total"]} and "x-ratelimit-limit" not in other["first"]["ok"], other


def test_service_wide_limit_follows_the_replica_count(mesh: Mesh) -> None:
    """scope: service, 20 r/s for all `api` replicas together, no network call: each of 2 enforces 10 r/s, and
    after scaling to 4 each enforces 5 r/s — the total accepted stays at the limit."""
    limit(mesh, """apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: api-total}
spec:
  workloadSelector: {labels: {app: api}}
  scope: service
  limits: [{name: total, requestsPerUnit: 20, unit: second}]
""")
    try:
        two = load(mesh, "caller-a", "/x", 60, 8, concurrency=8)
        mesh.cli("scale", "api", "--replicas", "4", timeout=300)
        mesh.wait_synced(expect=6)
        time.sleep(1.5)  # let the new replicas' buckets fill as the old ones did
        four = load(mesh, "caller-a", "/x", 60, 8, concurrency=8)
    finally:
        unlimit(mesh, "api-total")
        mesh.cli("scale", "api", "--replicas", "2", timeout=300)
        mesh.wait_synced(expect=4)
    want = 20 + 20 * 8  # buckets start full: the burst (20 in all) plus 20/s
    assert only(two, "200", "429") and near(ok(two), want), two
    assert only(four, "200", "429") and near(ok(four), want), four


GLOBAL_30 = """apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: shared}
spec:
  workloadSelector: {labels: {app: api}}
  mode: global
  limits: [{name: shared, match: {uri: {prefix: /shared}}, requestsPerUnit: 30, unit: second}]
"""


def test_global_limit_shared_by_three_callers_on_two_services_and_one_redis(mesh: Mesh) -> None:
    """One global 30 r/s limit at api (both replicas' sidecars ask the rate-limit service), three callers
    sending 30 r/s each: 30 r/s in all, split fairly; the two service replicas answer together from Redis.

    Every request of every caller is decided by the service (its calls grow by exactly the requests sent), so
    no caller's path escapes the limit. The callers send Poisson arrivals (independent seeds), as independent
    clients do: the limit is the default token bucket, which hands each refilled token to the first request
    after it, and three clients on an even schedule of exactly the refill period lock their phases to it —
    the one just behind the refill takes nearly every token (seen: 17, 194, 81 of 292)."""
    limit(mesh, GLOBAL_30)
    before = [rls_get(mesh, r, "/stats")["service"].get("requests", 0) for r in (0, 1)]
    try:
        res = loads(mesh, [(c, "/shared", 30, 8) for c in ("caller-a", "caller-b", "caller-c")], poisson=True)
    finally:
        unlimit(mesh, "shared")
    stats = [rls_get(mesh, r, "/stats") for r in (0, 1)]
    after = [st["service"].get("requests", 0) for st in stats]
    total = sum(ok(r) for r in res)
    assert all(only(r, "200", "429") and r["total"] == r["planned"] == 240 for r in res), res
    assert sum(after) - sum(before) == sum(r["total"] for r in res), (before, after)  # each request was decided
    assert all(a - b > 50 for a, b in zip(after, before)), (before, after)  # by both replicas
    # failure_mode_allowed > 0 means Redis did not answer within --redis-timeout (an overloaded machine)
    assert near(total, 30 + 30 * 8), (total, res, [(st["service"], st["limits"].get("default/shared/shared"))
                                                   for st in stats])
    assert all(abs(ok(r) / total - 1 / 3) <= 0.12 for r in res), [ok(r) for r in res]


ALGORITHMS = """apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: algos}
spec:
  host: api
  mode: global
  limits:
""" + "".join(f"  - {{name: {n}, match: {{uri: {{prefix: /algo/{n}}}}}, requestsPerUnit: 5, unit: second, "
              f"algorithm: {a}{extra}}}\n" for n, a, extra in (
                  ("fixed", "fixed_window", ""), ("sliding", "sliding_window", ""), ("log", "sliding_log", ""),
                  ("token", "token_bucket", ""), ("meter", "leaky_bucket", ""), ("gcra", "gcra", ""),
                  ("queue", "leaky_bucket", ", burst: 1, strategy: delay, maxDelay: 1s")))


def test_each_algorithm_end_to_end(mesh: Mesh) -> None:
    """A burst of 12 requests at once against 5 r/s: every algorithm admits its quota of 5 and rejects the rest
    at once; the leaky-bucket queue instead admits 1 + 5 spread 200 ms apart (up to its 1 s bound).

    Exact about what the algorithms guarantee, not about the machine's speed: the client reports the window
    W in which the service decided all 12 (normally well under 200 ms, when the counts are exactly 5 and 6);
    over W a limit refilled at 5/s can admit at most floor(5·W) more."""
    limit(mesh, ALGORITHMS)
    try:
        got = {n: load(mesh, "caller-b", f"/algo/{n}", 400, 0.03, concurrency=12, extra=("--count", "12"))
               for n in ("fixed", "sliding", "log", "token", "meter", "gcra", "queue")}
    finally:
        unlimit(mesh, "algos")
    for n, r in got.items():
        assert only(r, "200", "429") and r["total"] == 12, (n, r)

    def more(r: dict) -> int:  # what a 5/s refill can add within the decision window
        return math.floor(5 * r["decision_window_s"] + 1e-6)

    for n in ("sliding", "log", "token", "meter", "gcra"):  # rejected at once: nothing delayed
        assert 5 <= ok(got[n]) <= 5 + more(got[n]) and got[n]["delayed"] == 0, (n, got[n])
    assert 5 <= ok(got["fixed"]) <= 10 and got["fixed"]["delayed"] == 0, got["fixed"]  # a window boundary: ≤ 2×
    queue = got["queue"]
    assert 6 <= ok(queue) <= 6 + more(queue) and queue["status"].get("429", 0) > 0, queue
    # shaped, not burst: the request admitted last before the first rejection was told to wait > 800 ms (its
    # slot was within 1 s of the next one's arrival, 200 ms before it), and Envoy held it that long
    assert queue["max_delay_ms"] >= 800 and queue["latency_ok_ms"]["max"] >= queue["max_delay_ms"] - 0.1, queue


def test_delay_strategy_shapes_instead_of_failing(mesh: Mesh) -> None:
    """gcra 10 r/s with delay up to 1 s, under 15 r/s: requests over the rate wait (latency grows to the bound)
    and pass at ~10 r/s; only those that would wait longer than 1 s are rejected."""
    limit(mesh, """apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: shaper}
spec:
  host: api
  mode: global
  limits: [{name: shaper, match: {uri: {prefix: /shaped}}, rate: 10, burst: 1, algorithm: gcra, strategy: delay,
            maxDelay: 1s}]
""")
    try:
        under = load(mesh, "caller-c", "/shaped", 8, 3, concurrency=12)
        over = load(mesh, "caller-c", "/shaped", 15, 5, concurrency=24)
    finally:
        unlimit(mesh, "shaper")
    assert under["status"] == {"200": under["total"]}, under  # under the rate: never delayed much, never rejected
    assert only(over, "200", "429") and near(ok(over), 10 * 5 + 10), over  # + what waits in the 1 s queue
    assert over["status"].get("429", 0) > 0, over
    assert over["latency_ok_ms"]["p90"] >= 500 and over["latency_ok_ms"]["max"] <= 1500, over


def test_priority_classes_gold_keeps_its_share(mesh: Mesh) -> None:
    """30 r/s at api, classes by the caller's workload (looked up by its address at api's sidecar): caller-a
    (gold, 70%) and caller-b (bronze, 30%) both send 30 r/s; gold gets its 70%, bronze absorbs the cut."""
    limit(mesh, """apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: tiers}
spec:
  workloadSelector: {labels: {app: api}}
  mode: global
  limits:
  - {name: tiers, match: {uri: {prefix: /tiers}}, requestsPerUnit: 30, unit: second,
     priority: {source: workload, classes: {caller-a: 70, caller-b: 30}}}
""")
    try:
        gold, bronze = loads(mesh, [("caller-a", "/tiers", 30, 8), ("caller-b", "/tiers", 30, 8)])
    finally:
        unlimit(mesh, "tiers")
    total = ok(gold) + ok(bronze)
    assert only(gold, "200", "429") and only(bronze, "200", "429"), (gold, bronze)
    assert near(total, 30 + 30 * 8), (gold, bronze)
    assert abs(ok(gold) / total - 0.70) <= 0.12, (ok(gold), ok(bronze))


def test_shadow_mode_counts_but_never_rejects(mesh: Mesh) -> None:
    limit(mesh, """apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: watch}
spec:
  host: api
  mode: global
  limits: [{name: watch, match: {uri: {prefix: /watched}}, rate: 2, shadow: true}]
""")
    before = sum(rls_get(mesh, r, "/stats")["limits"].get("default/watch/watch", {}).get("shadow_mode", 0)
                 for r in (0, 1))
    try:
        res = load(mesh, "caller-a", "/watched", 20, 3)
    finally:
        unlimit(mesh, "watch")
    after = sum(rls_get(mesh, r, "/stats")["limits"].get("default/watch/watch", {}).get("shadow_mode", 0)
                for r in (0, 1))
    assert res["status"] == {"200": res["total"]} and "x-ratelimit-limit" not in res["first"]["ok"], res
    assert after - before >= res["total"] - 10, (before, after)  # ~all but the first 2 (+burst) over the limit


FAILING = """apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: open}
spec:
  host: api
  mode: global
  limits: [{name: open, match: {uri: {prefix: /open}}, requestsPerUnit: 5, unit: second}]
---
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: closed}
spec:
  host: api
  mode: global
  failureMode: deny
  limits: [{name: closed, match: {uri: {prefix: /closed}}, requestsPerUnit: 100, unit: second}]
"""


def test_failure_modes_when_the_service_or_redis_fails(mesh: Mesh) -> None:
    """Both rate-limit services hung (SIGSTOP, 3 s): failureMode allow lets requests through, deny answers 503.
    One killed: the runner restarts it and the other serves meanwhile. Redis killed: the services answer with
    each limit's failureMode (counted), the runner restarts Redis and enforcement resumes."""
    limit(mesh, FAILING)
    reps = [component(mesh, n)["pid"] for n in ("ratelimit", "ratelimit-1")]
    try:
        for pid in reps:
            os.kill(pid, signal.SIGSTOP)
        try:
            opened, closed = loads(mesh, [("caller-a", "/open", 20, 3), ("caller-b", "/closed", 10, 3)])
        finally:
            for pid in reps:
                os.kill(pid, signal.SIGCONT)
        assert opened["status"] == {"200": opened["total"]}, opened  # 60 > the 5/s limit: the limit was off
        assert closed["status"] == {"503": closed["total"]}, closed
        # one replica killed: the other keeps the limit (Envoy fails over), the runner restarts it
        os.kill(reps[0], signal.SIGKILL)
        one = load(mesh, "caller-a", "/open", 20, 4)
        assert only(one, "200", "429") and ok(one) <= 5 + 5 * 4 + 8, one
        deadline = time.monotonic() + 60
        while component(mesh, "ratelimit")["state"] != "running" or component(mesh, "ratelimit")["pid"] == reps[0]:
            assert time.monotonic() < deadline, component(mesh, "ratelimit")
            time.sleep(0.5)
        # Redis hung (SIGSTOP, 3 s, while load flows): each limit's failureMode, counted and logged by the services
        redis = component(mesh, "redis")
        bg = subprocess.Popen([sys.executable, "-m", "mizzen.cli.main", "exec", "--state-dir", str(mesh.state_dir),
                               "caller-b", "--", *load_argv("/closed", 20, 7, 6, None)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        flowing(mesh)
        os.kill(redis["pid"], signal.SIGSTOP)
        try:
            time.sleep(3)
        finally:
            os.kill(redis["pid"], signal.SIGCONT)
        stdout, stderr = bg.communicate(timeout=120)
        assert bg.returncode == 0, stdout + stderr
        during = json.loads(stdout.strip().splitlines()[-1])
        # Redis killed: the runner restarts it (its counters are gone) and enforcement resumes
        os.kill(redis["pid"], signal.SIGKILL)
        while component(mesh, "redis")["state"] != "running" or component(mesh, "redis")["pid"] == redis["pid"]:
            assert time.monotonic() < deadline + 60, component(mesh, "redis")
            time.sleep(0.5)
        time.sleep(1.5)  # the services' fast-fail window ends, they reconnect
        again = load(mesh, "caller-b", "/open", 20, 4)
        stats = [rls_get(mesh, r, "/stats") for r in (0, 1)]
        logs = "".join(Path(component(mesh, n)["log"]).read_text(errors="replace") for n in ("ratelimit", "ratelimit-1"))
    finally:
        unlimit(mesh, "open", "closed")
    # /closed is 100/s with failureMode deny: 200 while Redis answers, 429 (Retry-After: 1) while it hangs
    assert only(during, "200", "429") and during["status"].get("429", 0) >= 10, during
    service = [st["service"] for st in stats]
    denied = sum(st["limits"].get("default/closed/closed", {}).get("failure_mode_denied", 0) for st in stats)
    assert sum(s.get("backend_errors", 0) for s in service) > 0 and denied >= 10, stats
    assert all(s.get("backend_up") == 1 for s in service), service
    assert "answering with each limit's failureMode" in logs and "enforcing limits again" in logs
    assert only(again, "200", "429") and again["status"].get("429", 0) > 0 and ok(again) <= 5 + 5 * 4 + 8, again


def test_hot_change_of_limits_under_load(mesh: Mesh) -> None:
    """A global and a local limit changed (rate, algorithm) while 40 r/s flow: only 200 and 429, never an error
    or another status; the new rates take effect."""
    text = """apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: hot-global}
spec:
  host: api
  mode: global
  limits: [{name: g, match: {uri: {prefix: /hot/g}}, requestsPerUnit: %d, unit: second, algorithm: %s}]
---
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: hot-local}
spec:
  workloadSelector: {labels: {app: api}}
  limits: [{name: l, match: {uri: {prefix: /hot/l}}, requestsPerUnit: %d, unit: second}]
"""
    limit(mesh, text % (5, "token_bucket", 3))
    stop = mesh.state_dir.parent / "hot.stop"
    argv = lambda path: [sys.executable, "-m", "mizzen.cli.main", "exec", "--state-dir", str(mesh.state_dir),  # noqa
                         "caller-c", "--", "python3", str(LOAD), API + path, "--rps", "20", "--seconds", "60",
                         "--concurrency", "6", "--stop-file", str(stop)]
    procs = [subprocess.Popen(argv(p), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in ("/hot/g", "/hot/l")]
    try:
        flowing(mesh)
        time.sleep(3)
        limit(mesh, text % (15, "gcra", 8))
        time.sleep(5)
        limit(mesh, text % (10, "sliding_window", 20))
        time.sleep(4)
    finally:
        stop.touch()
        outs = [p.communicate(timeout=120) for p in procs]
        unlimit(mesh, "hot-global", "hot-local")
    for (stdout, stderr), p in zip(outs, procs):
        assert p.returncode == 0, stdout + stderr
        r = json.loads(stdout.strip().splitlines()[-1])
        assert only(r, "200", "429") and r["status"].get("429", 0) > 0, r
        early, late = r["ok_per_second"][1:4], r["ok_per_second"][-4:-1]
        assert sum(late) > sum(early), r  # the raised limits let more through
