"""IST0134 (ServiceEntry addresses required): a TCP port — however its protocol is spelled — or a port with no
protocol needs an address to be told apart from others on the same port. Mizzen gives every named host an
address (written into the pods' hosts files, as Istio's DNS capture with auto-allocation does, when istioctl
is silent too), so only wildcard hosts, which get none, are reported."""
from __future__ import annotations

import pytest

from mizzen.analyze import analyze
from mizzen.analyze.inputs import read_for_analysis


def se(host: str, protocol: str | None, addresses: str = "") -> str:
    proto = f", protocol: {protocol}" if protocol is not None else ""
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: e, namespace: default}}
spec:
  hosts: ["{host}"]{addresses}
  ports: [{{number: 22, name: ssh{proto}}}]
  resolution: NONE
  location: MESH_EXTERNAL
"""


def ist0134(text: str) -> list[str]:
    resources, workloads, _ = read_for_analysis([("in.yaml", text)])
    return [m.path for m in analyze(resources, workloads, only=["service_entry_addresses"]) if m.code == "IST0134"]


@pytest.mark.parametrize("protocol", ["TCP", "tcp", "Tcp", None])
def test_tcp_or_no_protocol_on_a_wildcard_host_without_addresses(protocol) -> None:
    assert ist0134(se("*.db.example.com", protocol)) == ["spec.ports[0]"]


@pytest.mark.parametrize("protocol", ["HTTP", "https", "TLS", "grpc"])
def test_protocols_told_apart_by_their_content_need_no_address(protocol) -> None:
    assert ist0134(se("*.db.example.com", protocol)) == []


def test_an_address_or_a_named_host_is_enough() -> None:
    assert ist0134(se("*.db.example.com", "tcp", "\n  addresses: [10.9.0.0/24]")) == []
    assert ist0134(se("db.example.com", "tcp")) == []  # Mizzen allocates its address
