"""The generated sidecar config, run by a real Envoy (loopback mode, no mesh) against a real `mizzen ratelimit`:
what the translator emits for RateLimits does what docs/ratelimit.md says, before any mesh is involved.

Tolerances: a token bucket admits burst + rate·t; the clients here are one process sending at a fixed rate on
a shared 2-core machine, so counts are checked within ±20% (and never a limit that lets everything through)."""
from __future__ import annotations

import time

import pytest

from .procs import RlsProcess, free_port
from .sidecar import GeneratedSidecar

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]



def _rls(workdir: str, text: str) -> RlsProcess:
    path = f"{workdir}/limits.yaml"
    with open(path, "w") as f:
        f.write(text)
    rls = RlsProcess(workdir, path)
    rls.start()
    return rls


LOCAL = """
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: hello}
spec:
  workloadSelector: {labels: {app: hello}}
  limits:
  - {name: slow, match: {uri: {prefix: /slow}}, requestsPerUnit: 10, unit: second}
  - {name: per-user, match: {uri: {prefix: /user}}, key: [{header: x-user}], rate: 2, burst: 2}
  - {name: watch, match: {uri: {prefix: /watched}}, rate: 1, shadow: true}
"""


def test_local_limit_on_one_route_leaves_the_others_alone(workdir):
    sc = GeneratedSidecar(workdir, LOCAL).start()
    try:
        slow = sc.load(sc.inbound_url + "/slow", rps=50, seconds=4)
        fast = sc.load(sc.inbound_url + "/fast", rps=50, seconds=2)
    finally:
        sc.stop()
    ok = slow["status"].get("200", 0)
    # a 10-token bucket refilled at 10/s over 4 s: 10 + 40 = 50 of 200 (±20%)
    assert 40 <= ok <= 60, slow
    assert slow["status"].get("429", 0) == slow["total"] - ok and not slow["errors"], slow
    rej = slow["first"]["429"]
    assert rej["x-ratelimit-limit"] == "10" and rej["x-ratelimit-remaining"] == "0" and rej["retry-after"] == "1"
    assert slow["first"]["ok"]["x-ratelimit-limit"] == "10"
    assert fast["status"] == {"200": fast["total"]} and "x-ratelimit-limit" not in fast["first"]["ok"], fast


def test_local_keyed_limit_per_value_and_shadow_never_rejects(workdir):
    sc = GeneratedSidecar(workdir, LOCAL).start()
    try:
        codes = {u: [sc.get(sc.inbound_url + "/user", {"x-user": u} if u else {})[0] for _ in range(4)]
                 for u in ("ann", "bob", "")}
        watched = [sc.get(sc.inbound_url + "/watched")[0] for _ in range(6)]
        stats = sc.stats("mizzen_local_shadow.")
    finally:
        sc.stop()
    # each user value its own 2-token bucket; requests without the header share one more
    assert codes == {u: [200, 200, 429, 429] for u in ("ann", "bob", "")}, codes
    assert watched == [200] * 6
    assert stats["mizzen_local_shadow.http_local_rate_limit.rate_limited"] >= 4, stats
    assert stats["mizzen_local_shadow.http_local_rate_limit.enforced"] == 0, stats


GLOBAL = """
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: hello}
spec:
  host: hello
  mode: global
  response: {status: 429, body: "slow down"}
  limits:
  - {name: gets, match: {uri: {prefix: /limited}, method: {exact: GET}}, key: [sourceWorkload],
     requestsPerUnit: 3, unit: minute, algorithm: fixed_window}
  - {name: shaped, match: {uri: {prefix: /shaped}}, rate: 10, burst: 1, algorithm: leaky_bucket, strategy: delay,
     maxDelay: 500ms}
"""


def test_global_limit_at_the_caller_with_the_services_headers_and_body(workdir):
    rls = _rls(workdir, GLOBAL)
    a = GeneratedSidecar(workdir, GLOBAL, rls.port, workload="client-a").start()
    b = GeneratedSidecar(workdir, GLOBAL, rls.port, workload="client-b").start()
    try:
        host = {"Host": "hello:8080"}
        got_a = [a.get(a.outbound_url + "/limited", host) for _ in range(4)]
        got_b = [b.get(b.outbound_url + "/limited", host)[0] for _ in range(4)]
        other = a.get(a.outbound_url + "/other", host)
        inbound = a.get(a.inbound_url + "/limited")
    finally:
        a.stop()
        b.stop()
        rls.stop()
    # key sourceWorkload: each caller (the sidecar's own workload, a constant of its config) has 3 per minute
    assert [s for s, _, _ in got_a] == [200, 200, 200, 429] and got_b == [200, 200, 200, 429]
    status, headers, body = got_a[3]
    assert body == "slow down" and headers["x-ratelimit-limit"] == "3, 3;w=60" and int(headers["retry-after"]) >= 1
    assert got_a[0][1]["x-ratelimit-remaining"] == "2"
    # the match narrows it: another path (or the callee's inbound side) is not asked about
    assert other[0] == 200 and "x-ratelimit-limit" not in other[1]
    assert inbound[0] == 200 and "x-ratelimit-limit" not in inbound[1]


