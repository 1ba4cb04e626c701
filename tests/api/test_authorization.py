"""AuthorizationPolicy and RequestAuthentication: Istio's YAML accepted as Istio documents it, and every bad
input refused with the file, document, resource and field named (nothing applied)."""
from __future__ import annotations

import json

import pytest

from mizzen.api import InvalidConfig, load_text
from mizzen.api.kinds import resolve_kind

ISTIO_SAMPLES = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin, version: v1}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/sleep"]}
    - source: {namespaces: ["dev"]}
    to:
    - operation: {methods: ["GET"]}
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.google.com"]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: bar}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: foo}
spec:
  action: DENY
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: foo}
spec:
  action: AUDIT
  rules:
  - to:
    - operation: {paths: ["/user/profile/*"], ports: [8080, "9090"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry-run
  namespace: foo
  annotations: {istio.io/dry-run: "true"}
spec:
  action: DENY
  rules:
  - from: [{source: {notIpBlocks: ["1.2.3.4", "10.0.0.0/8", "2001:db8::/32"], remoteIpBlocks: ["5.6.7.8"]}}]
    to: [{operation: {notPaths: ["/healthz", "/api/{*}/x/{**}"], hosts: ["*.example.com"]}}]
    when:
    - {key: source.serviceAccount, values: ["default/sleep", "curl"]}
    - key: experimental.envoy.filters.network.mysql_proxy[db.table]
      values: ["[update]"]
    - {key: connection.sni, notValues: ["*.internal"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: by-service, namespace: foo}
spec:
  targetRefs: [{kind: Service, group: "", name: httpbin}]
  rules: [{from: [{source: {serviceAccounts: ["sleep"]}}]}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt-example, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwksUri: "https://raw.githubusercontent.com/istio/istio/release-1.24/security/tools/jwt/samples/jwks.json"
    fromHeaders: [{name: x-jwt-assertion, prefix: "Bearer "}]
    fromParams: [my_token]
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders: [{header: x-jwt-claim-foo, claim: foo}]
    forwardOriginalToken: true
    timeout: 3s
"""


def test_istio_documents_load() -> None:
    res = load_text(ISTIO_SAMPLES).resources
    assert [r.name for r in res] == ["httpbin", "allow-nothing", "deny-all", "audit", "dry-run", "by-service",
                                     "jwt-example"]
    assert res[1].spec.action == "ALLOW" and res[1].spec.rules is None
    assert res[3].spec.rules[0].operations[0].ports == ["8080", "9090"]  # YAML numbers taken as Istio's strings
    assert res[5].spec.target_references[0].kind == "Service"
    assert resolve_kind("ap").kind == "AuthorizationPolicy"
    assert resolve_kind("requestauthentications").kind == "RequestAuthentication"


def _ap(spec: str, name: str = "p") -> str:
    return f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: ns}}\n" \
           f"spec:\n{spec}"


BAD = [
    ("  action: CUSTOM\n  provider: {name: ext}\n  rules: [{}]\n", "spec", "CUSTOM is not supported"),
    ("  action: DENY\n", "spec", "DENY action without `rules`"),
    ("  provider: {name: x}\n  rules: [{}]\n", "spec", "`provider` must not be set"),
    ("  selector: {matchLabels: {app: a}}\n  targetRefs: [{kind: Service, name: a}]\n", "spec", "only one of"),
    ("  selector: {matchLabels: {app: '*'}}\n", "spec.selector.matchLabels", "wildcard is not supported"),
    ("  rules: [{from: []}]\n", "spec.rules[0]", "`from` must not be empty"),
    ("  rules: [{to: []}]\n", "spec.rules[0]", "`to` must not be empty"),
    ("  rules: [{from: [{source: {}}]}]\n", "spec.rules[0].from[0].source", "`from.source` must not be empty"),
    ("  rules: [{to: [{operation: {}}]}]\n", "spec.rules[0].to[0].operation", "`to.operation` must not be empty"),
    ("  rules: [{from: [{source: {principals: ['spiffe://cluster.local/ns/a/sa/b']}}]}]\n",
     "spec.rules[0].from[0].source.principals", "without 'spiffe://'"),
    ("  rules: [{from: [{source: {principals: ['cluster.local/ns/*/sa/x']}}]}]\n",
     "spec.rules[0].from[0].source.principals", "can never match"),
    ("  rules: [{from: [{source: {namespaces: ['']}}]}]\n", "spec.rules[0].from[0].source.namespaces",
     "empty value"),
    ("  rules: [{from: [{source: {ipBlocks: ['10.0.0.0/33']}}]}]\n", "spec.rules[0].from[0].source.ipBlocks",
     "bad CIDR range"),
    ("  rules: [{from: [{source: {notRemoteIpBlocks: ['1.2.3']}}]}]\n",
     "spec.rules[0].from[0].source.notRemoteIpBlocks", "bad IP address"),
    ("  rules: [{from: [{source: {serviceAccounts: ['a/b/c']}}]}]\n",
     "spec.rules[0].from[0].source.serviceAccounts", "expected 'serviceAccount'"),
    ("  rules: [{from: [{source: {serviceAccounts: ['a'], namespaces: ['b']}}]}]\n",
     "spec.rules[0].from[0].source", "cannot set serviceAccounts with namespaces"),
    ("  rules: [{to: [{operation: {ports: ['http']}}]}]\n", "spec.rules[0].to[0].operation.ports", "bad port"),
    ("  rules: [{to: [{operation: {ports: [70000]}}]}]\n", "spec.rules[0].to[0].operation.ports", "bad port"),
    ("  rules: [{to: [{operation: {paths: ['/a/{**}/b/{*}']}}]}]\n", "spec.rules[0].to[0].operation.paths",
     "must be the last operator"),
    ("  rules: [{to: [{operation: {paths: ['/a/{id}']}}]}]\n", "spec.rules[0].to[0].operation.paths",
     "outside a {*} or {**} template"),
    ("  rules: [{when: [{key: 'request.headers[x]'}]}]\n", "spec.rules[0].when[0]", "at least one of `values`"),
    ("  rules: [{when: [{key: 'request.header[x]', values: [a]}]}]\n", "spec.rules[0].when[0]", "unknown attribute"),
    ("  rules: [{when: [{key: 'request.headers[]', values: [a]}]}]\n", "spec.rules[0].when[0]", "bad key"),
    ("  rules: [{when: [{key: destination.namespace, values: [a]}]}]\n", "spec.rules[0].when[0]",
     "replaced by the policy's metadata.namespace"),
    ("  rules: [{when: [{key: source.ip, values: [nope]}]}]\n", "spec.rules[0].when[0]", "bad IP address"),
    ("  rules: [{when: [{key: destination.port, notValues: ['-1']}]}]\n", "spec.rules[0].when[0]", "bad port"),
    ("  action: MAYBE\n", "spec.action", "Input should be"),
    ("  rules: [{form: [{source: {principals: ['a/ns/b/sa/c']}}]}]\n", "spec.rules[0].form", "unknown field"),
]


@pytest.mark.parametrize("spec,path,fragment", BAD, ids=[b[2][:30] for b in BAD])
def test_bad_authorization_policy_is_refused_with_its_field(spec: str, path: str, fragment: str) -> None:
    with pytest.raises(InvalidConfig) as e:
        load_text(_ap(spec), file="policy.yaml")
    issues = e.value.issues
    assert any(i.path == path and fragment in i.message for i in issues), [str(i) for i in issues]
    i = issues[0]
    assert (i.file, i.document, i.kind, i.namespace, i.name) == ("policy.yaml", 0, "AuthorizationPolicy", "ns", "p")


def _ra(rules: str) -> str:
    return f"apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: r, namespace: ns}}\n" \
           f"spec:\n  jwtRules:\n{rules}"


BAD_RA = [
    ("  - {issuer: x}\n", "spec.jwtRules[0]", "OpenID discovery"),
    ("  - {jwks: '{\"keys\": []}', audiences: ['']}\n", "spec.jwtRules[0].audiences", "non-empty"),
    ("  - {issuer: x, jwks: 'nope'}\n", "spec.jwtRules[0].jwks", "not valid JSON"),
    ("  - {issuer: x, jwks: '{\"keys\": [{\"kty\": \"EC\", \"crv\": \"P-256\"}]}'}\n", "spec.jwtRules[0].jwks",
     "missing x, y"),
    ("  - {issuer: x, jwksUri: 'file:///etc/passwd'}\n", "spec.jwtRules[0].jwksUri", "not supported"),
    ("  - {issuer: x, jwksUri: 'http://h/k', fromHeaders: [{name: 'bad header'}]}\n",
     "spec.jwtRules[0].fromHeaders[0].name", "not a valid header name"),
    ("  - {issuer: x, jwksUri: 'http://h/k', timeout: 'soon'}\n", "spec.jwtRules[0].timeout", "invalid duration"),
    ("  - {issuer: x, jwksUri: 'http://h/k', outputClaimToHeaders: [{header: h}]}\n",
     "spec.jwtRules[0].outputClaimToHeaders[0].claim", "Field required"),
]


@pytest.mark.parametrize("rules,path,fragment", BAD_RA, ids=[b[2][:30] for b in BAD_RA])
def test_bad_request_authentication_is_refused_with_its_field(rules: str, path: str, fragment: str) -> None:
    with pytest.raises(InvalidConfig) as e:
        load_text(_ra(rules), file="ra.yaml")
    assert any(i.path == path and fragment in i.message for i in e.value.issues), [str(i) for i in e.value.issues]


def test_inline_jwks_is_checked_as_a_key_set() -> None:
    good = json.dumps({"keys": [{"kty": "RSA", "n": "abc", "e": "AQAB"}]})
    r = load_text(_ra(f"  - issuer: x\n    jwks: '{good}'\n")).resources[0]
    assert r.spec.jwt_rules[0].jwks == good


def test_sidecar_outbound_traffic_policy() -> None:
    doc = """apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: s, namespace: ns}
spec:
  outboundTrafficPolicy: %s
"""
    assert load_text(doc % "{mode: ALLOW_ANY}").resources[0].spec.outbound_traffic_policy.mode == "ALLOW_ANY"
    assert load_text(doc % "{}").resources[0].spec.outbound_traffic_policy.mode == "REGISTRY_ONLY"  # Istio's default
    with pytest.raises(InvalidConfig) as e:
        load_text(doc % "{mode: BLOCK}")
    assert e.value.issues[0].path == "spec.outboundTrafficPolicy.mode"
    with pytest.raises(InvalidConfig) as e:
        load_text(doc % "{mode: ALLOW_ANY, egressProxy: {host: x}}")
    assert "egressProxy port must be set" in e.value.issues[0].message  # Istio's rule; no effect (MZ0110)
