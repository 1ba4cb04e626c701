"""`mizzen analyze` for mTLS: Istio's codes (IST0113, IST0127, IST0128/9) and Mizzen's MZ0105, with hints."""
from __future__ import annotations

from mizzen.analyze import analyze
from mizzen.api import load_text

BASE = """\
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {selector: {app: cart}, ports: [{port: 8080, name: http}, {port: 9000, name: http-admin}]}
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: cart, namespace: shop, labels: {app: cart}}
spec: {command: [app], ports: [{containerPort: 8080}, {containerPort: 9000}]}
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: legacy, namespace: shop, labels: {app: legacy}}
spec: {command: [app], sidecar: false}
---
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: shop}
spec: {selector: {app: legacy}, ports: [{port: 8080, name: http}]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: cart-admin, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  portLevelMtls: {9000: {mode: DISABLE}}
"""


def messages(*docs: str):
    return analyze(load_text("---\n".join((BASE,) + docs)).resources)


def test_a_clean_mtls_config_has_no_findings():
    assert [m for m in messages() if m.code.startswith(("IST01", "MZ0105"))] == []


def test_plaintext_destination_rule_towards_strict_workload_is_ist0113():
    msgs = messages("""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart, namespace: shop}
spec:
  host: cart
  trafficPolicy:
    tls: {mode: DISABLE}
    portLevelSettings:
    - port: {number: 9000}
      tls: {mode: ISTIO_MUTUAL}
""")
    got = {(m.code, m.level, m.path) for m in msgs if m.code == "IST0113"}
    # 8080: DISABLE towards STRICT; 9000: ISTIO_MUTUAL towards the workload's port-level DISABLE
    assert got == {("IST0113", "Error", "spec.trafficPolicy.tls"),
                   ("IST0113", "Error", "spec.trafficPolicy.portLevelSettings[0].tls")}, msgs
    text = {m.path: m.message for m in msgs if m.code == "IST0113"}
    assert 'cart.shop.svc.cluster.local:8080' in text["spec.trafficPolicy.tls"]
    assert 'mTLS must be false' in text["spec.trafficPolicy.tls"] and 'specifies STRICT' in text["spec.trafficPolicy.tls"]
    assert 'shop/cart-admin' in text["spec.trafficPolicy.portLevelSettings[0].tls"]
    assert all(m.hint for m in msgs)


def test_istio_mutual_to_a_workload_without_sidecar_is_ist0113():
    msgs = messages("""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: legacy, namespace: shop}
spec:
  host: legacy
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
""")
    [m] = [m for m in msgs if m.code == "IST0113"]
    assert "mTLS must be true" in m.message and "Plaintext" in m.message and "Workload shop/legacy" in m.message


def test_selector_matching_nothing_and_strict_without_sidecar():
    msgs = messages("""\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: typo, namespace: shop}
spec:
  selector: {matchLabels: {app: kart}}
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: legacy, namespace: shop}
spec:
  selector: {matchLabels: {app: legacy}}
  mtls: {mode: STRICT}
""")
    got = {(m.code, m.resource) for m in msgs if m.code in ("IST0127", "MZ0105")}
    assert got == {("IST0127", "PeerAuthentication shop/typo"), ("MZ0105", "PeerAuthentication shop/legacy")}


def test_simple_tls_without_ca_or_with_skip_verify_is_ist0128_ist0129():
    msgs = messages("""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bank, namespace: shop}
spec:
  host: api.bank.example
  trafficPolicy:
    tls: {mode: SIMPLE}
    portLevelSettings:
    - port: {number: 8443}
      tls: {mode: SIMPLE, insecureSkipVerify: true}
""")
    got = {(m.code, m.level) for m in msgs if m.code in ("IST0128", "IST0129")}
    # istioctl's level for both (analyze/checks.py): the port-level rule skips verification, still IST0129
    assert got == {("IST0128", "Warning"), ("IST0129", "Warning")}
