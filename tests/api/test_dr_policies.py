"""DestinationRule traffic policies and ServiceEntry: typed models (unknown fields and bad values rejected with
field paths) and the pure translation pieces (policy merge, locality priorities/weights, hash policies)."""
from __future__ import annotations

import textwrap

import pytest

from mizzen.api import InvalidConfig, load_text
from mizzen.model import Endpoint, Instance, Proxy, Snapshot
from mizzen.model.types import CLUSTER, ENDPOINT, ROUTE
from mizzen.translate import Renderer
from mizzen.model import policy as P

DR = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec:\n  host: hello\n"


def dr(body: str):
    (r,) = load_text(DR + textwrap.indent(textwrap.dedent(body), "  ")).resources
    return r


def errors(body: str) -> list[str]:
    with pytest.raises(InvalidConfig) as e:
        dr(body)
    return [f"{i.path}: {i.message}" for i in e.value.issues]


def test_full_traffic_policy_loads() -> None:
    r = dr("""
        trafficPolicy:
          loadBalancer:
            consistentHash: {httpCookie: {name: s, path: /, ttl: 0s}, ringHash: {minimumRingSize: 1024}}
            localityLbSetting: {failover: [{from: us-east, to: eu-west}]}
          connectionPool:
            tcp: {maxConnections: 1, connectTimeout: 1s, tcpKeepalive: {probes: 1, time: 1s, interval: 1s}}
            http: {http1MaxPendingRequests: 1, http2MaxRequests: 1, maxRequestsPerConnection: 1, maxRetries: 0,
                   idleTimeout: 1s, h2UpgradePolicy: UPGRADE}
          outlierDetection: {consecutive5xxErrors: 1, consecutiveGatewayErrors: 1, interval: 1s,
                             baseEjectionTime: 1s, maxEjectionPercent: 100, minHealthPercent: 0}
          retryBudget: {percent: 20, minRetryConcurrency: 3}
          healthCheck: {http: {path: /healthz, expectedStatuses: [200]}, interval: 1s, timeout: 1s}
        """)
    tp = r.spec.traffic_policy
    assert tp.outlier_detection.consecutive_5xx_errors == 1
    assert tp.connection_pool.http.h2_upgrade_policy == "UPGRADE"
    assert r.to_dict()["spec"]["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"] == 1


@pytest.mark.parametrize("body,expect", [
    ("trafficPolicy: {loadBalancer: {simple: FASTEST}}", "spec.trafficPolicy.loadBalancer.simple"),
    ("trafficPolicy: {loadBalancer: {consistentHash: {}}}",
     "spec.trafficPolicy.loadBalancer.consistentHash: consistentHash: exactly one of"),
    ("trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: a, useSourceIp: true}}}",
     "exactly one of httpHeaderName"),
    ("trafficPolicy: {loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}}",
     "only one of simple, consistentHash"),
    ("trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 10}}}}",
     "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: tableSize 10 must be a prime"),
    ("trafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: a/*, to: {a/*: 70}}]}}}",
     "total locality weight 70 != 100"),
    ("trafficPolicy: {loadBalancer: {localityLbSetting: {failover: [{from: a, to: a}]}}}", "the same region"),
    ("trafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}",
     "spec.trafficPolicy.connectionPool.tcp.maxConnections"),
    ("trafficPolicy: {connectionPool: {tcp: {connectTimeout: 10}}}", "connectTimeout"),
    ("trafficPolicy: {connectionPool: {http: {http1MaxPendingRequest: 1}}}",
     "spec.trafficPolicy.connectionPool.http.http1MaxPendingRequest: unknown field"),
    ("trafficPolicy: {outlierDetection: {interval: 5 seconds}}",
     "spec.trafficPolicy.outlierDetection.interval: invalid duration"),
    ("trafficPolicy: {outlierDetection: {maxEjectionPercent: 101}}", "maxEjectionPercent"),
    ("trafficPolicy: {outlierDetection: {consecutive5xxErrors: 1, baseEjectionTime: 0s}}", "at least 1ms"),
    ("trafficPolicy: {healthCheck: {interval: 1s}}", "exactly one of http, tcp, grpc"),
    ("trafficPolicy: {healthCheck: {http: {path: healthz}}}", "must start with '/'"),
    ("trafficPolicy: {healthCheck: {http: {expectedStatuses: [999]}}}", "not an HTTP status"),
    ("trafficPolicy: {retryBudget: {percent: 150}}", "spec.trafficPolicy.retryBudget.percent"),
    ("trafficPolicy: {portLevelSettings: [{loadBalancer: {simple: RANDOM}}]}", "needs port.number"),
    ("subsets: [{name: a, trafficPolicy: {connectionPool: {tcp: {bogus: 1}}}}]",
     "spec.subsets[0].trafficPolicy.connectionPool.tcp.bogus"),
])
def test_bad_policies_rejected_with_field_path(body: str, expect: str) -> None:
    errs = errors(body)
    assert any(expect in e for e in errs), errs


