"""Which AuthorizationPolicies and RequestAuthentications apply to a proxy (Istio's rules), HTTP-only fields on
TCP ports, egress mode resolution, and push scoping for security policy and fetched JWKS."""
from __future__ import annotations

from mizzen.api import load_text
from mizzen.model import authz
from mizzen.model.authz import Jwks
from mizzen.model.dependencies import affected, diff
from mizzen.model.snapshot import ConfigIndex, MeshSettings, Snapshot
from mizzen.model.types import Proxy

BASE = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{port: 8080, name: http}, {port: 9000, name: tcp-raw}]
  selector: {app: web}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-deny, namespace: istio-system}
spec:
  action: DENY
  rules: [{from: [{source: {namespaces: [evil]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ns-allow, namespace: shop}
spec:
  rules: [{to: [{operation: {methods: [GET]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-only, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: AUDIT
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: by-target, namespace: shop}
spec:
  targetRefs: [{kind: Service, name: web}]
  action: DENY
  rules: [{to: [{operation: {paths: [/admin]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: gateway-only, namespace: shop}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: elsewhere, namespace: other}
spec: {}
"""


def _index(text: str = BASE) -> ConfigIndex:
    res = load_text(text).resources
    return ConfigIndex([r.with_revision(i + 1) for i, r in enumerate(res)])


WEB = Proxy(id="web", namespace="shop", labels=(("app", "web"),), ports=(8080, 9000))
DB = Proxy(id="db", namespace="shop", labels=(("app", "db"),))
OTHER = Proxy(id="o", namespace="other", labels=(("app", "web"),))


def names(rs) -> list[str]:
    return [r.name for r in rs]


def test_policies_for_a_proxy_root_namespace_first_then_selector_and_target_refs() -> None:
    idx = _index()
    p = idx.resolved.authorization_for(WEB)
    assert names(p.deny) == ["mesh-deny", "by-target"]  # root namespace first, then the proxy's
    assert names(p.allow) == ["ns-allow"]  # gateway-only binds no sidecar
    assert names(p.audit) == ["web-only"]
    q = idx.resolved.authorization_for(DB)
    assert names(q.deny) == ["mesh-deny"] and names(q.audit) == [] and names(q.allow) == ["ns-allow"]
    assert names(idx.resolved.authorization_for(OTHER).allow) == ["elsewhere"]
    assert idx.resolved.authorization_for(Proxy(id="x", namespace="empty")).deny[0].name == "mesh-deny"
    assert authz.authorization_for(_index(BASE.split("---")[0]), WEB).empty


def test_may_apply_is_a_superset_of_applies() -> None:
    idx = _index()
    for r in idx.by_kind["AuthorizationPolicy"]:
        for proxy in (WEB, DB, OTHER):
            if authz.applies(idx, r, proxy):
                assert authz.may_apply(r, proxy), (r.name, proxy.id)


def test_http_only_fields_and_tcp_findings() -> None:
    text = BASE + """---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  command: [python3, web.py]
  ports: [{containerPort: 8080}, {containerPort: 9000}]
"""
    idx = _index(text)
    by = {r.name: r for r in idx.by_kind["AuthorizationPolicy"]}
    assert authz.http_only_fields(by["ns-allow"].spec.rules[0]) == ["to[0].operation.methods"]
    found = authz.http_on_tcp(idx, by["ns-allow"])
    assert [(f.workload, f.port) for f in found] == [("shop/web", 9000)]
    assert "allows nothing on that port" in found[0].message
    deny = authz.http_on_tcp(idx, by["by-target"])
    assert [(f.workload, f.port) for f in deny] == [("shop/web", 9000)]
    assert "denies every connection to that port" in deny[0].message
    assert authz.deny_http_only(by["by-target"])[0][0] == "spec.rules[0]"
    assert authz.http_on_tcp(idx, by["mesh-deny"]) == []  # namespaces work on TCP


def test_request_authentications_and_jwks_uris() -> None:
    idx = _index("""
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: mesh, namespace: istio-system}
spec:
  jwtRules: [{issuer: a, jwksUri: "http://127.0.0.1:1/a"}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  jwtRules: [{issuer: b, jwksUri: "http://127.0.0.1:1/b", jwks: '{"keys": [{"kty": "oct", "k": "x"}]}'}]
""")
    assert names(idx.resolved.request_authentications_for(WEB)) == ["mesh", "web"]
    assert names(idx.resolved.request_authentications_for(DB)) == ["mesh"]
    assert authz.jwks_uris(idx) == {"http://127.0.0.1:1/a"}  # inline jwks wins: b is never fetched
    assert names(authz.users_of_jwks(idx, ["http://127.0.0.1:1/a"])) == ["mesh"]


SIDECARS = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: open, namespace: shop}
spec:
  egress: [{hosts: ["./*"]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: locked, namespace: shop}
spec:
  workloadSelector: {labels: {app: db}}
  outboundTrafficPolicy: {mode: ALLOW_ANY}
"""


def test_outbound_mode_from_the_sidecar_that_applies_else_the_mesh_default() -> None:
    snap = Snapshot(_index(SIDECARS), Snapshot.build([], []).endpoints)
    assert snap.outbound_mode(Proxy(id="x", namespace="other")) == "REGISTRY_ONLY"  # root Sidecar
    assert snap.outbound_mode(WEB) == "ALLOW_ANY"  # shop's Sidecar replaces the root one and sets no mode
    assert snap.outbound_mode(DB) == "ALLOW_ANY"
    strict = Snapshot(snap.config, snap.endpoints, mesh=MeshSettings("REGISTRY_ONLY"))
    assert strict.outbound_mode(WEB) == "REGISTRY_ONLY"  # the control plane's default
    assert strict.outbound_mode(DB) == "ALLOW_ANY"  # a Sidecar that says so wins
    # a Sidecar with only an outboundTrafficPolicy still distinguishes its proxies' views
    assert snap.config.sidecar_scope(DB).key == "shop/locked"


def test_a_policy_change_pushes_only_the_proxies_it_may_apply_to() -> None:
    old = Snapshot(_index(), Snapshot.build([], []).endpoints)
    changed = BASE.replace("rules: [{to: [{operation: {methods: [GET]}}]}]", "rules: [{}]")
    new = Snapshot(ConfigIndex.updated(old.config, {r.key: r.with_revision(99) for r in load_text(changed).resources
                                                    if r.name == "ns-allow"}, 2), old.endpoints)
    change = diff(old, new)
    assert [r.name for r in change.resources] == ["ns-allow", "ns-allow"] and not change.everything
    assert affected(change, WEB, old, new) and affected(change, DB, old, new)
    assert not affected(change, OTHER, old, new)


def test_fetched_jwks_change_pushes_the_proxies_of_its_request_authentication() -> None:
    text = BASE + """---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: web-jwt, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  jwtRules: [{issuer: b, jwksUri: "http://127.0.0.1:1/keys"}]
"""
    old = Snapshot(_index(text), Snapshot.build([], []).endpoints)
    new = old.with_jwks({"http://127.0.0.1:1/keys": Jwks('{"keys": []}')}, 2)
    change = diff(old, new)
    assert [r.name for r in change.resources] == ["web-jwt"]
    assert affected(change, WEB, old, new) and not affected(change, DB, old, new)
    assert diff(new, new.with_jwks(dict(new.jwks), 3)).empty  # the same keys again: nothing to push
