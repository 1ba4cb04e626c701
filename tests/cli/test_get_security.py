"""`mizzen get` shows AuthorizationPolicies and RequestAuthentications (action, where they apply, rules;
issuers), against the real REST server of tests/cli/conftest.py."""
from __future__ import annotations

from pathlib import Path

POLICIES = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: istio-system}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: readers, namespace: shop, annotations: {istio.io/dry-run: "true"}}
spec:
  selector: {matchLabels: {app: web}}
  action: DENY
  rules: [{to: [{operation: {methods: [DELETE]}}]}, {}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: shop}
spec:
  targetRefs: [{kind: Service, name: web}]
  jwtRules: [{issuer: "https://issuer.example", jwksUri: "https://issuer.example/keys"}]
"""


def test_get_shows_security_policies(cli, tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(POLICIES)
    r = cli("apply", "-f", str(f))
    assert r.exit_code == 0, r.stderr
    assert "authorizationpolicy.security.istio.io/readers created" in r.stdout
    lines = cli("get", "ap", "-A").stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "ACTION", "APPLIES-TO", "RULES", "REVISION"]
    assert lines[1].split()[:4] == ["istio-system", "allow-nothing", "ALLOW", "mesh"]
    assert "none: allows nothing" in lines[1]
    assert lines[2].split()[:4] == ["shop", "readers", "DENY", "(dry-run)"] and "app=web" in lines[2]
    out = cli("get", "requestauthentications", "-n", "shop").stdout.splitlines()
    assert out[0].split()[:4] == ["NAMESPACE", "NAME", "APPLIES-TO", "ISSUERS"]
    assert out[1].split()[:4] == ["shop", "jwt", "Service/web", "https://issuer.example"]
