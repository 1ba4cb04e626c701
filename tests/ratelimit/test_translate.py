"""RateLimit → sidecar config: who gets what, what stays byte-identical, and whom a change is pushed to."""
from __future__ import annotations

import dataclasses

from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as local_pb2

from mizzen.api import load_text
from mizzen.model import Instance, Proxy, Snapshot, affected, diff
from mizzen.model.snapshot import EndpointIndex
from mizzen.model.types import LISTENER, ROUTE
from mizzen.translate import Renderer
from mizzen.translate.filters import ratelimit as F

BASE = """
apiVersion: v1
kind: Service
metadata: {name: hello}
spec: {selector: {app: hello}, ports: [{port: 8080, name: http}]}
---
apiVersion: v1
kind: Service
metadata: {name: other}
spec: {selector: {app: other}, ports: [{port: 9090, name: http}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: lonely}
spec:
  workloadSelector: {labels: {app: lonely}}
  egress: [{hosts: ["./other.default.svc.cluster.local"]}]
"""
HOST_LIMIT = """
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: to-hello}
spec:
  host: hello
  mode: global
  limits: [{name: all, rate: 30, key: [sourceWorkload]}]
"""
SELECTOR_LIMIT = """
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: at-hello}
spec:
  workloadSelector: {labels: {app: hello}}
  scope: service
  limits: [{name: total, requestsPerUnit: 30, unit: second}]
"""


def proxy(app: str, workload: str | None = None, ports: tuple[int, ...] = ()) -> Proxy:
    return Proxy(id=f"sidecar~x~{app}", workload=workload or app, labels=(("app", app),), ports=ports,
                 ratelimit_address=("unix:/s/ratelimit.sock",))


HELLO, SLEEP, LONELY = proxy("hello", ports=(8080,)), proxy("sleep"), proxy("lonely")


def inst(name: str, app: str, ip: str, healthy: bool = True) -> Instance:
    return Instance(id=f"default.{name}", namespace="default", workload=name.rsplit("-", 1)[0], address=ip,
                    ports=(8080,), labels=(("app", app),), healthy=healthy)


INSTANCES = [inst("hello-0", "hello", "10.0.0.1"), inst("hello-1", "hello", "10.0.0.2"), inst("sleep-0", "sleep", "10.0.0.3")]


def snap(*docs: str, instances=INSTANCES, revision_base: int = 0) -> Snapshot:
    res = load_text("---\n".join((BASE,) + docs)).resources
    return Snapshot.build([r.with_revision(revision_base + i + 1) for i, r in enumerate(res)], instances)


def view(s: Snapshot, p: Proxy):
    return Renderer(s).resources_for(p)


def payloads(v, t):
    return {n: r.payload for n, r in v[t].items()}


def test_proxies_no_limit_touches_keep_byte_identical_listeners_and_routes():
    plain, limited = snap(), snap(HOST_LIMIT, SELECTOR_LIMIT)
    # lonely cannot see hello: neither the host limit (callers) nor the selector (hello's own) reaches it
    for t in (LISTENER, ROUTE):
        assert payloads(view(plain, LONELY), t) == payloads(view(limited, LONELY), t)
    # sleep sees hello: its outbound chain gets the filters, hello's virtual host the descriptors
    v = view(limited, SLEEP)
    assert payloads(view(plain, SLEEP), LISTENER) != payloads(v, LISTENER)
    assert F.CLUSTER in v["type.googleapis.com/envoy.config.cluster.v3.Cluster"]
    rc = route_pb2.RouteConfiguration.FromString(v[ROUTE]["8080"].payload)
    hosts = {vh.name: vh for vh in rc.virtual_hosts}
    assert set(hosts["hello.default.svc.cluster.local:8080"].typed_per_filter_config) == {F.GLOBAL}
    # sleep calls hello as itself: a constant of its own config
    assert b"sleep" in hosts["hello.default.svc.cluster.local:8080"].typed_per_filter_config[F.GLOBAL].value
    # no global limit in a view: no rate-limit cluster (hello with only its local limit)
    assert F.CLUSTER not in view(snap(SELECTOR_LIMIT), HELLO)["type.googleapis.com/envoy.config.cluster.v3.Cluster"]


def test_a_ratelimit_change_pushes_exactly_the_proxies_it_applies_to():
    old = snap()
    new = snap(HOST_LIMIT, SELECTOR_LIMIT)
    change = diff(old, new)
    assert "hello.default.svc.cluster.local" in change.hosts
    assert {p.workload for p in (HELLO, SLEEP, LONELY) if affected(change, p, old, new)} == {"hello", "sleep"}
    only_selector = snap(SELECTOR_LIMIT)
    change = diff(old, only_selector)
    assert not change.hosts and {p.workload for p in (HELLO, SLEEP, LONELY)
                                 if affected(change, p, old, only_selector)} == {"hello"}


