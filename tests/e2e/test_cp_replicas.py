"""Two control-plane replicas on one store: every sidecar lists both (its xds-grpc cluster has an endpoint
per replica, its agent both REST sockets); when replica 0 is SIGKILLed, proxies reconnect to replica 1,
traffic never fails, and config applied through replica 1 reaches them. (Replica 1 is killed first, so that
every proxy is on replica 0 when it goes: each Envoy's ADS stream picks either replica at start.)

A small real mesh (netns mode): `web` v1 and v2 (the echo server) and the `sleep` client; load runs inside
`sleep` through its sidecar at ~200 rps. Assertions are on outcomes (counts, states), never on timings.
"""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from .mesh import ROOT, Mesh, can_run_netns, running_mesh

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(can_run_netns() is not None, reason=str(can_run_netns()))]

WEB = "http://web:8080/"
PODS = 3  # web-v1-0, web-v2-0, sleep-0
MESH = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 8080, name: http}]
  selector: {app: web}
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: web-v1, labels: {app: web, version: v1}}
spec:
  command: [python3, %(echo)s]
  env: {SERVED_BY: web-v1}
  ports: [{containerPort: 8080}]
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: web-v2, labels: {app: web, version: v2}}
spec:
  command: [python3, %(echo)s]
  env: {SERVED_BY: web-v2}
  ports: [{containerPort: 8080}]
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: sleep, labels: {app: sleep}}
spec:
  command: [sh, -c, "trap 'exit 0' TERM INT; while true; do sleep 3600 & wait $!; done"]
"""
ROUTE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - route:
    - destination: {host: web, subset: %s}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Mesh:
    with running_mesh(tmp_path_factory.mktemp("cpreplicas"), text=MESH % {"echo": ROOT / "examples" / "bench" / "echo.py"}, extra=("--control-planes", "2"), synced=False) as m:
        yield m


def _synced(items: list[dict], replica: str | None = None) -> bool:
    live = [p for p in items if p.get("connected") and (replica is None or p.get("controlPlane") == replica)]
    return len(live) == PODS and all(t.get("state") in ("SYNCED", "NOT_SENT")
                                     for p in live for t in p["types"].values())


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except (OSError, AssertionError) as e:  # a replica briefly unreachable
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}: {str(last)[:2000]}")


def _both_running(mesh: Mesh, killed: dict) -> bool:
    """Both replicas running, the killed one as a new process."""
    cps = {c["name"]: c for c in mesh.status()["components"] if c["kind"] == "controlplane"}
    return (set(cps) == {"controlplane", "controlplane-1"} and all(c["state"] == "running" for c in cps.values())
            and cps[killed["name"]]["pid"] != killed["pid"])


def test_two_replicas_listed_and_proxies_fail_over(mesh: Mesh) -> None:
    st = mesh.status()
    cps = [c for c in st["components"] if c["kind"] == "controlplane"]
    assert [c["name"] for c in cps] == ["controlplane", "controlplane-1"], cps
    assert all(c["state"] == "running" for c in cps), cps
    # every sidecar's bootstrap lists both replicas; its agent both REST sockets
    for pod in st["pods"]:
        agent = json.loads((mesh.state_dir / "pods" / pod["name"] / "agent.json").read_text())
        assert agent["xdsAddress"] == [f"unix:{mesh.state_dir / 'xds.sock'}", f"unix:{mesh.state_dir / 'xds-1.sock'}"]
        assert agent["apiAddress"] == [f"unix:{mesh.state_dir / 'api.sock'}", f"unix:{mesh.state_dir / 'api-1.sock'}"]
        boot = (mesh.state_dir / "pods" / pod["name"] / "envoy.yaml").read_text()
        assert "xds.sock" in boot and "xds-1.sock" in boot
    mesh.apply_text(ROUTE % "v1")
    mesh.wait_synced(expect=PODS)
    first = mesh.load("sleep-0", WEB, count=50)
    assert first["served_by"] == {"web-v1": 50}, first
    runner_pid = st["runner"]["pid"]

    # Each Envoy's ADS stream went to either replica. First take replica 1 away (runner held so it is not
    # restarted at once): every proxy must end up on replica 0, and stay there once replica 1 is back.
    cp1 = cps[1]
    os.kill(runner_pid, signal.SIGSTOP)
    try:
        os.kill(cp1["pid"], signal.SIGKILL)
        _wait(lambda: _synced(mesh.api_get("/api/v1/proxies", "api.sock")["items"], "controlplane"), 60,
              "proxies SYNCED on replica 0 after replica 1 died")
    finally:
        os.kill(runner_pid, signal.SIGCONT)
    _wait(lambda: _both_running(mesh, cp1), 60, "replica 1 restarted")
    on0 = mesh.api_get("/api/v1/proxies", "api.sock")["items"]
    assert _synced(on0, "controlplane"), on0  # still on replica 0: the main scenario kills every proxy's replica
    cp0 = next(c for c in mesh.status()["components"] if c["name"] == "controlplane")

    bg = mesh.load_background("sleep-0", WEB, rps=200, seconds=35)
    try:
        time.sleep(3)
        os.kill(runner_pid, signal.SIGSTOP)  # hold the supervisor: replica 0 stays down a while
        try:
            os.kill(cp0["pid"], signal.SIGKILL)
            # every proxy reconnects to replica 1 and is SYNCED there (asked on replica 1's own socket)
            items = _wait(lambda: (lambda it: it if _synced(it, "controlplane-1") else None)(
                mesh.api_get("/api/v1/proxies", "api-1.sock")["items"]), 60, "proxies SYNCED on replica 1")
            assert {p["controlPlane"] for p in items if p["connected"]} == {"controlplane-1"}
            # registrations keep working: the instances are still there, refreshed through replica 1
            inst = mesh.api_get("/api/v1/instances", "api-1.sock")["items"]
            assert {i["id"] for i in inst} >= {"default.web-v1-0", "default.web-v2-0"}, inst
            # a config change through the surviving replica (the CLI falls back to api-1.sock) reaches them
            mesh.apply_text(ROUTE % "v2")
            _wait(lambda: mesh.load("sleep-0", WEB, count=20)["served_by"] == {"web-v2": 20}, 60,
                  "v2 answering after the change applied through replica 1")
            _wait(lambda: _synced(mesh.api_get("/api/v1/proxies", "api-1.sock")["items"], "controlplane-1"),
                  60, "proxies SYNCED after the change")
            ps = mesh.proxy_status()  # the CLI merges what the replicas say
            assert len([p for p in ps if p["connected"]]) == PODS, ps
        finally:
            os.kill(runner_pid, signal.SIGCONT)  # the runner restarts replica 0 from the durable store
        out, err = bg.communicate(timeout=120)
    finally:
        if bg.poll() is None:
            bg.kill()
            bg.communicate()
    assert bg.returncode == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    assert r["errors"] == {}, r
    assert r["status"] == {"200": r["total"]}, r
    assert r["total"] > 1000, r
    # replica 0 is back (a new process), both replicas running, every proxy still connected and SYNCED
    _wait(lambda: _both_running(mesh, cp0), 60, "replica 0 restarted")
    mesh.wait_synced(timeout=90, expect=PODS)
    assert mesh.load("sleep-0", WEB, count=50)["served_by"] == {"web-v2": 50}
