"""Per-workload mesh membership (issue: sidecar lifecycle, part 7), on a real mesh under load.

One mesh for the module: namespace `legacy` is labelled `mizzen.dev/inject: "false"`, so its `old` workload
runs without a sidecar; `web` (2 replicas of Bookinfo's details app) and the `sleep` client are meshed.
Checked: meshed callers reach the sidecar-less workload; the sidecar-less workload reaches meshed services by
name (its service VIP rules, plain traffic accepted by web's sidecar); flipping `web` out of the mesh and back
in is one apply + `mizzen rollout restart` each, with 0 failed requests for its callers at ~200 rps; and a
Workload applied, re-scaled or deleted after `up` is followed by the runner (reconcile.py).
"""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from .mesh import ROOT, Mesh, can_run_netns, running_mesh

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(can_run_netns() is not None, reason=str(can_run_netns()))]

WEB = "http://web:9080/details/0"
WEB_FROM_LEGACY = "http://web.default:9080/details/0"
RPS = 200
NAMESPACE = """
apiVersion: v1
kind: Namespace
metadata:
  name: legacy
  labels: {mizzen.dev/inject: "false"}
"""
WEB_WORKLOAD = """
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: web-v1, labels: {app: web, version: v1}}
spec:
  replicas: 2
  workdir: %(apps)s
  command: [python3, details.py]
  env: {SERVICE_VERSION: v1}
  ports: [{containerPort: 9080}]
"""
MESH = NAMESPACE + """---
apiVersion: v1
kind: Service
metadata: {name: web, labels: {app: web}}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: web}
---""" + WEB_WORKLOAD + """---
apiVersion: v1
kind: Service
metadata: {name: old, namespace: legacy}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: old}
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: old, namespace: legacy, labels: {app: old}}
spec:
  workdir: %(apps)s
  command: [python3, ratings.py]
  env: {SERVICE_VERSION: v1}
  ports: [{containerPort: 9080}]
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: sleep, labels: {app: sleep}}
spec:
  command: [sh, -c, "trap 'exit 0' TERM INT; while true; do sleep 3600 & wait $!; done"]
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Mesh:
    with running_mesh(tmp_path_factory.mktemp("membership"), text=MESH % {"apps": ROOT / "examples" / "bookinfo"}) as m:
        yield m


def _pods(m: Mesh, workload: str) -> list[dict]:
    return [p for p in m.status()["pods"] if p["workload"] == workload and not p["terminating"]]


def _finish(load: subprocess.Popen, timeout: float = 180) -> dict:
    out, err = load.communicate(timeout=timeout)
    assert load.returncode == 0, f"load client failed: {out}\n{err}"
    return json.loads(out.strip().splitlines()[-1])


def test_namespace_label_runs_workload_without_sidecar_and_both_directions_work(mesh: Mesh) -> None:
    (old,) = _pods(mesh, "old")
    assert old["sidecar"] is False and old["namespace"] == "legacy"
    assert not any(c["name"].startswith("old-0/") and c["kind"] in ("agent", "envoy")
                   for c in mesh.status()["components"])
    assert all(p["sidecar"] for p in _pods(mesh, "web-v1") + _pods(mesh, "sleep"))
    # meshed caller -> sidecar-less service, by name, through the caller's sidecar
    r = mesh.load("sleep", "http://old.legacy:9080/ratings/0", count=50)
    assert r["status"] == {"200": 50}, r
    # sidecar-less pod -> meshed service by name: its VIP rules DNAT to web's pods, whose sidecars accept
    # the plain connection; both replicas are reached
    r = mesh.load("old-0", WEB_FROM_LEGACY, count=60, concurrency=1)
    assert r["status"] == {"200": 60}, r
    nat = mesh.cli("exec", "old-0", "--root", "--", "iptables", "-t", "nat", "-S", check=False).stdout
    web_ips = sorted(p["ip"] for p in _pods(mesh, "web-v1"))
    assert all(f"--to-destination {ip}:9080" in nat for ip in web_ips), nat
    # and the sidecar-less pod has no capture rules
    assert "MIZZEN_OUTPUT" not in nat and "MIZZEN_INBOUND" not in nat


def _flip(mesh: Mesh, sidecar: bool) -> list[str]:
    spec = WEB_WORKLOAD % {"apps": ROOT / "examples" / "bookinfo"} + f"  sidecar: {str(sidecar).lower()}\n"
    mesh.apply_text(spec)
    p = mesh.cli("rollout", "restart", "web-v1", timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    pods = _pods(mesh, "web-v1")
    assert len(pods) == 2 and all(x["sidecar"] is sidecar for x in pods), pods
    return [x["name"] for x in pods]


def test_flip_workload_out_of_the_mesh_and_back_under_load(mesh: Mesh) -> None:
    before = {p["name"] for p in _pods(mesh, "web-v1")}
    load = mesh.load_background("sleep", WEB, rps=RPS, seconds=40, concurrency=8)
    try:
        time.sleep(2)
        out_of_mesh = _flip(mesh, False)
        assert not before & set(out_of_mesh)
        # web's new replicas have no agent, no Envoy; callers still reach them
        comps = {c["name"] for c in mesh.status()["components"]}
        assert not any(c.startswith(f"{n}/") and c.endswith(("/agent", "/envoy")) for n in out_of_mesh for c in comps)
        assert mesh.load("sleep", WEB, count=30)["status"] == {"200": 30}
        back = _flip(mesh, True)
        assert not set(out_of_mesh) & set(back)
    finally:
        r = _finish(load)
    assert r["errors"] == {} and set(r["status"]) == {"200"}, r
    assert r["total"] > 3000, r  # ~200 rps for 40 s
    mesh.wait_synced()
    assert mesh.load("old-0", WEB_FROM_LEGACY, count=20, concurrency=1)["status"] == {"200": 20}


EXTRA = """
apiVersion: v1
kind: Service
metadata: {name: extra}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: extra}
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: extra, labels: {app: extra}}
spec:
  replicas: %(n)d
  workdir: %(apps)s
  command: [python3, ratings.py]
  env: {SERVICE_VERSION: v1}
  ports: [{containerPort: 9080}]