def _local_cfg(v, route_name: str = "default") -> local_pb2.LocalRateLimit:
    from envoy.config.listener.v3 import listener_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

    lst = listener_pb2.Listener.FromString(v[LISTENER]["virtualInbound"].payload)
    m = hcm.HttpConnectionManager()
    lst.filter_chains[0].filters[0].typed_config.Unpack(m)
    route = next(r for r in m.route_config.virtual_hosts[0].routes if r.name == route_name)
    cfg = local_pb2.LocalRateLimit()
    route.typed_per_filter_config[F.LOCAL].Unpack(cfg)
    return cfg


def test_service_wide_limit_is_divided_among_healthy_instances_and_redivided_on_scale():
    two = snap(SELECTOR_LIMIT)
    four = Snapshot(two.config, EndpointIndex(INSTANCES + [inst("hello-2", "hello", "10.0.0.4"),
                                                          inst("hello-3", "hello", "10.0.0.5"),
                                                          inst("hello-4", "hello", "10.0.0.6", healthy=False)], 2))
    b2, b4 = _local_cfg(view(two, HELLO)).token_bucket, _local_cfg(view(four, HELLO)).token_bucket
    assert (b2.max_tokens, b2.tokens_per_fill.value, b2.fill_interval.seconds) == (15, 15, 1)
    assert (b4.max_tokens, b4.tokens_per_fill.value, b4.fill_interval.seconds) == (8, 15, 2)  # 7.5/s each
    change = diff(two, four)
    assert affected(change, HELLO, two, four)
    assert not affected(change, LONELY, two, four)  # does not see hello, no limit: nothing to push


def test_caller_identity_table_follows_the_registry():
    keyed = """
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: per-caller}
spec:
  workloadSelector: {labels: {app: hello}}
  limits: [{name: per-caller, rate: 5, key: [sourceWorkload]}]
"""
    s1 = snap(keyed)
    moved = [i if i.workload != "sleep" else dataclasses.replace(i, address="10.0.0.9") for i in INSTANCES]
    s2 = Snapshot(s1.config, EndpointIndex(moved, 2))
    v1, v2 = view(s1, HELLO), view(s2, HELLO)
    assert b"10.0.0.3" in v1[LISTENER]["virtualInbound"].payload
    assert b"10.0.0.9" in v2[LISTENER]["virtualInbound"].payload
    assert affected(diff(s1, s2), HELLO, s1, s2)
    assert not affected(diff(s1, s2), LONELY, s1, s2)


def test_a_matched_local_limit_becomes_routes_of_its_own_on_every_virtual_service_route():
    text = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: hello}
spec:
  hosts: [hello]
  http:
  - {name: api, match: [{uri: {prefix: /api}}], route: [{destination: {host: hello}}]}
  - {name: rest, route: [{destination: {host: hello}}]}
---
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: posts}
spec:
  host: hello
  limits:
  - {name: posts, match: {method: {exact: POST}}, rate: 2}
  - {name: gets, match: {method: {exact: GET}, uri: {exact: /api/x}}, rate: 5}
"""
    v = view(snap(text), SLEEP)
    rc = route_pb2.RouteConfiguration.FromString(v[ROUTE]["8080"].payload)
    vh = next(vh for vh in rc.virtual_hosts if vh.name.startswith("hello."))
    assert [r.name for r in vh.routes] == [
        "api.ratelimit.posts+gets", "api.ratelimit.posts", "api.ratelimit.gets", "api",
        "rest.ratelimit.posts+gets", "rest.ratelimit.posts", "rest.ratelimit.gets", "rest"]
    both = vh.routes[0]
    assert both.match.prefix == "/api" and [h.name for h in both.match.headers] == [":method", ":path", ":method"]
    assert both.match.headers[1].string_match.safe_regex.regex == r"/api/x(\?.*)?"
    assert F.LOCAL in both.typed_per_filter_config and F.LOCAL not in vh.routes[3].typed_per_filter_config
    cfg = local_pb2.LocalRateLimit()
    both.typed_per_filter_config[F.LOCAL].Unpack(cfg)
    # two unkeyed limits on one route: the looser is the default bucket, the stricter a descriptor (so the
    # x-ratelimit headers show the stricter one)
    assert cfg.token_bucket.tokens_per_fill.value == 5 and cfg.descriptors[0].token_bucket.tokens_per_fill.value == 2
