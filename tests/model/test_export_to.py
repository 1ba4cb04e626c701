"""exportTo of VirtualServices and DestinationRules decides which one a proxy uses (model/visibility.py).

Each case is written from the rule's meaning (Istio's `networking.istio.io` exportTo docs and its lookup
order), not from Istio's tests: `.` = the owner's namespace, `*` or unset = everyone, names = those
namespaces; a VirtualService private to the proxy's namespace beats one exported to it by name, which beats
a public one; a DestinationRule is looked up in the proxy's namespace, then the service's, then the root
namespace."""
from __future__ import annotations

from mizzen.api import load_text
from mizzen.model import Instance, Proxy, Snapshot, diff
from mizzen.model.dependencies import affected, dependencies
from mizzen.model.types import CLUSTER, ROUTE
from mizzen.translate import Renderer
from envoy.config.cluster.v3 import cluster_pb2

HOST = "reviews.shop.svc.cluster.local"
SVC = """apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {ports: [{port: 9080, name: http}], selector: {app: reviews}}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: shop}
spec: {ports: [{port: 9080, name: http}], selector: {app: ratings}}
---
apiVersion: v1
kind: Service
metadata: {name: details, namespace: shop}
spec: {ports: [{port: 9080, name: http}], selector: {app: details}}
---
"""


def vs(name: str, ns: str, dest: str, export_to: str = "") -> str:
    exp = f"\n  exportTo: {export_to}" if export_to else ""
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {ns}}}
spec:
  hosts: [{HOST}]{exp}
  http: [{{route: [{{destination: {{host: {dest}.shop.svc.cluster.local}}}}]}}]
---
"""


def dr(name: str, ns: str, lb: str, export_to: str = "", selector: bool = False) -> str:
    exp = f"\n  exportTo: {export_to}" if export_to else ""
    sel = "\n  workloadSelector: {matchLabels: {app: x}}" if selector else ""
    return f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {ns}}}
spec:
  host: {HOST}{exp}{sel}
  trafficPolicy: {{loadBalancer: {{simple: {lb}}}}}
---
"""


def snap(*docs: str) -> Snapshot:
    res = [r.with_revision(i + 1) for i, r in enumerate(load_text(SVC + "".join(docs)).resources)]
    return Snapshot.build(res, [Instance(id="shop.r1", namespace="shop", workload="reviews", address="10.0.0.1",
                                         ports=(9080,), labels=(("app", "reviews"),))])


def chosen_vs(s: Snapshot, ns: str) -> str | None:
    v = s.config.resolved_for(ns).virtual_service(HOST)
    return None if v is None else f"{v.namespace}/{v.name}"


def chosen_dr(s: Snapshot, ns: str) -> str | None:
    d = s.config.resolved_for(ns).destination_rule(HOST)
    return None if d is None else f"{d.namespace}/{d.name}"


def test_virtual_service_without_export_to_is_seen_everywhere() -> None:
    s = snap(vs("a", "shop", "ratings"))
    assert {chosen_vs(s, ns) for ns in ("shop", "web", "istio-system")} == {"shop/a"}


def test_virtual_service_exported_to_dot_is_seen_only_in_its_namespace() -> None:
    s = snap(vs("a", "shop", "ratings", '["."]'))
    assert chosen_vs(s, "shop") == "shop/a"
    assert chosen_vs(s, "web") is None


def test_virtual_service_exported_by_name() -> None:
    s = snap(vs("a", "shop", "ratings", '["web"]'))
    assert chosen_vs(s, "web") == "shop/a"
    assert chosen_vs(s, "shop") is None  # not exported to its own namespace
    assert chosen_vs(s, "other") is None


def test_private_beats_exported_by_name_beats_public_whatever_their_age() -> None:
    s = snap(vs("public", "shop", "ratings"), vs("named", "shop", "details", '["web"]'),
             vs("private", "web", "details", '["."]'))
    assert chosen_vs(s, "web") == "web/private"
    s2 = snap(vs("public", "shop", "ratings"), vs("named", "shop", "details", '["web"]'))
    assert chosen_vs(s2, "web") == "shop/named"
    assert chosen_vs(s2, "other") == "shop/public"


def test_oldest_wins_within_a_group() -> None:
    s = snap(vs("old", "shop", "ratings"), vs("new", "web", "details"))
    assert chosen_vs(s, "web") == "shop/old" and chosen_vs(s, "shop") == "shop/old"


def test_destination_rule_lookup_order() -> None:
    # the proxy's namespace first, then the service's, then the root namespace
    s = snap(dr("root", "istio-system", "RANDOM"), dr("svc", "shop", "LEAST_REQUEST"),
             dr("mine", "web", "ROUND_ROBIN"))
    assert chosen_dr(s, "web") == "web/mine"
    assert chosen_dr(s, "other") == "shop/svc"
    assert chosen_dr(s, "shop") == "shop/svc"
    s2 = snap(dr("root", "istio-system", "RANDOM"))
    assert chosen_dr(s2, "other") == "istio-system/root"


