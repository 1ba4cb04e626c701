"""Snapshot indexes, host resolution, VIPs, Sidecar scope and change detection."""
from __future__ import annotations

from dataclasses import replace

from mizzen.api import load_text
from mizzen.model import Instance, Proxy, Snapshot, diff, diff_hosts
from mizzen.model.services import allocate_vips, port_protocol, resolve_host
from mizzen.translate import Renderer

SVC = """apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  ports: [{{port: 9080, name: http}}]
  selector: {{app: {name}}}
---
"""


def resources(text: str):
    return [r.with_revision(i + 1) for i, r in enumerate(load_text(text).resources)]


def inst(name: str, app: str, ip: str, ns: str = "default", **labels) -> Instance:
    return Instance(id=f"{ns}.{name}", namespace=ns, workload=name, address=ip, ports=(9080,),
                    labels=tuple(sorted({"app": app, **labels}.items())))


def test_resolve_host_forms() -> None:
    assert resolve_host("reviews", "default") == "reviews.default.svc.cluster.local"
    assert resolve_host("reviews.prod", "default", ["prod"]) == "reviews.prod.svc.cluster.local"
    assert resolve_host("reviews.prod.svc", "default") == "reviews.prod.svc.cluster.local"
    assert resolve_host("www.example.com", "default") == "www.example.com"


def test_port_protocols_follow_istio_naming() -> None:
    assert port_protocol("http") == "HTTP" and port_protocol("http-web") == "HTTP"
    assert port_protocol("grpc-api") == "GRPC" and port_protocol("tcp-db") == "TCP"
    assert port_protocol("") == "TCP" and port_protocol("web", app_protocol="http2") == "HTTP2"


def test_vips_are_stable_and_unique() -> None:
    a = allocate_vips([("a", None), ("b", None)])
    b = allocate_vips([("a", None), ("b", None), ("c", None)])
    assert a["a"] == b["a"] and a["b"] == b["b"] and len(set(b.values())) == 3
    assert allocate_vips([("x", "10.96.0.9")]) == {"x": "10.96.0.9"}


def test_endpoints_by_selector_and_subset() -> None:
    snap = Snapshot.build(resources(SVC.format(name="reviews", ns="default") + SVC.format(name="reviews", ns="prod")),
                          [inst("r1", "reviews", "10.0.0.1", version="v1"), inst("r2", "reviews", "10.0.0.2", version="v2"),
                           inst("p1", "reviews", "10.0.0.3", ns="prod")])
    svc = snap.services["reviews.default.svc.cluster.local"]
    assert {e.address for e in snap.endpoints_for(svc, 9080)} == {"10.0.0.1", "10.0.0.2"}
    assert {e.address for e in snap.endpoints_for(svc, 9080, (("version", "v2"),))} == {"10.0.0.2"}
    assert snap.endpoints_for(svc, 1234) == ()


def test_sidecar_scope_selects_most_specific() -> None:
    text = SVC.format(name="reviews", ns="default") + SVC.format(name="ratings", ns="default") + """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: ns-wide}
spec:
  egress: [{hosts: ["./*"]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: only-reviews}
spec:
  workloadSelector: {labels: {app: sleep}}
  egress: [{hosts: ["./reviews.default.svc.cluster.local"]}]
"""
    snap = Snapshot.build(resources(text), [])
    sleep = Proxy(id="s", labels=(("app", "sleep"),))
    other = Proxy(id="o", labels=(("app", "x"),))
    assert [s.name for s in snap.visible_services(sleep)] == ["reviews"]
    assert [s.name for s in snap.visible_services(other)] == ["ratings", "reviews"]


