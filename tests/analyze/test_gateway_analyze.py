"""`mizzen analyze` on gateways Mizzen runs: a credentialName without its Secret (IST0101, in the gateway
workload's namespace), a MUTUAL server without a client CA, and no IST0162 for a gateway Workload (no Service)."""
from __future__ import annotations

import textwrap

from mizzen.analyze import analyze
from mizzen.api import load_text
from tests.tlscerts import ca, leaf

GW = """
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
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, credentialName: a-cert}
  - port: {number: 9443, name: mtls, protocol: HTTPS}
    hosts: [b.example.com]
    tls: {mode: MUTUAL, credentialName: b-cert}
"""


def secret(name: str, ns: str) -> str:
    cert, key, _ = leaf(ca("c"), ["a.example.com"])
    ind = lambda b: textwrap.indent(b.decode(), "    ")  # noqa: E731
    return f"---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ntype: kubernetes.io/tls\n" \
           f"stringData:\n  tls.crt: |\n{ind(cert)}  tls.key: |\n{ind(key)}"


def messages(text: str) -> list[str]:
    return [f"{m.code} {m.message}" for m in analyze(load_text(text).resources) if m.code in ("IST0101", "IST0162")]


def test_missing_credentials_are_reported_in_the_gateway_workloads_namespace() -> None:
    assert messages(GW) == ["IST0101 Referenced credentialName not found: 'a-cert'",
                            "IST0101 Referenced credentialName not found: 'b-cert'"]
    # a Secret in another namespace than the gateway's does not count
    assert len(messages(GW + secret("a-cert", "default"))) == 2
    assert messages(GW + secret("a-cert", "edge") + secret("b-cert", "edge")) == [
        "IST0101 Referenced credentialName not found: 'b-cert-cacert'"]  # MUTUAL needs the client CA
    assert messages(GW + secret("a-cert", "edge") + secret("b-cert", "edge") + secret("b-cert-cacert", "edge")) == []


def test_gateway_api_config_that_is_not_served_is_reported() -> None:
    text = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: mizzen
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: a.example.com}
  - name: https
    port: 443
    protocol: HTTPS
    tls: {certificateRefs: [{name: c, namespace: other}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: team}
spec:
  parentRefs: [{name: edge, namespace: infra}, {name: nope}]
  rules: [{backendRefs: [{name: s, namespace: bank, port: 80}]}]
"""
    text_all = "\n".join(m.message for m in analyze(load_text(text).resources) if m.code == "MZ0112")
    assert "the Secret other/c is in another namespace and no ReferenceGrant there" in text_all
    assert "not attached to Gateway infra/edge" in text_all  # Same namespace only by default
    assert "no Gateway team/nope" in text_all
    assert "no ReferenceGrant" in text_all


def test_a_credential_of_another_namespace_is_looked_up_there() -> None:
    """`kubernetes-gateway://<ns>/<name>` (what a Gateway API certificateRef granted by a ReferenceGrant
    becomes) names the Secret's namespace."""
    text = GW.replace("credentialName: a-cert", "credentialName: kubernetes-gateway://certs/c")
    assert messages(text + secret("b-cert", "edge") + secret("b-cert-cacert", "edge")) == [
        "IST0101 Referenced credentialName not found: 'kubernetes-gateway://certs/c'"]
    assert messages(text + secret("b-cert", "edge") + secret("b-cert-cacert", "edge") + secret("c", "certs")) == []