def test_delay_strategy_shapes_and_the_client_cannot_ask_for_a_delay(workdir):
    rls = _rls(workdir, GLOBAL)
    sc = GeneratedSidecar(workdir, GLOBAL, rls.port).start()
    try:
        host = {"Host": "hello:8080"}
        t0 = time.monotonic()
        spoofed = sc.get(sc.outbound_url + "/other", {**host, "x-envoy-fault-delay-request": "3000"})
        spoof_s = time.monotonic() - t0
        # 10/s, no burst, maxDelay 500 ms: of 12 requests within ~55 ms, 6 (7 if the queue moved on meanwhile)
        # pass 0..500 ms apart, the others are rejected
        res = sc.load(sc.outbound_url + "/shaped", rps=200, seconds=0.06, concurrency=12, headers=host)
        stats = sc.stats("http.outbound_http_proxy.fault")
    finally:
        sc.stop()
        rls.stop()
    assert spoofed[0] == 200 and spoof_s < 1.0 and "fault=None" in spoofed[2]
    ok = res["status"].get("200", 0)
    assert 6 <= ok <= 7 and res["status"].get("429") == 12 - ok and not res["errors"], res
    assert res["latency_ok_ms"]["max"] >= 400 and res["latency_ok_ms"]["p50"] >= 150, res
    assert stats.get("http.outbound_http_proxy.fault.delays_injected", 0) >= 5, stats


FAILURE = """
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: open}
spec:
  host: hello
  mode: global
  limits: [{name: open, match: {uri: {prefix: /open}}, rate: 100}]
---
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: closed}
spec:
  host: hello
  mode: global
  failureMode: deny
  limits: [{name: closed, match: {uri: {prefix: /closed}}, rate: 100}]
"""


def test_failure_modes_when_the_service_is_unreachable(workdir):
    sc = GeneratedSidecar(workdir, FAILURE, free_port()).start()  # nothing listens there
    try:
        host = {"Host": "hello:8080"}
        opened = [sc.get(sc.outbound_url + "/open", host)[0] for _ in range(3)]
        closed = [sc.get(sc.outbound_url + "/closed", host)[0] for _ in range(3)]
        stats = sc.stats("cluster.outbound|8080||hello.default.svc.cluster.local.ratelimit")
    finally:
        sc.stop()
    assert opened == [200] * 3 and closed == [503] * 3
    assert sum(v for k, v in stats.items() if k.endswith(".error")) >= 6, stats
    assert sum(v for k, v in stats.items() if k.endswith("failure_mode_allowed")) >= 3, stats


def test_a_dead_service_replica_is_skipped_not_failed_open(workdir):
    """Two replicas of the service, one dead (nothing listens on its address, as while the runner restarts
    it): Envoy asks the live one again at once (a refused connection: the dead one never counted it), so the
    limit holds exactly — no request passes by failureMode allow for having been sent to the dead replica."""
    rls = _rls(workdir, GLOBAL)
    sc = GeneratedSidecar(workdir, GLOBAL, (free_port(), rls.port)).start()
    try:
        got = [sc.get(sc.outbound_url + "/limited", {"Host": "hello:8080"})[0] for _ in range(8)]
        stats = sc.stats("cluster.outbound|8080||hello.default.svc.cluster.local.ratelimit")
        cluster = {k: v for k, v in sc.stats("cluster.mizzen_ratelimit.").items() if v}
    finally:
        sc.stop()
        rls.stop()
    assert got == [200, 200, 200] + [429] * 5, (got, stats)  # 3 per minute, every request decided
    assert not any(v for k, v in stats.items() if k.endswith((".error", "failure_mode_allowed"))), (stats, cluster)
    assert cluster.get("cluster.mizzen_ratelimit.upstream_rq_retry", 0) >= 1, cluster  # some went to the dead one