SE = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: e}
spec:
"""


@pytest.mark.parametrize("body,expect", [
    ("  hosts: [a.example.com]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n"
     "  endpoints: [{address: db.example.com}]\n", "endpoints[0].address"),
    ("  hosts: ['*.example.com']\n  resolution: DNS\n  ports: [{number: 80, name: http}]\n", "hosts must be FQDN"),
    ("  hosts: [a.example.com]\n  ports: [{number: 80, name: http}, {number: 80, name: http2}]\n", "port 80"),
])
def test_bad_service_entries(body: str, expect: str) -> None:
    with pytest.raises(InvalidConfig) as e:
        load_text(SE + body)
    assert any(expect in f"{i.path}: {i.message}" for i in e.value.issues), e.value


def test_policy_merge_subset_over_port_over_top() -> None:
    r = dr("""
        trafficPolicy:
          loadBalancer: {simple: RANDOM}
          connectionPool: {tcp: {maxConnections: 1}}
          portLevelSettings:
          - {port: {number: 8080}, loadBalancer: {simple: LEAST_REQUEST}}
        subsets:
        - {name: a, labels: {v: a}, trafficPolicy: {connectionPool: {http: {maxRetries: 1}}}}
        """)
    assert P.effective(r, None, 9090).load_balancer.simple == "RANDOM"
    assert P.effective(r, None, 8080).load_balancer.simple == "LEAST_REQUEST"
    a = P.effective(r, "a", 8080)
    assert a.load_balancer.simple == "LEAST_REQUEST"
    assert a.connection_pool.tcp is None and a.connection_pool.http.max_retries == 1  # replaced whole, as Istio


def _ep(addr: str, loc: str, **labels: str) -> Endpoint:
    return Endpoint(addr, 80, tuple(sorted(labels.items())), True, loc)


def test_locality_failover_priorities() -> None:
    r = dr("""
        trafficPolicy:
          outlierDetection: {consecutive5xxErrors: 1}
          loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r3}]}}
        """)
    pol = P.effective(r, None, 80)
    eps = [_ep("a", "r1/z1/s1"), _ep("b", "r1/z1/s2"), _ep("c", "r1/z2"), _ep("d", "r2/z1"), _ep("e", "r3/z1")]
    pr = {e.address: p for e, p in P.locality_priorities(pol, "r1/z1/s1", {}, eps).items()}
    assert pr == {"a": 0, "b": 1, "c": 2, "e": 3, "d": 4}
    # compacted: no gaps
    pr = {e.address: p for e, p in P.locality_priorities(pol, "r2/z9", {}, eps).items()}
    assert pr == {"d": 0, "a": 1, "b": 1, "c": 1, "e": 1}


def test_locality_failover_needs_outlier_detection() -> None:
    assert not P.effective(dr("trafficPolicy: {loadBalancer: {simple: RANDOM}}"), None, 80).locality_failover
    on = dr("trafficPolicy: {outlierDetection: {consecutive5xxErrors: 1}}")
    assert P.effective(on, None, 80).locality_failover
    off = dr("trafficPolicy: {outlierDetection: {}, loadBalancer: {localityLbSetting: {enabled: false}}}")
    assert not P.effective(off, None, 80).locality_failover


def test_locality_distribute_weights() -> None:
    r = dr("""
        trafficPolicy:
          loadBalancer:
            localityLbSetting:
              distribute: [{from: r1/z1/*, to: {"r1/z1/*": 80, "r1/z2/*": 20}}]
        """)
    pol = P.effective(r, None, 80)
    w = P.locality_weights(pol, "r1/z1/s1", {"r1/z1/a": 1, "r1/z1/b": 3, "r1/z2": 2, "r2/z1": 5})
    assert w == {"r1/z1/a": 200, "r1/z1/b": 600, "r1/z2": 200}  # r2 gets nothing
    assert P.locality_weights(pol, "r2/z1", {"r1/z1": 1}) is None  # rule is not for this caller


MESH = """
apiVersion: v1
kind: Service
metadata: {name: hello}
spec: {selector: {app: hello}, ports: [{port: 8080, name: http}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: hello}
spec:
  host: hello
  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 1}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: hello}
spec:
  hosts: [hello]
  http: [{route: [{destination: {host: hello}}], retries: {attempts: 2}}]
"""


def test_endpoints_follow_the_callers_locality_and_are_shared_per_locality() -> None:
    res = [r.with_revision(i + 1) for i, r in enumerate(load_text(MESH).resources)]
    insts = [Instance(f"default.h-{i}", "default", "h", f"10.244.0.{10 + i}", (8080,), (("app", "hello"),),
                      locality=loc) for i, loc in enumerate(["r1/z1", "r1/z2"])]
    rend = Renderer(Snapshot.build(res, insts))
    name = "outbound|8080||hello.default.svc.cluster.local"

    def prio(loc: str, pod: str) -> dict[str, int]:
        cla = rend.resources_for(Proxy(id=pod, labels=(("app", pod),), locality=loc))[ENDPOINT][name].message
        return {e.lb_endpoints[0].endpoint.address.socket_address.address: e.priority for e in cla.endpoints}

    assert prio("r1/z1", "x") == {"10.244.0.10": 0, "10.244.0.11": 1}
    assert prio("r1/z2", "y") == {"10.244.0.10": 1, "10.244.0.11": 0}
    a = rend.resources_for(Proxy(id="x", labels=(("app", "x"),), locality="r1/z1"))[ENDPOINT][name]
    b = rend.resources_for(Proxy(id="z", labels=(("app", "x"),), locality="r1/z1"))[ENDPOINT][name]
    assert a is b
    route = rend.resources_for(Proxy(id="x"))[ROUTE]["8080"].message
    act = [vh for vh in route.virtual_hosts if vh.name.startswith("hello")][0].routes[0].route
    assert act.retry_policy.retry_host_predicate[0].name == "envoy.retry_host_predicates.previous_hosts"
    cl = rend.resources_for(Proxy(id="x"))[CLUSTER][name].message
    assert cl.outlier_detection.consecutive_5xx.value == 1


def test_proxy_locality_round_trips_through_node_metadata() -> None:
    p = Proxy(id="n", locality="r1/z1/s")
    assert Proxy.from_node("n", p.node_metadata()).locality == "r1/z1/s"
