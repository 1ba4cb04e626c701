"""Proxyless gRPC in a real mesh (netns mode): a grpcio client with an `xds:///` target, in a pod without a
sidecar (`client`, annotated `mizzen.dev/proxyless`), its GRPC_XDS_BOOTSTRAP written by `mizzen
proxyless-bootstrap`, calls `echo` (three replicas with sidecars: echo-v1 ×2, echo-v2 ×1) split 90/10 by a
VirtualService; follows a change (how fast is printed, not judged); keeps calling with its last config while the control plane is SIGKILLed
and held down (runner SIGSTOPped); reconnects by itself once the runner restarts it and follows the next
change. Assertions on counts and states, never on timings."""
from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time

import pytest

from tests.proxyless.harness import Client, totals

from .mesh import ROOT, Mesh, can_run_netns, running_mesh

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(can_run_netns() is not None, reason=str(can_run_netns()))]

APP = ROOT / "tests" / "e2e" / "apps" / "policy_app.py"
MESH = textwrap.dedent(f"""\
    apiVersion: v1
    kind: Service
    metadata: {{name: echo}}
    spec:
      selector: {{app: echo}}
      ports: [{{port: 50051, name: grpc}}]
    ---
    apiVersion: mizzen.dev/v1
    kind: Workload
    metadata: {{name: echo-v1, labels: {{app: echo, version: v1}}}}
    spec:
      replicas: 2
      command: [{sys.executable}, {APP}]
      ports: [{{containerPort: 8080}}, {{containerPort: 50051}}]
    ---
    apiVersion: mizzen.dev/v1
    kind: Workload
    metadata: {{name: echo-v2, labels: {{app: echo, version: v2}}}}
    spec:
      replicas: 1
      command: [{sys.executable}, {APP}]
      ports: [{{containerPort: 8080}}, {{containerPort: 50051}}]
    ---
    apiVersion: mizzen.dev/v1
    kind: Workload
    metadata: {{name: client, labels: {{app: client}}, annotations: {{mizzen.dev/proxyless: "true"}}}}
    spec:
      sidecar: false
      command: [sh, -c, "trap 'exit 0' TERM INT; while true; do sleep 3600 & wait $!; done"]
    ---
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata: {{name: echo}}
    spec:
      host: echo
      subsets:
      - {{name: v1, labels: {{version: v1}}}}
      - {{name: v2, labels: {{version: v2}}}}
    """)


def split(v1: int, v2: int) -> str:
    return textwrap.dedent(f"""\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {{name: echo}}
        spec:
          hosts: [echo]
          http:
          - route:
            - {{destination: {{host: echo, subset: v1}}, weight: {v1}}}
            - {{destination: {{host: echo, subset: v2}}, weight: {v2}}}
        """)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with running_mesh(tmp_path_factory.mktemp("proxyless"), text=MESH) as m:
        yield m


def _share(ws: list[dict], prefix: str) -> tuple[float, int]:
    served, _ = totals(ws)
    n = sum(served.values())
    return (sum(v for k, v in served.items() if k.startswith(prefix)) / n if n else 0.0), n


def test_proxyless_client_in_a_pod_without_sidecar(mesh: Mesh) -> None:
    mesh.apply_text(split(90, 10))
    boot = mesh.state_dir.parent / "client.bootstrap.json"
    mesh.cli("proxyless-bootstrap", "client", "-o", str(boot))
    # the runner wrote the pod's own (its app gets GRPC_XDS_BOOTSTRAP pointing at it)
    own = json.loads((mesh.state_dir / "pods" / "client-0" / "grpc-bootstrap.json").read_text())
    assert "~client-0.default~" in own["node"]["id"] and own["node"]["metadata"]["PROXY_TYPE"] == "proxyless"
    assert own["xds_servers"] == json.loads(boot.read_text())["xds_servers"]
    prefix = (sys.executable, "-m", "mizzen.cli.main", "exec", "--state-dir", str(mesh.state_dir), "client-0", "--")
    c = Client(boot, "xds:///echo:50051", seconds=90, rps=150, prefix=prefix)
    try:
        first = c.wait_until(lambda w: sum(w["served"].values()) > 0, 60, "first answers")
        time.sleep(5)
        share, n = _share(c.since(first + 0.5), "echo-v2")
        served, errors = totals(c.since(first))
        assert n > 400 and 0.05 <= share <= 0.16, (share, served)
        assert not errors, errors
        assert {k.rsplit("-", 1)[0] for k in served} == {"echo-v1", "echo-v2"} and len(served) == 3, served

        mesh.apply_text(split(0, 100))
        t0 = time.monotonic()
        at = c.wait_until(lambda w: w["at"] > t0 and w["served"] and all(k.startswith("echo-v2") for k in w["served"]),
                          15, "all on v2")
        print(f"proxyless client in a pod: only v2 {at - t0:.2f}s after the apply returned")  # reported, not judged

        st = mesh.status()
        cp = next(x for x in st["components"] if x["kind"] == "controlplane")
        runner = st["runner"]["pid"]
        os.kill(runner, signal.SIGSTOP)
        try:
            os.kill(cp["pid"], signal.SIGKILL)
            killed = time.monotonic()
            time.sleep(8)
            served, errors = totals(c.since(killed + 0.3))
            assert not errors and sum(served.values()) > 600, (served, errors)
            assert all(k.startswith("echo-v2") for k in served), served  # its last config
        finally:
            os.kill(runner, signal.SIGCONT)
        mesh.wait_synced(timeout=120)
        mesh.apply_text(split(100, 0))
        t1 = time.monotonic()
        c.wait_until(lambda w: w["at"] > t1 and w["served"] and all(k.startswith("echo-v1") for k in w["served"]),
                     60, "back on v1 after the control plane's restart")
    finally:
        c.stop()
    _, errors = totals(c.windows)
    assert not errors, errors
