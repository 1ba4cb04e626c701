"""Push scoping as a pure function: what changed (`diff`), what a proxy depends on (`dependencies`), and so
whom a change reaches (`affected`). Each case pairs a proxy that must be pushed with one that must not."""
from __future__ import annotations

from dataclasses import replace

import pytest

from mizzen.api import load_text
from mizzen.model import ConfigIndex, Instance, Proxy, Snapshot, affected, diff
from mizzen.model import dependencies as D
from mizzen.model.dependencies import dependencies

BASE = """---
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: default}
spec: {ports: [{port: 8080, name: tcp-main}], selector: {app: hello}}
---
apiVersion: v1
kind: Service
metadata: {name: front, namespace: default}
spec: {ports: [{port: 9080, name: http}], selector: {app: front}}
---
apiVersion: v1
kind: Service
metadata: {name: back, namespace: default}
spec: {ports: [{port: 9080, name: http}], selector: {app: back}}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {ports: [{port: 9080, name: http}], selector: {app: cart}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: front, namespace: default}
spec:
  hosts: [front]
  http: [{route: [{destination: {host: back}}]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: hello, namespace: default}
spec:
  workloadSelector: {labels: {app: hello}}
  egress: [{hosts: ["./front.default.svc.cluster.local"]}]
"""
HELLO = Proxy(id="hello", namespace="default", labels=(("app", "hello"),), ports=(8080,))
SHOP = Proxy(id="shop", namespace="shop", labels=(("app", "cart"),), ports=(9080,))
WIDE = Proxy(id="wide", namespace="default", labels=(("app", "other"),))


def index(text: str, first_revision: int = 1) -> ConfigIndex:
    return ConfigIndex([r.with_revision(first_revision + i) for i, r in enumerate(load_text(text).resources)])


def change(before: str, after: str):
    """Snapshots of two configs, revisions as the store gives them (an unchanged resource keeps its own)."""
    old = Snapshot(index(before), Snapshot.build([], []).endpoints)
    kept = {r.key: r for rs in old.config.by_kind.values() for r in rs}
    rs = []
    for i, r in enumerate(load_text(after).resources):
        prev = kept.get(r.key)
        rs.append(prev if prev is not None and prev.to_dict() == r.to_dict() else r.with_revision(100 + i))
    new = Snapshot(ConfigIndex(rs), old.endpoints)
    return diff(old, new), old, new


def test_dependencies_cover_visible_own_and_routed_hosts() -> None:
    deps = dependencies(index(BASE), HELLO)
    assert deps.visible == {"front.default.svc.cluster.local"}  # the Sidecar hides the rest
    assert deps.own == {"hello.default.svc.cluster.local"}  # its inbound listener follows this Service
    assert deps.routed == {"back.default.svc.cluster.local"}  # front's routes send there
    assert ("Sidecar", "default", "hello") in {(k.kind, k.namespace, k.name) for k in deps.configs}


def test_own_service_protocol_change_reaches_the_proxy_its_sidecar_hides_it_from() -> None:
    ch, old, new = change(BASE, BASE.replace("tcp-main", "http-main"))
    assert ch.hosts == {"hello.default.svc.cluster.local"}
    assert affected(ch, HELLO, old, new)
    assert "hello.default.svc.cluster.local" not in dependencies(new.config, HELLO).visible
    assert affected(ch, SHOP, old, new)  # no Sidecar: it sees hello too
    front = Proxy(id="f", namespace="default", labels=(("app", "hello-front"),))
    scoped = BASE.replace("labels: {app: hello}}", "labels: {app: hello-front}}")  # the Sidecar is front's now
    ch, old, new = change(scoped, scoped.replace("tcp-main", "http-main"))
    assert not affected(ch, front, old, new)  # sees only front, routes to back: hello is nothing to it


def test_a_routed_hosts_destination_rule_reaches_callers_that_cannot_see_it() -> None:
    dr = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: back}\n" \
         "spec: {host: back, trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}}\n"
    ch, old, new = change(BASE, BASE + dr)
    assert ch.hosts == {"back.default.svc.cluster.local"}
    assert affected(ch, HELLO, old, new)  # front's route to back gets a hash policy
    scoped = Proxy(id="s", namespace="shop", labels=(("app", "cart"),))
    only_cart = BASE + "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s, namespace: shop}\n" \
                       "spec: {egress: [{hosts: [\"./*\"]}]}\n"
    ch2, old2, new2 = change(only_cart, only_cart + dr)
    assert not affected(ch2, scoped, old2, new2)  # sees only shop/*: nothing of back reaches it


def test_a_host_that_disappears_reaches_proxies_that_saw_it() -> None:
    without_cart = BASE.replace("metadata: {name: cart, namespace: shop}", "metadata: {name: cart2, namespace: shop}")
    ch, old, new = change(BASE, without_cart)
    assert "cart.shop.svc.cluster.local" in ch.hosts
    assert affected(ch, WIDE, old, new)  # saw cart before: it must lose the cluster
    assert not affected(ch, HELLO, old, new)


