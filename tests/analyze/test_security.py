"""`mizzen analyze` on AuthorizationPolicy/RequestAuthentication: policies that can never match or that do
something else than they seem to, with Istio's codes where istioctl has one; and the same findings as
warnings when such a policy is applied."""
from __future__ import annotations

from pathlib import Path

from mizzen.analyze import analyze
from mizzen.api import load_text
from mizzen.registry.embedded import EmbeddedRegistry
from mizzen.server.authzcheck import authz_warnings
from mizzen.server.core import ControlPlaneCore
from mizzen.store.sqlite import SqliteStore

MESH = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{port: 8080, name: http}, {port: 9000, name: tcp-raw}]
  selector: {app: web}
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  command: [python3, web.py]
  ports: [{containerPort: 8080}, {containerPort: 9000}]
  serviceAccount: web
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: sleep, namespace: shop, labels: {app: sleep}}
spec:
  command: [sleep, infinity]
  serviceAccount: sleep
"""

POLICIES = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: from-ghosts, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules:
  - from:
    - source:
        namespaces: [ghost, "sh*"]
        principals: ["cluster.local/ns/phantom/sa/x", "cluster.local/ns/shop/sa/sleep", "cluster.local/ns/shop/sa/nobody",
                     "sleep"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-only, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{to: [{operation: {methods: [GET]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-delete, namespace: shop}
spec:
  action: DENY
  rules: [{to: [{operation: {methods: [DELETE]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-policy, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: shop}
spec:
  selector: {matchLabels: {app: sleep}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: typo, namespace: shop}
spec:
  selector: {matchLabels: {app: wbe}}
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: needs-jwt, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {requestPrincipals: ["*"]}}], to: [{operation: {ports: ["8080"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: via-gateway, namespace: shop}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}, {kind: Service, name: missing}]
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: lockdown, namespace: istio-system}
spec:
  action: DENY
  rules: [{}]
"""


def messages(text: str) -> list[tuple[str, str, str, str]]:
    return [(m.code, m.level, m.resource, m.path) for m in analyze(load_text(text).resources)]


def test_security_analyzers() -> None:
    got = messages(MESH + "---" + POLICIES)
    want = {
        ("IST0101", "Error", "AuthorizationPolicy shop/from-ghosts", "spec.rules[0].from[0].source.namespaces[0]"),
        ("IST0101", "Error", "AuthorizationPolicy shop/from-ghosts", "spec.rules[0].from[0].source.principals[0]"),
        ("MZ0205", "Warning", "AuthorizationPolicy shop/from-ghosts", "spec.rules[0].from[0].source.principals[2]"),
        # valid Istio (it loads), but not a workload identity: no mesh certificate matches it
        ("MZ0205", "Warning", "AuthorizationPolicy shop/from-ghosts", "spec.rules[0].from[0].source.principals[3]"),
        ("MZ0201", "Warning", "AuthorizationPolicy shop/get-only", "spec.rules[0]"),
        ("MZ0201", "Warning", "AuthorizationPolicy shop/no-delete", "spec.rules[0]"),
        ("MZ0202", "Warning", "AuthorizationPolicy shop/no-delete", "spec.rules[0]"),
        ("MZ0203", "Warning", "AuthorizationPolicy shop/web-policy", "spec.rules"),
        ("MZ0203", "Info", "AuthorizationPolicy shop/allow-nothing", "spec.rules"),
        ("IST0127", "Warning", "AuthorizationPolicy shop/typo", "spec.selector"),
        ("MZ0204", "Warning", "AuthorizationPolicy shop/needs-jwt", "spec.rules[0]"),
        ("MZ0206", "Warning", "AuthorizationPolicy shop/via-gateway", "spec.targetRefs[0]"),
        ("IST0101", "Error", "AuthorizationPolicy shop/via-gateway", "spec.targetRefs[1]"),
        ("MZ0207", "Info", "AuthorizationPolicy istio-system/lockdown", "spec.rules"),
    }
    assert want <= set(got), sorted(set(got))
    extra = set(got) - want
    # nothing else is said about these policies (no false alarms on the sound parts)
    assert not [m for m in extra if "from-ghosts" in m[2] and m[0] != "IST0127"], extra
    assert not [m for m in extra if "needs-jwt" in m[2] and m[0] == "MZ0201"], extra  # it names port 8080 (HTTP)