def test_diff_hosts_scopes_endpoint_changes() -> None:
    res = resources(SVC.format(name="reviews", ns="default") + SVC.format(name="ratings", ns="default"))
    i1 = inst("r1", "reviews", "10.0.0.1")
    s1 = Snapshot.build(res, [i1, inst("t1", "ratings", "10.0.0.5")])
    s2 = s1.with_endpoints(type(s1.endpoints)([replace(i1, address="10.0.0.9"), inst("t1", "ratings", "10.0.0.5")]), 2)
    assert diff_hosts(s1, s2) == {"reviews.default.svc.cluster.local"}


def test_renderer_shares_and_reuses() -> None:
    res = resources(SVC.format(name="reviews", ns="default") + SVC.format(name="ratings", ns="default"))
    i1 = inst("r1", "reviews", "10.0.0.1")
    s1 = Snapshot.build(res, [i1, inst("t1", "ratings", "10.0.0.5")])
    r1 = Renderer(s1)
    p1 = Proxy(id="a", labels=(("app", "x"),))
    p2 = Proxy(id="b", labels=(("app", "x"),))
    v1 = r1.resources_for(p1)
    assert r1.resources_for(p2) is v1  # same view key: rendered once
    s2 = s1.with_endpoints(type(s1.endpoints)([replace(i1, address="10.0.0.9"), inst("t1", "ratings", "10.0.0.5")]), 2)
    r2 = Renderer(s2, r1, diff(s1, s2))
    v2 = r2.resources_for(p1)
    assert r2.stats["hosts_rendered"] == 1  # only reviews re-rendered
    eds = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
    lds = "type.googleapis.com/envoy.config.listener.v3.Listener"
    name = "outbound|9080||reviews.default.svc.cluster.local"
    other = "outbound|9080||ratings.default.svc.cluster.local"
    assert v2[eds][name].version != v1[eds][name].version
    assert v2[eds][other] is v1[eds][other]  # same object: not re-serialized
    assert v2[lds] is v1[lds]


def test_per_proxy_kinds_change_the_proxies_they_select() -> None:
    """A Telemetry changes what whole proxies get, not one host's config: no host changed, the resource is
    in the change, and only the proxies it applies to (its namespace) are affected."""
    from mizzen.model import ConfigIndex, affected, diff

    res = resources(SVC.format(name="reviews", ns="default"))
    tel = resources("apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t}\n"
                    "spec: {accessLogging: [{providers: [{name: envoy}]}]}\n")
    s1 = Snapshot.build(res, [])
    s2 = s1.with_config(ConfigIndex(res + [tel[0].with_revision(9)]), 2)
    change = diff(s1, s2)
    assert diff_hosts(s1, s2) == frozenset() and [r.key.name for r in change.resources] == ["t"]
    assert affected(change, Proxy(id="a", namespace="default"), s1, s2)
    assert not affected(change, Proxy(id="b", namespace="shop"), s1, s2)


def test_mesh_wide_default_sidecar_in_the_root_namespace() -> None:
    """A selector-less Sidecar in istio-system is every namespace's default; a namespace's own wins."""
    text = SVC.format(name="reviews", ns="default") + SVC.format(name="ratings", ns="default") + \
        SVC.format(name="cart", ns="shop") + """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  egress: [{hosts: ["./*", "default/reviews.default.svc.cluster.local"]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: own, namespace: shop}
spec:
  egress: [{hosts: ["*/*"]}]
"""
    snap = Snapshot.build(resources(text), [])
    in_default = Proxy(id="d", namespace="default", labels=(("app", "x"),))
    in_shop = Proxy(id="s", namespace="shop", labels=(("app", "x"),))
    assert snap.config.sidecar_scope(in_default).key == "istio-system/default"
    # "./*" of the root Sidecar means each proxy's own namespace, as in Istio
    assert [s.name for s in snap.visible_services(in_default)] == ["ratings", "reviews"]
    in_other = Proxy(id="o", namespace="other", labels=(("app", "x"),))
    assert [s.name for s in snap.visible_services(in_other)] == ["reviews"]
    assert [s.name for s in snap.visible_services(in_shop)] == ["cart", "ratings", "reviews"]