"""


def _wait_pods(mesh: Mesh, workload: str, n: int, timeout: float = 120) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        pods = _pods(mesh, workload)
        if len(pods) == n and all(p["ready"] for p in pods):
            return pods
        assert time.monotonic() < deadline, f"{workload}: wanted {n} ready pods, have {pods}"
        time.sleep(0.5)


def test_workloads_applied_scaled_and_deleted_after_up_are_followed(mesh: Mesh) -> None:
    apps = ROOT / "examples" / "bookinfo"
    mesh.apply_text(EXTRA % {"n": 1, "apps": apps})
    _wait_pods(mesh, "extra", 1)
    mesh.wait_synced()
    assert mesh.load("sleep", "http://extra:9080/ratings/0", count=20)["status"] == {"200": 20}
    mesh.apply_text(EXTRA % {"n": 2, "apps": apps})
    assert len(_wait_pods(mesh, "extra", 2)) == 2
    # `mizzen scale` records the count in the store, so the runner keeps it
    p = mesh.cli("scale", "extra", "--replicas", "1", timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert mesh.get_json("workload", "extra")["spec"].get("replicas", 1) == 1  # 1 is the default: omitted
    time.sleep(5)  # two reconcile passes: nothing scales back
    assert len(_wait_pods(mesh, "extra", 1)) == 1
    # deleting the Workload stops its replicas (in order) and frees their namespaces
    p = mesh.cli("delete", "workload", "extra", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    deadline = time.monotonic() + 120
    while any(p["workload"] == "extra" for p in mesh.status()["pods"]):  # terminating ones included
        assert time.monotonic() < deadline, mesh.status()["pods"]
        time.sleep(0.5)
    assert not any(c["name"].startswith("extra-") for c in mesh.status()["components"])