def test_messages_say_what_happens_and_how_to_fix() -> None:
    by = {(m.code, m.resource): m for m in analyze(load_text(MESH + "---" + POLICIES).resources)
          if m.path != "spec.rules[0].from[0].source.principals[0]"}
    m = by[("MZ0201", "AuthorizationPolicy shop/get-only")]
    assert "TCP port 9000 of workload shop/web" in m.message and "allows nothing" in m.message and m.hint
    m = by[("MZ0201", "AuthorizationPolicy shop/no-delete")]
    assert "denies every connection to that port" in m.message
    assert "ghost" in by[("IST0101", "AuthorizationPolicy shop/from-ghosts")].message
    assert "rules: [{}]" in by[("MZ0203", "AuthorizationPolicy shop/web-policy")].hint


def test_clean_policies_give_no_message() -> None:
    clean = MESH + """---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: readers, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/sleep"]}}]
    to: [{operation: {methods: [GET], ports: ["8080"]}}]
  - from: [{source: {namespaces: [shop]}}]
    to: [{operation: {ports: ["9000"]}}]
"""
    assert [m for m in messages(clean) if m[2].startswith("AuthorizationPolicy")] == []


def test_apply_answers_with_the_tcp_warnings(tmp_path: Path) -> None:
    core = ControlPlaneCore(SqliteStore(tmp_path / "s.db"), EmbeddedRegistry(tmp_path / "r.db"),
                            advisors=[authz_warnings])
    core.apply([("mesh.yaml", MESH)])
    out = core.apply([("p.yaml", POLICIES)])
    warnings = "\n".join(out["warnings"])
    assert "AuthorizationPolicy shop/get-only field spec.rules[0]: rule 0 uses HTTP-only fields" in warnings
    assert "AuthorizationPolicy shop/no-delete field spec.rules[0]: this DENY rule uses only HTTP attributes" \
        in warnings
    assert {a["name"] for a in out["applied"]} >= {"get-only", "no-delete"}  # warnings never refuse
    assert core.apply([("p.yaml", POLICIES)])["warnings"] == []  # the same again: said once is enough
    assert core.apply([("mesh.yaml", MESH.replace("sleep infinity", "sleep 1d"))])["warnings"] == []
    # a Workload that puts an existing policy on a TCP port is warned about too
    out = core.apply([("w.yaml", MESH.replace("{containerPort: 9000}", "{containerPort: 9001}"))])
    assert any("TCP port 9001" in w for w in out["warnings"]), out["warnings"]
    assert authz_warnings([], []) == []


def test_policies_selecting_a_gateway_are_checked_against_its_server_ports() -> None:
    """The policies selecting a gateway workload act on its Gateway servers' chains: an HTTP-only rule there
    is reported for a TLS passthrough port (TCP chains), not for its HTTPS port."""
    gw = """
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: ingress, namespace: edge, labels: {istio: ingressgateway}}
spec: {gateway: true}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: edge}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 8443, name: https, protocol: HTTPS}, hosts: [a.example.com], tls: {mode: SIMPLE, credentialName: c}}
  - {port: {number: 9443, name: tls, protocol: TLS}, hosts: [b.example.com], tls: {mode: PASSTHROUGH}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: edge-paths, namespace: edge}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  rules: [{to: [{operation: {paths: [/public/*]}}]}]
"""
    found = [m for m in analyze(load_text(gw).resources) if m.code == "MZ0201"]
    assert [m.resource for m in found] == ["AuthorizationPolicy edge/edge-paths"], found
    assert "TCP port 9443 of workload edge/ingress" in found[0].message
