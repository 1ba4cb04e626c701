"""mizzen.sdk.rules, directly: pure decisions with time and random draws passed in."""
from __future__ import annotations

from collections import Counter

from mizzen.api import load_text
from mizzen.model.policy import Policy
from mizzen.model.snapshot import Endpoint, Snapshot
from mizzen.model.types import Instance, Proxy
from mizzen.sdk import rules as R

CONFIG = """\
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{port: 8080, name: http}]
---
apiVersion: v1
kind: Service
metadata: {name: plain}
spec:
  selector: {app: plain}
  ports: [{port: 8080, name: http}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    outlierDetection: {consecutive5xxErrors: 2, baseEjectionTime: 10s, maxEjectionPercent: 50}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [echo]
  http:
  - match: [{headers: {x-canary: {exact: "yes"}}, uri: {prefix: /api}}]
    timeout: 2s
    retries: {attempts: 3, retryOn: "5xx", perTryTimeout: 500ms}
    headers: {request: {set: {x-routed: canary}}}
    route: [{destination: {host: echo, subset: v2}}]
  - match: [{sourceLabels: {app: batch}}]
    route: [{destination: {host: echo, subset: v1}}]
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: short and stout}}
  - match: [{uri: {prefix: /}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 25}}}
    route:
    - {destination: {host: echo, subset: v1}, weight: 90}
    - {destination: {host: echo, subset: v2}, weight: 10}
---
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: echo-calls}
spec:
  host: echo
  mode: local
  limits:
  - {name: per-user, key: [{header: x-user}], requestsPerUnit: 3, unit: second, match: {uri: {prefix: /limited}}}
"""
WEB = Proxy(id="sdk~web.default", namespace="default", labels=(("app", "web"),), kind="sdk")


def _snap() -> Snapshot:
    insts = [Instance(id=f"default.echo-{v}-{i}", namespace="default", workload=f"echo-{v}", address=f"10.0.0.{n}",
                      ports=(8080,), labels=(("app", "echo"), ("version", v)))
             for n, (v, i) in enumerate([("v1", 0), ("v1", 1), ("v2", 0), ("v2", 1)], start=1)]
    return Snapshot.build(load_text(CONFIG).resources, insts)


def _plan(call: R.Call, caller: Proxy = WEB) -> R.Plan | None:
    snap = _snap()
    return R.plan_call(snap, caller, R.ServiceIndex(snap, caller), call)


def test_routes_by_header_and_source_labels_with_terms() -> None:
    p = _plan(R.Call("echo", 8080, "/api/x", headers={"x-canary": "yes", "x-user": "ann"}))
    assert p is not None and [(d.subset, w) for d, w in p.destinations] == [("v2", 100)]
    assert p.timeout == 2.0 and p.retry == R.Retry(3, 0.5, frozenset({"5xx"}), frozenset(), R.DEFAULT_BACKOFF)
    assert p.set_headers == (("x-routed", "canary"),) and p.hash_key == "ann"
    # same call without the /api prefix: not the canary route (both conditions of one match must hold)
    p = _plan(R.Call("echo.default.svc.cluster.local", 8080, "/other", headers={"x-canary": "yes"}))
    assert [(d.subset, w) for d, w in p.destinations] == [("v1", 90), ("v2", 10)]
    assert p.retry == R.Retry(R.DEFAULT_ATTEMPTS) and p.timeout is None and p.fault is not None
    batch = Proxy(id="sdk~batch.default", namespace="default", labels=(("app", "batch"),), kind="sdk")
    assert [d.subset for d, _ in _plan(R.Call("echo", 8080, "/x"), batch).destinations] == ["v1"]


def test_direct_answers_unknown_hosts_and_defaults() -> None:
    assert _plan(R.Call("echo", 8080, "/teapot")).direct == (418, "short and stout")
    assert _plan(R.Call("example.com", 80, "/")) is None  # not a mesh host: sent as is
    assert _plan(R.Call("echo", 9999, "/")) is None  # not a port of the service
    p = _plan(R.Call("plain", 8080, "/"))  # no VirtualService: the service itself, default retries
    assert [(d.host, d.subset) for d, _ in p.destinations] == [("plain.default.svc.cluster.local", None)]
    assert R.Call("echo", 8080).headers == {}


def test_weighted_choice_is_exact_over_the_unit_interval() -> None:
    p = _plan(R.Call("echo", 8080, "/"))
    got = Counter(R.choose_destination(p, i / 1000).subset for i in range(1000))
    assert got == {"v1": 900, "v2": 100}


def _eps(n: int) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(f"10.0.0.{i}", 8080, ()) for i in range(1, n + 1))


