"""Dual mode in a real mesh (netns): one VirtualService (90/10 canary of `echo`) holds for callers of both
kinds — `sleep` (a sidecar) and `sdkclient` (no sidecar, `mizzen.sdk` in process) — and the two kinds call
each other: the sidecar client calls `sdkweb`, a sidecar-less service whose handler calls `echo` (sidecars)
through the SDK. Every observed split matches 90/10 within tolerance; no call fails."""
from __future__ import annotations

import json
import sys
import textwrap

import pytest

from .mesh import ROOT, SLEEP_COMMAND, Mesh, can_run_netns, running_mesh, share

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(can_run_netns() is not None, reason=str(can_run_netns()))]

APP = ROOT / "tests" / "e2e" / "apps" / "policy_app.py"
SDK_APP = ROOT / "tests" / "e2e" / "apps" / "sdk_app.py"
SDK_CLIENT = ROOT / "tests" / "sdk" / "sdk_client.py"
N = 600
MESH = textwrap.dedent(f"""\
    apiVersion: v1
    kind: Service
    metadata: {{name: echo}}
    spec:
      selector: {{app: echo}}
      ports: [{{port: 8080, name: http}}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {{name: sdkweb}}
    spec:
      selector: {{app: sdkweb}}
      ports: [{{port: 8080, name: http}}]
    ---
    apiVersion: mizzen.dev/v1
    kind: Workload
    metadata: {{name: echo-v1, labels: {{app: echo, version: v1}}}}
    spec: {{replicas: 2, command: [{sys.executable}, {APP}], ports: [{{containerPort: 8080}}]}}
    ---
    apiVersion: mizzen.dev/v1
    kind: Workload
    metadata: {{name: echo-v2, labels: {{app: echo, version: v2}}}}
    spec: {{replicas: 1, command: [{sys.executable}, {APP}], ports: [{{containerPort: 8080}}]}}
    ---
    apiVersion: mizzen.dev/v1
    kind: Workload
    metadata: {{name: sdkweb, labels: {{app: sdkweb}}}}
    spec: {{sidecar: false, command: [{sys.executable}, {SDK_APP}], ports: [{{containerPort: 8080}}]}}
    ---
    apiVersion: mizzen.dev/v1
    kind: Workload
    metadata: {{name: sdkclient, labels: {{app: sdkclient}}}}
    spec: {{sidecar: false, command: {SLEEP_COMMAND}}}
    ---
    apiVersion: mizzen.dev/v1
    kind: Workload
    metadata: {{name: sleep, labels: {{app: sleep}}}}
    spec: {{command: {SLEEP_COMMAND}}}
    ---
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata: {{name: echo}}
    spec:
      host: echo
      subsets:
      - {{name: v1, labels: {{version: v1}}}}
      - {{name: v2, labels: {{version: v2}}}}
    ---
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {{name: echo}}
    spec:
      hosts: [echo]
      http:
      - route:
        - {{destination: {{host: echo, subset: v1}}, weight: 90}}
        - {{destination: {{host: echo, subset: v2}}, weight: 10}}
    """)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with running_mesh(tmp_path_factory.mktemp("dual"), text=MESH) as m:
        yield m


def test_one_canary_split_for_sidecar_and_sdk_callers(mesh: Mesh) -> None:
    sidecar = mesh.load("sleep-0", "http://echo:8080/", count=N)
    p = mesh.exec("sdkclient-0", sys.executable, str(SDK_CLIENT), "http://echo:8080/", "--state-dir",
                  str(mesh.state_dir), "--snapshot-file", str(mesh.state_dir / "sdkclient-snapshot.json"), "--calls", str(N))
    assert p.returncode == 0, p.stdout + p.stderr
    sdk = json.loads(p.stdout.strip().splitlines()[-1])
    # a sidecar caller of the SDK service, which calls echo through the SDK
    via = mesh.load("sleep-0", "http://sdkweb:8080/", count=N)
    for name, r in (("sidecar", sidecar), ("sdk", sdk), ("sidecar→sdk service→echo", via)):
        total = sum(r["served_by"].values())
        assert total == N and not r["errors"] and r["status"] == {"200": N}, (name, r)
        v2 = share(r["served_by"], "echo-v2")
        print(f"{name}: v2 share {v2:.1f}% of {total}")
        assert 5.0 <= v2 <= 16.0, (name, r)
        assert {k.rsplit("-", 1)[0] for k in r["served_by"]} == {"echo-v1", "echo-v2"}, (name, r)
