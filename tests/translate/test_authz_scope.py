"""Security policy changes only the proxies it applies to: a policy in namespace A leaves every rendered byte
of a proxy in namespace B as it was (and a proxy no policy applies to keeps byte-identical listeners)."""
from __future__ import annotations

from mizzen.api import load_text
from mizzen.model import Snapshot
from mizzen.model.types import Proxy
from mizzen.translate import Renderer

SERVICES = """apiVersion: v1
kind: Service
metadata: {name: web, namespace: a}
spec:
  ports: [{port: 8080, name: http}, {port: 9000, name: tcp-x}]
  selector: {app: web}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: b}
spec:
  ports: [{port: 8080, name: http}]
  selector: {app: api}
"""
POLICIES = """---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: lock, namespace: a}
spec: {}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: a}
spec:
  jwtRules: [{issuer: x, jwksUri: "https://x.example/keys"}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: locked, namespace: a}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"""


def view(text: str, proxy: Proxy) -> dict:
    res = load_text(text).resources
    snap = Snapshot.build([r.with_revision(i + 1) for i, r in enumerate(res)], [])
    return {t: {n: r.payload for n, r in v.items()} for t, v in Renderer(snap).resources_for(proxy).items()}


def test_a_policy_in_one_namespace_changes_no_byte_of_another() -> None:
    in_b = Proxy(id="b", namespace="b", labels=(("app", "api"),), ports=(8080,))
    in_a = Proxy(id="a", namespace="a", labels=(("app", "web"),), ports=(8080, 9000))
    assert view(SERVICES, in_b) == view(SERVICES + POLICIES, in_b)
    assert view(SERVICES, in_a) != view(SERVICES + POLICIES, in_a)