def test_round_robin_least_request_hash_and_exclusions() -> None:
    eps, lb = _eps(3), R.LbState()
    rr = [R.pick_endpoint(Policy(), eps, lb, "c", None, 0.0).address for _ in range(6)]
    assert rr == ["10.0.0.1", "10.0.0.2", "10.0.0.3"] * 2
    snap = _snap()
    lr = snap.resolved.policy("echo.default.svc.cluster.local", "v1", 8080)
    lb.started(("10.0.0.1", 8080))
    assert R.pick_endpoint(lr, eps, lb, "c", None, 0.0, 0.5).address == "10.0.0.2"  # 1 in flight vs 0
    ch = snap.resolved.policy("echo.default.svc.cluster.local", "v2", 8080)
    keys = [f"user-{i}" for i in range(200)]
    before = {k: R.pick_endpoint(ch, eps, lb, "c", k, 0.3).address for k in keys}
    assert all(R.pick_endpoint(ch, eps, lb, "c", k, 0.9).address == before[k] for k in keys)  # stable
    after = {k: R.pick_endpoint(ch, eps[:2], lb, "c", k, 0.3).address for k in keys}
    moved = [k for k in keys if after[k] != before[k]]
    assert moved and all(before[k] == "10.0.0.3" for k in moved)  # only the gone endpoint's keys move
    # a retry goes elsewhere; an all-ejected or all-tried pool still answers
    assert R.pick_endpoint(Policy(), eps, R.LbState(), "c", None, 0.0, exclude={("10.0.0.1", 8080)}).address != \
        "10.0.0.1"
    all_keys = {R.endpoint_key(e) for e in eps}
    assert R.pick_endpoint(Policy(), eps, R.LbState(), "c", None, 0.0, ejected=all_keys) is not None
    assert R.pick_endpoint(Policy(), (), R.LbState(), "c", None, 0.0) is None


def test_retry_conditions() -> None:
    five = R.Retry(2, conditions=frozenset({"5xx"}))
    assert R.retryable(five, 503, None) and R.retryable(five, None, "timeout") and not R.retryable(five, 404, None)
    gw = R.Retry(2, conditions=frozenset({"gateway-error"}))
    assert R.retryable(gw, 502, None) and not R.retryable(gw, 500, None)
    dflt = R.Retry(2)
    assert R.retryable(dflt, None, "connect-failure") and not R.retryable(dflt, 503, None)
    assert R.retryable(R.Retry(1, conditions=frozenset({"retriable-status-codes"}), codes=frozenset({409})), 409, None)
    assert R.retryable(R.Retry(1, conditions=frozenset({"unavailable"})), 503, None, grpc="unavailable")
    assert not R.retryable(R.Retry(1, conditions=frozenset({"unavailable"})), 500, None, grpc="internal")


def test_outlier_ejection_times_and_max_percent() -> None:
    pol = _snap().resolved.policy("echo.default.svc.cluster.local", "v1", 8080)  # 2 errors, 10 s, max 50%
    o, a, b = R.Outliers(), ("10.0.0.1", 8080), ("10.0.0.2", 8080)
    cluster = frozenset({a, b})
    assert not o.record(a, 503, None, 0.0, pol, cluster)
    assert not o.record(a, 200, None, 0.1, pol, cluster)  # a success resets the count
    assert not o.record(a, 503, None, 0.2, pol, cluster)
    assert o.record(a, None, "connect-failure", 0.3, pol, cluster)
    assert o.ejected(5.0) == {a} and o.ejected(10.4) == frozenset()
    o.record(b, 500, None, 1.0, pol, cluster)
    assert not o.record(b, 500, None, 1.1, pol, cluster)  # 50% already ejected: b stays
    o.record(a, 503, None, 11.0, pol, cluster)
    assert o.record(a, 503, None, 11.1, pol, cluster) and o.ejected(30.0) == {a}  # second time: 20 s
    assert o.ejected(31.2) == frozenset()
    assert not R.Outliers().record(a, 503, None, 0, Policy(), cluster)  # no outlierDetection: nothing


def test_local_rate_limit_per_key_and_fault_draws() -> None:
    snap = _snap()
    rl = R.RateLimits()
    ann = R.Call("echo", 8080, "/limited", headers={"x-user": "ann"})
    p = _plan(ann)
    assert [rl.check(snap, p, ann, 0.0)[0] for _ in range(4)] == [True, True, True, False]
    assert rl.check(snap, p, ann, 0.0)[1:] == (429, "local_rate_limited")
    bob = R.Call("echo", 8080, "/limited", headers={"x-user": "bob"})
    assert rl.check(snap, _plan(bob), bob, 0.0)[0]  # a bucket per key
    assert rl.check(snap, p, ann, 0.5)[0]  # refilled: 3/s
    other = R.Call("echo", 8080, "/free", headers={"x-user": "ann"})
    assert all(rl.check(snap, _plan(other), other, 0.0)[0] for _ in range(10))  # the limit's match
    f = _plan(R.Call("echo", 8080, "/")).fault
    assert R.fault_decision(f, 0.0, 0.2) == (0.0, 503, False) and R.fault_decision(f, 0.0, 0.3) == (0.0, None, False)
