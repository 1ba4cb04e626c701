"""PeerAuthentication: validation (errors name the field), Istio's precedence, auto-mTLS endpoint modes, and
push scoping (which proxies a change reaches)."""
from __future__ import annotations

import textwrap

import pytest

from mizzen.api import InvalidConfig, load_text
from mizzen.model import Instance, Proxy, Snapshot
from mizzen.model.dependencies import affected, dependencies, diff
from mizzen.model.security import DISABLE, PERMISSIVE, STRICT, compose, endpoint_tls_mode, namespace_mode


def pa(name: str, ns: str, mode: str | None = None, labels: dict | None = None, ports: dict | None = None) -> str:
    spec = {}
    if labels:
        spec["selector"] = {"matchLabels": labels}
    if mode:
        spec["mtls"] = {"mode": mode}
    if ports:
        spec["portLevelMtls"] = {p: {"mode": m} for p, m in ports.items()}
    import yaml
    return yaml.safe_dump({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                           "metadata": {"name": name, "namespace": ns}, "spec": spec})


def load(*docs: str):
    res = load_text("---\n".join(docs), file="pa.yaml").resources
    return [r.with_revision(i + 1) for i, r in enumerate(res)]  # oldest first, as the store orders them


def test_no_policy_is_permissive():
    assert compose([], "shop", {"app": "x"}).mode == PERMISSIVE
    assert not compose([], "shop", {}).explicit


def test_precedence_workload_over_namespace_over_mesh_and_unset_inherits():
    pas = load(pa("default", "istio-system", "STRICT"), pa("default", "shop", "DISABLE"),
               pa("cart", "shop", "UNSET", {"app": "cart"}, {8080: "UNSET", 9000: "STRICT"}))
    m = compose(pas, "shop", {"app": "cart"})
    assert m.mode == DISABLE  # namespace wins over mesh; the workload's UNSET inherits it
    assert m.for_port(8080) == DISABLE and m.for_port(9000) == STRICT and m.for_port(1234) == DISABLE
    assert compose(pas, "shop", {"app": "pay"}).mode == DISABLE
    assert compose(pas, "other", {"app": "cart"}).mode == STRICT  # mesh-wide only
    assert [str(k) for k in m.sources] == ["PeerAuthentication/istio-system/default",
                                           "PeerAuthentication/shop/default", "PeerAuthentication/shop/cart"]


def test_oldest_policy_wins_at_a_level_and_root_selector_is_for_root_workloads_only():
    pas = load(pa("a", "shop", "STRICT", {"app": "cart"}), pa("b", "shop", "DISABLE", {"tier": "web"}),
               pa("sel", "istio-system", "DISABLE", {"app": "cart"}))
    assert compose(pas, "shop", {"app": "cart", "tier": "web"}).mode == STRICT
    assert compose(pas, "istio-system", {"app": "cart"}).mode == DISABLE
    assert compose(pas, "other", {"app": "cart"}).mode == PERMISSIVE


def test_endpoint_tls_mode_follows_sidecar_and_port_policy():
    snap = Snapshot.build(load(pa("pay", "shop", None, {"app": "pay"}, {8080: "DISABLE"}),
                               pa("default", "legacy", "DISABLE")), [])
    cfg = snap.config
    assert endpoint_tls_mode(cfg, True, "shop", (("app", "pay"),), 8080) == "disabled"
    assert endpoint_tls_mode(cfg, True, "shop", (("app", "pay"),), 9090) == "istio"
    assert endpoint_tls_mode(cfg, False, "shop", (("app", "x"),), 9090) == "disabled"
    assert namespace_mode(cfg, "legacy") == DISABLE and namespace_mode(cfg, "shop") == PERMISSIVE


@pytest.mark.parametrize("doc,path,words", [
    (pa("x", "shop", None, None, {8080: "STRICT"}), "spec", "portLevelMtls needs a selector"),
    (pa("x", "shop", "STRICTEST"), "spec.mtls.mode", "STRICT"),
    (pa("x", "shop", None, {"app": "a"}, {70000: "STRICT"}), "spec.portLevelMtls", "not a TCP port"),
    (pa("x", "shop", None, {"app": "a"}, {"http": "STRICT"}), "spec.portLevelMtls", "not a port number"),
    (pa("x", "shop", "STRICT").replace("mtls:", "mutualTls:"), "spec.mutualTls", "unknown field"),
])
def test_bad_peer_authentication_is_refused_naming_the_field(doc, path, words):
    with pytest.raises(InvalidConfig) as e:
        load_text(doc, file="pa.yaml")
    issue = e.value.issues[0]
    assert issue.kind == "PeerAuthentication" and issue.name == "x" and issue.file == "pa.yaml"
    assert issue.path == path and words in issue.message, issue


@pytest.mark.parametrize("tls,words", [
    ("{mode: MUTUAL, caCertificates: /etc/ca.pem}", "client certificate required for mutual tls"),
    ("{mode: ISTIO_MUTUAL, clientCertificate: /a.pem, privateKey: /k.pem}", "ISTIO_MUTUAL uses the mesh"),
    ("{mode: SIMPLE, credentialName: c, caCertificates: /ca.pem}", "cannot specify client certificates"),
    ("{mode: MTLS}", "Input should be"),
])
def test_bad_destination_rule_tls_is_refused(tls, words):
    doc = textwrap.dedent(f"""\
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {{name: r}}
        spec:
          host: r
          trafficPolicy:
            tls: {tls}
        """)
    with pytest.raises(InvalidConfig) as e:
        load_text(doc, file="dr.yaml")
    issue = e.value.issues[0]
    assert issue.path.startswith("spec.trafficPolicy.tls") and words in issue.message, issue


SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {selector: {app: cart}, ports: [{port: 8080, name: http}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: front}
spec: {selector: {app: web}, ports: [{port: 8080, name: http}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: front}
spec:
  egress: [{hosts: ["./*"]}]
"""


def proxy(ns: str, app: str) -> Proxy:
    return Proxy(id=f"{app}.{ns}", namespace=ns, labels=(("app", app),), trust_domain="cluster.local")


def test_push_scoping_a_namespace_policy_reaches_its_workloads_and_their_callers_only():
    insts = [Instance("shop.cart-0", "shop", "cart", "10.244.0.2", (8080,), (("app", "cart"),)),
             Instance("front.web-0", "front", "web", "10.244.0.3", (8080,), (("app", "web"),))]
    old = Snapshot.build(load(SERVICES), insts)
    new = Snapshot.build(load(SERVICES, pa("default", "shop", "STRICT")), insts)
    change = diff(old, new)
    assert "cart.shop.svc.cluster.local" in change.hosts and "web.front.svc.cluster.local" not in change.hosts
    cart, caller, web = proxy("shop", "cart"), proxy("shop", "cli"), proxy("front", "web")
    assert affected(change, cart, old, new)  # its inbound listener
    assert affected(change, caller, old, new)  # sees cart: its clusters/endpoints may change
    assert not affected(change, web, old, new)  # front's Sidecar hides shop: nothing of it changes
    assert any(k.kind == "PeerAuthentication" for k in dependencies(new.config, cart).configs)
