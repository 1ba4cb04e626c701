"""Gateway API → Istio shapes (model/gateway_api.py): attachment rules (sectionName, allowedRoutes, hostnames),
precedence, PathPrefix segments, filters, ReferenceGrant, GAMMA; and the rules the API refuses at apply."""
from __future__ import annotations

import pytest

from mizzen.api import InvalidConfig, load_text
from mizzen.model import ConfigIndex

GW = """
apiVersion: v1
kind: Namespace
metadata: {name: team, labels: {edge: allowed}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: mizzen
  listeners:
  - {name: same, port: 80, protocol: HTTP, hostname: same.example.com}
  - {name: all, port: 80, protocol: HTTP, hostname: "*.all.example.com", allowedRoutes: {namespaces: {from: All}}}
  - name: sel
    port: 8080
    protocol: HTTP
    allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {edge: allowed}}}}
"""


def route(ns: str, name: str, body: str) -> str:
    return f"---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\n" \
           f"spec:\n{body}"


def vss(text: str) -> dict[str, object]:
    idx = ConfigIndex([r.with_revision(i + 1) for i, r in enumerate(load_text(text).resources)])
    return {f"{v.namespace}/{v.name}": v for v in idx.by_kind.get("VirtualService", ())}


def test_listeners_become_istio_gateways_selected_by_the_gateway_name_label() -> None:
    idx = ConfigIndex(load_text(GW).resources)
    gws = {g.name: g for g in idx.by_kind["Gateway"]}
    assert set(gws) == {"edge-k8s-same", "edge-k8s-all", "edge-k8s-sel"}
    assert gws["edge-k8s-all"].spec.selector == {"gateway.networking.k8s.io/gateway-name": "edge"}
    assert gws["edge-k8s-all"].spec.servers[0].hosts == ["*/*.all.example.com"]


def test_attachment_follows_allowed_routes_section_name_and_hostnames() -> None:
    back = "  rules: [{backendRefs: [{name: s, port: 80}]}]\n"
    out = vss(GW
              + route("infra", "a", "  parentRefs: [{name: edge}]\n" + back)  # same ns: every listener that allows
              + route("team", "b", "  parentRefs: [{name: edge, namespace: infra}]\n  hostnames: [x.all.example.com, "
                                   "nope.example.org]\n" + back)
              + route("other", "c", "  parentRefs: [{name: edge, namespace: infra, sectionName: sel}]\n" + back))
    assert set(out) == {"infra/edge-k8s-same-same-example-com", "infra/edge-k8s-all-wildcard-all-example-com",
                        "infra/edge-k8s-all-x-all-example-com", "infra/edge-k8s-sel-x-all-example-com",
                        "infra/edge-k8s-sel-nope-example-org"}
    # `same` admits infra's route only; `sel` admits namespaces labelled edge=allowed (team), not infra or other
    assert [r.name for r in out["infra/edge-k8s-same-same-example-com"].spec.http] == ["infra.a.0.0.0"]
    assert [r.name for r in out["infra/edge-k8s-sel-nope-example-org"].spec.http] == ["team.b.0.0.0"]
    allx = out["infra/edge-k8s-all-x-all-example-com"]
    assert [r.name for r in allx.spec.http] == ["team.b.0.0.0"]


def test_precedence_and_path_prefix_segments() -> None:
    body = """  parentRefs: [{name: edge, namespace: infra, sectionName: all}]
  hostnames: [p.all.example.com]
  rules:
  - backendRefs: [{name: s, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /a}}]
    backendRefs: [{name: s, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /a/b/}}, {path: {type: Exact, value: /a}, method: GET}]
    backendRefs: [{name: s, port: 80}]
"""
    vs = vss(GW + route("team", "p", body))["infra/edge-k8s-all-p-all-example-com"]
    uris = [(r.match[0].uri.exact, r.match[0].uri.prefix) for r in vs.spec.http]
    assert uris == [("/a", None), ("/a/b", None), (None, "/a/b/"), ("/a", None), (None, "/a/"), (None, "/")]
    assert vs.spec.http[0].match[0].method.exact == "GET"  # Exact first
    # longest prefix first; `/a` is `/a` or `/a/...`, never `/ab`


def test_reference_grant_filters_and_gamma() -> None:
    body = """  parentRefs: [{name: edge, namespace: infra, sectionName: all}]
  hostnames: [g.all.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /granted}}]
    backendRefs: [{name: s, namespace: shop, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /refused}}]
    backendRefs: [{name: s, namespace: bank, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /r}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]
"""
    grant = """---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: shop}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: team}]
  to: [{group: "", kind: Service, name: s}]
"""
    gamma = route("team", "m", "  parentRefs: [{group: '', kind: Service, name: api}]\n"
                               "  rules: [{backendRefs: [{name: api-v2, port: 80}]}]\n")
    out = vss(GW + grant + route("team", "g", body) + gamma)
    vs = out["infra/edge-k8s-all-g-all-example-com"]
    by_name = {r.name: r for r in vs.spec.http}
    assert by_name["team.g.0.0.1"].route[0].destination.host == "s.shop.svc.cluster.local"
    assert by_name["team.g.1.0.1"].direct_response.status == 500  # no grant in bank
    assert by_name["team.g.2.0.1"].redirect.scheme == "https" and by_name["team.g.2.0.1"].redirect.redirect_code == 301
    mesh = out["team/api-gamma"]
    assert mesh.spec.hosts == ["api.team.svc.cluster.local"] and not mesh.spec.gateways
    assert mesh.spec.http[0].route[0].destination.host == "api-v2.team.svc.cluster.local"