def test_sidecar_change_reaches_only_proxies_whose_scope_changes() -> None:
    ch, old, new = change(BASE, BASE.replace('"./front.default.svc.cluster.local"', '"./*"'))
    assert not ch.hosts and [r.kind for r in ch.resources] == ["Sidecar", "Sidecar"]  # old and new versions
    assert affected(ch, HELLO, old, new)
    assert not affected(ch, WIDE, old, new) and not affected(ch, SHOP, old, new)


@pytest.mark.parametrize("kind_doc, pushed, spared", [
    ("apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: default}\n"
     "spec: {selector: {matchLabels: {app: hello}}, accessLogging: [{providers: [{name: envoy}]}]}\n", HELLO, WIDE),
    ("apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: istio-system}\n"
     "spec: {accessLogging: [{providers: [{name: envoy}]}]}\n", SHOP, None),
    ("apiVersion: mizzen.dev/v1\nkind: EnvoyPatch\nmetadata: {name: p, namespace: shop}\n"
     "spec: {patches: [{applyTo: CLUSTER, operation: REMOVE, name: x}]}\n", SHOP, HELLO),
])
def test_per_proxy_kinds_reach_the_proxies_they_select(kind_doc: str, pushed: Proxy, spared: Proxy | None) -> None:
    ch, old, new = change(BASE, BASE + "---\n" + kind_doc)
    assert not ch.hosts and len(ch.resources) == 1
    assert affected(ch, pushed, old, new)
    if spared is not None:
        assert not affected(ch, spared, old, new)


def test_kinds_no_sidecar_depends_on_push_nobody_and_unknown_kinds_push_everybody(monkeypatch) -> None:
    wl = "---\napiVersion: mizzen.dev/v1\nkind: Workload\nmetadata: {name: w}\nspec: {command: [sleep, '1']}\n"
    sec = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {a: b}\n"
    ch, _, _ = change(BASE, BASE + wl + sec)
    assert ch.empty
    monkeypatch.setattr(D, "IGNORED_KINDS", D.IGNORED_KINDS - {"Secret"})  # as if Secret were a new kind
    ch, old, new = change(BASE, BASE + sec)
    assert ch.everything and affected(ch, SHOP, old, new)


GATEWAY = Proxy(id="gw", namespace="istio-system", labels=(("app", "gw"),), kind="gateway")


def test_a_gateway_reaches_gateway_proxies_only() -> None:
    gw = "---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\n" \
         "spec: {selector: {app: gw}, servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]}\n"
    ch, old, new = change(BASE, BASE + gw)
    assert not ch.hosts and len(ch.resources) == 1
    assert affected(ch, GATEWAY, old, new)
    assert not affected(ch, SHOP, old, new) and not affected(ch, HELLO, old, new)


def test_a_gateway_only_virtual_service_reaches_the_gateways() -> None:
    vs = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: edge}\n" \
         "spec: {hosts: [www.example.com], gateways: [istio-system/g], http: [{route: [{destination: {host: x}}]}]}\n"
    ch, old, new = change(BASE, BASE + vs)
    assert ch.hosts == {"www.example.com"}
    assert affected(ch, GATEWAY, old, new)
    assert not affected(ch, SHOP, old, new)


def test_endpoint_changes_reach_the_proxies_that_see_the_service() -> None:
    config = index(BASE)
    back = Instance(id="default.back-0", namespace="default", workload="back", address="10.0.0.1", ports=(9080,),
                    labels=(("app", "back"),))
    old = Snapshot.build([], [back])
    old = Snapshot(config, old.endpoints)
    new = old.with_endpoints(type(old.endpoints)([replace(back, address="10.0.0.2")]), 2)
    ch = diff(old, new)
    assert ch.hosts == {"back.default.svc.cluster.local"}
    assert affected(ch, WIDE, old, new)
    scoped = Proxy(id="s", namespace="shop", labels=(("app", "cart"),))
    only_shop = Snapshot(index(BASE + "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\n"
                               "metadata: {name: s, namespace: shop}\nspec: {egress: [{hosts: [\"./*\"]}]}\n"),
                         old.endpoints)
    assert not affected(ch, scoped, only_shop, only_shop.with_endpoints(new.endpoints, 3))


def test_selector_index_finds_exactly_the_services_a_brute_force_match_finds():
    """diff() looks up the services selecting a changed instance through an index (O(its labels), not
    O(services)); it must find the same services as matching every selector."""
    import random

    from mizzen.model.labels import labels_match
    from mizzen.model.services import Service

    rng = random.Random(7)
    keys, values = ["app", "version", "tier"], ["a", "b", "c"]
    services = []
    for i in range(300):
        sel = tuple(sorted({(k, rng.choice(values)) for k in rng.sample(keys, rng.randrange(0, 3))}))
        services.append(Service(hostname=f"s{i}.{'ns1' if i % 3 else 'ns2'}.svc.cluster.local", name=f"s{i}",
                                namespace="ns1" if i % 3 else "ns2", ports=(), selector=sel))
    index = D.selector_index(services)
    for _ in range(500):
        ns = rng.choice(["ns1", "ns2", "ns3"])
        labels = {k: rng.choice(values) for k in rng.sample(keys, rng.randrange(0, 4))}
        want = {s.hostname for s in services if s.namespace == ns and s.selector and labels_match(s.selector, labels)}
        assert D.services_selecting(index, ns, labels) == want, (ns, labels)