def test_destination_rule_export_to_limits_who_uses_it() -> None:
    s = snap(dr("svc", "shop", "LEAST_REQUEST", '["."]'), dr("root", "istio-system", "RANDOM"))
    assert chosen_dr(s, "shop") == "shop/svc"
    assert chosen_dr(s, "web") == "istio-system/root"  # shop's is private: the next place is asked
    s2 = snap(dr("svc", "shop", "LEAST_REQUEST", '["web"]'))
    assert chosen_dr(s2, "web") == "shop/svc"
    assert chosen_dr(s2, "shop") is None and chosen_dr(s2, "other") is None


def test_destination_rule_with_workload_selector_is_private() -> None:
    s = snap(dr("sel", "shop", "LEAST_REQUEST", selector=True))
    assert chosen_dr(s, "shop") == "shop/sel" and chosen_dr(s, "web") is None


def test_root_namespace_proxies_prefer_the_service_namespace_over_public_root_rules() -> None:
    s = snap(dr("root", "istio-system", "RANDOM"), dr("svc", "shop", "LEAST_REQUEST"))
    assert chosen_dr(s, "istio-system") == "shop/svc"
    s2 = snap(dr("root", "istio-system", "RANDOM", '["."]'), dr("svc", "shop", "LEAST_REQUEST"))
    assert chosen_dr(s2, "istio-system") == "istio-system/root"  # its own private one is meant for it


def test_rendered_clusters_follow_the_proxy_namespace() -> None:
    s = snap(dr("mine", "web", "LEAST_REQUEST"))
    r = Renderer(s)
    views = {ns: r.resources_for(Proxy(id=f"p-{ns}", namespace=ns, labels=(("app", "client"),)))
             for ns in ("web", "other")}
    lb = {ns: v[CLUSTER][f"outbound|9080||{HOST}"].message.lb_policy for ns, v in views.items()}
    assert lb == {"web": cluster_pb2.Cluster.LEAST_REQUEST, "other": cluster_pb2.Cluster.ROUND_ROBIN}


def test_rendered_routes_follow_the_proxy_namespace() -> None:
    s = snap(vs("a", "shop", "ratings", '["web"]'))
    r = Renderer(s)

    def cluster_of(ns: str) -> str:
        view = r.resources_for(Proxy(id=f"p-{ns}", namespace=ns, labels=(("app", "client"),)))
        vh = next(vh for rc in view[ROUTE].values() for vh in rc.message.virtual_hosts
                  if vh.name.startswith(HOST))
        return vh.routes[0].route.cluster
    assert cluster_of("web") == "outbound|9080||ratings.shop.svc.cluster.local"
    assert cluster_of("other") == f"outbound|9080||{HOST}"


def test_push_scoping_follows_the_virtual_service_a_proxy_uses() -> None:
    # `web` routes reviews to ratings (its own VirtualService); a change to `details` does not touch it, but
    # a change to ratings does — while `other` (the shop VirtualService: details) is the other way round
    base = vs("shop", "shop", "details") + vs("mine", "web", "ratings", '["."]')
    s = snap(base)
    web = Proxy(id="w", namespace="web", labels=(("app", "client"),))
    other = Proxy(id="o", namespace="other", labels=(("app", "client"),))
    assert "ratings.shop.svc.cluster.local" in dependencies(s.config, web).routed
    assert "details.shop.svc.cluster.local" not in dependencies(s.config, web).routed
    assert "details.shop.svc.cluster.local" in dependencies(s.config, other).routed
    # adding a DestinationRule in `web` for reviews pushes `web` proxies (the host is visible to them)
    s2 = snap(base, dr("mine", "web", "RANDOM"))
    ch = diff(s, s2)
    assert HOST in ch.hosts and affected(ch, web, s, s2)


def test_a_gateway_binds_only_the_virtual_services_exported_to_its_namespace() -> None:
    from mizzen.model import ConfigIndex
    from mizzen.model import gateway as G

    text = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: edge}
spec:
  selector: {istio: ingress}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*/*.example.com"]}]
""" + "".join(f"""---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: shop}}
spec:
  hosts: [{name}.example.com]
  gateways: [edge/public]{exp}
  http: [{{route: [{{destination: {{host: cart}}}}]}}]
""" for name, exp in [("open", ""), ("edge", "\n  exportTo: [edge]"), ("mine", '\n  exportTo: ["."]')])
    cfg = ConfigIndex([r.with_revision(i + 1) for i, r in enumerate(load_text(text).resources)])
    gw = Proxy(id="gw", namespace="edge", kind="gateway", labels=(("istio", "ingress"),))
    (ps,) = G.ports(cfg, gw)
    names = lambda ns: [vs.name for vs, _ in G.bound(cfg, ps.servers[0], ns)]  # noqa: E731
    assert names("edge") == ["open", "edge"]
    assert names("istio-system") == ["open"]
    assert names(None) == ["open", "edge", "mine"]  # not bound to a proxy: every one (analyze)
