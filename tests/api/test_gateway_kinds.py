"""The kinds a gateway needs: v1 Secret (kubernetes.io/tls, data/stringData, checked PEM) and a gateway Workload."""
from __future__ import annotations

import base64
import textwrap

import pytest

from mizzen.api import InvalidConfig, load_text
from mizzen.api.load import from_dict
from tests.tlscerts import ca, leaf


def secret(fields: str) -> str:
    return "apiVersion: v1\nkind: Secret\nmetadata: {name: web-cert, namespace: edge}\ntype: kubernetes.io/tls\n" + fields


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def test_a_tls_secret_in_data_or_string_data_round_trips() -> None:
    cert, key, _ = leaf(ca("c"), ["a.example.com"])
    r = load_text(secret(f"data: {{tls.crt: {_b64(cert)}, tls.key: {_b64(key)}}}\n")).resources[0]
    assert r.spec.tls_material() == (cert, key, None)
    assert from_dict(r.to_dict()).spec == r.spec  # stored under spec, read back the same
    ind = lambda b: textwrap.indent(b.decode(), "    ")  # noqa: E731
    r2 = load_text(secret(f"stringData:\n  tls.crt: |\n{ind(cert)}  tls.key: |\n{ind(key)}")).resources[0]
    assert r2.spec.tls_material()[:2] == (cert, key)


@pytest.mark.parametrize("fields, where, says", [
    ("data: {tls.crt: '!!!'}\n", "data.tls.crt", "base64"),
    ("stringData: {tls.crt: x}\n", "data", "tls.key"),
    ("stringData: {tls.crt: x, tls.key: y}\n", "data.tls.crt", "PEM"),
])
def test_a_broken_tls_secret_is_refused_with_its_field(fields: str, where: str, says: str) -> None:
    with pytest.raises(InvalidConfig) as e:
        load_text(secret(fields))
    msg = str(e.value)
    assert "Secret edge/web-cert" in msg and where in msg and says in msg, msg


def test_a_key_of_another_certificate_is_refused() -> None:
    cert, _, _ = leaf(ca("c"), ["a.example.com"])
    _, other, _ = leaf(ca("c"), ["a.example.com"])
    with pytest.raises(InvalidConfig, match="does not belong"):
        load_text(secret(f"data: {{tls.crt: {_b64(cert)}, tls.key: {_b64(other)}}}\n"))


def wl(spec: str) -> str:
    return f"apiVersion: mizzen.dev/v1\nkind: Workload\nmetadata: {{name: gw}}\nspec: {spec}\n"


def test_gateway_workload_rules() -> None:
    r = load_text(wl("{gateway: true, hostPorts: [{port: 8443, hostPort: 18443}]}")).resources[0]
    assert r.spec.gateway and r.spec.host_ports[0].host_port == 18443 and not r.spec.command
    for spec, says in (("{gateway: true, command: [x]}", "runs no command"),
                       ("{gateway: true, sidecar: false}", "sidecar: false"),
                       ("{gateway: true, ports: [{containerPort: 1}]}", "remove ports"),
                       ("{gateway: true, replicas: 2, hostPorts: [{port: 1, hostPort: 2}]}", "one replica"),
                       ("{command: [x], hostPorts: [{port: 1, hostPort: 2}]}", "only a gateway"),
                       ("{replicas: 1}", "command: field required")):
        with pytest.raises(InvalidConfig, match=says):
            load_text(wl(spec))