@pytest.mark.parametrize("spec, says", [
    ("{gatewayClassName: x, listeners: [{name: a, port: 443, protocol: HTTPS}]}", "needs tls"),
    ("{gatewayClassName: x, listeners: [{name: a, port: 80, protocol: HTTP}, {name: a, port: 81, protocol: HTTP}]}",
     "unique"),
    ("{gatewayClassName: x, listeners: [{name: a, port: 443, protocol: HTTPS, tls: {mode: Terminate}}]}",
     "certificateRef"),
])
def test_gateway_rules(spec: str, says: str) -> None:
    with pytest.raises(InvalidConfig, match=says):
        load_text(f"apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: g}}\nspec: {spec}\n")


def test_route_rules() -> None:
    with pytest.raises(InvalidConfig, match="needs a port"):
        load_text(route("d", "r", "  rules: [{backendRefs: [{name: s}]}]\n"))
    with pytest.raises(InvalidConfig, match="cannot be used together"):
        load_text(route("d", "r", "  rules: [{filters: [{type: RequestRedirect, requestRedirect: {}}, "
                                  "{type: URLRewrite, urlRewrite: {}}]}]\n"))
    with pytest.raises(InvalidConfig, match="kind"):
        load_text(route("d", "r", "  parentRefs: [{name: x, kind: Pod}]\n"))


def test_grpc_route_method_matches_as_paths_in_precedence_order() -> None:
    body = """  parentRefs: [{name: edge, namespace: infra, sectionName: all}]
  hostnames: [g.all.example.com]
  rules:
  - matches: [{method: {service: pkg.Svc}}]
    backendRefs: [{name: svc-all, port: 50051}]
  - matches: [{method: {service: pkg.Svc, method: Get}, headers: [{name: x-v, value: "2"}]}]
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: x-gw, value: "1"}]}}]
    backendRefs: [{name: svc-get, port: 50051}]
  - matches: [{method: {method: Ping}}]
    backendRefs: [{name: ping, port: 50051}]
  - backendRefs: [{name: rest, port: 50051}]
"""
    doc = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: g, namespace: team}\n" \
          "spec:\n" + body
    vs = vss(GW + doc)["infra/edge-k8s-all-g-all-example-com"]
    got = [(r.match[0].uri.exact or r.match[0].uri.prefix or r.match[0].uri.regex, r.route[0].destination.host)
           for r in vs.spec.http]
    assert got == [("/pkg.Svc/Get", "svc-get.team.svc.cluster.local"), ("/pkg.Svc/", "svc-all.team.svc.cluster.local"),
                   ("/[^/]+/Ping", "ping.team.svc.cluster.local"), ("/", "rest.team.svc.cluster.local")]
    assert vs.spec.http[0].match[0].headers["x-v"].exact == "2"
    assert vs.spec.http[0].headers.request.add == {"x-gw": "1"}
    with pytest.raises(InvalidConfig, match="service or method"):
        load_text(doc.replace("{method: {method: Ping}}", "{method: {}}"))


def test_a_rewrite_rule_without_valid_backends_answers_500_and_never_breaks_the_index() -> None:
    body = """  parentRefs: [{name: edge, namespace: infra, sectionName: all}]
  hostnames: [w.all.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /x}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}]
    backendRefs: [{name: s, namespace: nowhere, port: 80}]
"""
    vs = vss(GW + route("team", "w", body))["infra/edge-k8s-all-w-all-example-com"]
    assert all(r.direct_response.status == 500 and r.rewrite is None for r in vs.spec.http)


def test_certificate_refs_across_namespaces_need_a_reference_grant() -> None:
    gw = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: mizzen
  listeners:
  - {name: own, port: 443, protocol: HTTPS, hostname: own.example.com, tls: {certificateRefs: [{name: c}]}}
  - {name: granted, port: 443, protocol: HTTPS, hostname: g.example.com,
     tls: {certificateRefs: [{name: c, namespace: certs}]}}
  - {name: refused, port: 443, protocol: HTTPS, hostname: r.example.com,
     tls: {certificateRefs: [{name: other, namespace: certs}]}}
  - {name: wrong-from, port: 443, protocol: HTTPS, hostname: w.example.com,
     tls: {certificateRefs: [{name: c, namespace: vault}]}}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]
  to: [{group: "", kind: Secret, name: c}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: vault}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra}]   # routes, not Gateways
  to: [{group: "", kind: Secret}]
"""
    from mizzen.model.gateway_api import INPUT_KINDS, convert, parse_credential
    from mizzen.translate.gateway import credential_secret

    idx = ConfigIndex(load_text(gw).resources)
    creds = {g.name: g.spec.servers[0].tls.credential_name for g in idx.by_kind["Gateway"]}
    assert creds == {"edge-k8s-own": "c", "edge-k8s-granted": "kubernetes-gateway://certs/c"}
    assert parse_credential(creds["edge-k8s-granted"]) == ("certs", "c") and parse_credential("c") == (None, "c")
    assert credential_secret("c") == "kubernetes://c"
    assert credential_secret(creds["edge-k8s-granted"]) == "kubernetes-gateway://certs/c"  # Istio's SDS name
    problems: list = []
    resources = load_text(gw).resources
    convert({k: [r for r in resources if r.kind == k] for k in INPUT_KINDS}, 1, problems)
    said = {path: why for _r, path, why in problems}
    assert set(said) == {"spec.listeners[2].tls.certificateRefs[0]", "spec.listeners[3].tls.certificateRefs[0]"}
    assert "no ReferenceGrant" in said["spec.listeners[2].tls.certificateRefs[0]"]
