"""Sidecar lifecycle under steady load: rolling restart, scale down/up, hot upgrade of Envoy, agent and app
crashes, holdApplicationUntilProxyStarts: false.

One small real mesh for the module (netns mode): `web` (2 replicas of Bookinfo's details app), `fast`
(1 replica started without waiting for its sidecar) and the `sleep` client. Load runs inside `sleep`, through
its sidecar, at ~200 rps on keep-alive connections; every assertion is on counts (errors, non-2xx), never on
timings.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .mesh import ROOT, Mesh, can_run_netns, running_mesh

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(can_run_netns() is not None, reason=str(can_run_netns()))]

WEB = "http://web:9080/details/0"
RPS = 200
MESH = """
apiVersion: v1
kind: Service
metadata: {name: web, labels: {app: web}}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: web}
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: web-v1, labels: {app: web, version: v1}}
spec:
  replicas: 2
  workdir: %(apps)s
  command: [python3, details.py]
  env: {SERVICE_VERSION: v1}
  ports: [{containerPort: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: fast, labels: {app: fast}}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: fast}
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: fast-v1, labels: {app: fast, version: v1}}
spec:
  replicas: 1
  holdApplicationUntilProxyStarts: false
  workdir: %(apps)s
  command: [python3, ratings.py]
  env: {SERVICE_VERSION: v1}
  ports: [{containerPort: 9080}]
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: sleep, labels: {app: sleep}}
spec:
  replicas: 1
  command: [sh, -c, "trap 'exit 0' TERM INT; while true; do sleep 3600 & wait $!; done"]
"""


def _mesh_pids(m: Mesh) -> list[int]:
    try:
        st = json.loads((m.state_dir / "status.json").read_text())
    except (OSError, ValueError):
        return []
    return [c["pid"] for c in st.get("components", []) if c.get("pid")]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Mesh:
    with running_mesh(tmp_path_factory.mktemp("lifecycle"), text=MESH % {"apps": ROOT / "examples" / "bookinfo"}) as m:
        yield m


def _pods(m: Mesh, workload: str) -> list[dict]:
    return [p for p in m.status()["pods"] if p["workload"] == workload]


def _comp(m: Mesh, name: str) -> dict:
    return next(c for c in m.status()["components"] if c["name"] == name)


def _finish(load: subprocess.Popen, timeout: float = 120) -> dict:
    out, err = load.communicate(timeout=timeout)
    assert load.returncode == 0, f"load client failed: {out}\n{err}"
    return json.loads(out.strip().splitlines()[-1])


def _assert_clean(r: dict) -> None:
    assert r["errors"] == {}, r
    assert set(r["status"]) == {"200"}, r
    assert r["total"] > 100, r


def _wait(pred, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_rollout_restart_under_load(mesh: Mesh) -> None:
    old = {p["name"] for p in _pods(mesh, "web-v1")}
    assert len(old) == 2
    load = mesh.load_background("sleep", WEB, rps=RPS, seconds=30, concurrency=8)
    try:
        time.sleep(2)
        p = mesh.cli("rollout", "restart", "web-v1", timeout=300)
    finally:
        r = _finish(load)
    assert "replaced by" in p.stdout, p.stdout
    _assert_clean(r)
    new = {p["name"] for p in _pods(mesh, "web-v1")}
    assert len(new) == 2 and not (new & old), (old, new)
    assert all(n.startswith("web-v1-") for n in new)
    ids = {i["id"] for i in mesh.get_json("instances", "-A")}
    assert {f"default.{n}" for n in new} <= ids and not ({f"default.{n}" for n in old} & ids), ids
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for n in old:
        assert f"-{n} " not in netns + " " and f"-{n}\n" not in netns, netns


def test_scale_down_and_up_under_load(mesh: Mesh) -> None:
    load = mesh.load_background("sleep", WEB, rps=RPS, seconds=20, concurrency=8)
    try:
        time.sleep(1)
        mesh.cli("scale", "web-v1", "--replicas", "1", timeout=300)
        assert len(_pods(mesh, "web-v1")) == 1
        mesh.cli("scale", "web-v1", "--replicas", "2", timeout=300)
    finally:
        r = _finish(load)
    _assert_clean(r)
    assert len(_pods(mesh, "web-v1")) == 2


def test_proxy_upgrade_hot_restart_under_load(mesh: Mesh) -> None:
    pods = [p["name"] for p in _pods(mesh, "web-v1")] + ["sleep-0"]
    apps = {n: _comp(mesh, f"{n}/app")["pid"] for n in pods}
    epochs = {n: _comp(mesh, f"{n}/envoy").get("epoch") or 0 for n in pods}
    load = mesh.load_background("sleep", WEB, rps=RPS, seconds=20, concurrency=8)
    try:
        time.sleep(2)
        mesh.cli("proxy", "upgrade", "web-v1", timeout=300)
        mesh.cli("proxy", "upgrade", "sleep", timeout=300)  # the load client's own sidecar
    finally:
        r = _finish(load)
    _assert_clean(r)  # no failed request, no reset connection
    for n in pods:
        _wait(lambda: _comp(mesh, f"{n}/envoy").get("epoch") == epochs[n] + 1, 30, f"{n} epoch")
        assert _comp(mesh, f"{n}/app")["pid"] == apps[n], f"{n}: the app was restarted"
    assert "(epoch " in mesh.cli("status").stdout


def test_agent_restart_keeps_the_app(mesh: Mesh) -> None:
    pod = _pods(mesh, "web-v1")[0]["name"]
    agent, app = _comp(mesh, f"{pod}/agent"), _comp(mesh, f"{pod}/app")
    os.kill(agent["pid"], signal.SIGKILL)
    _wait(lambda: (_comp(mesh, f"{pod}/agent")["pid"] != agent["pid"]
                   and _comp(mesh, f"{pod}/agent")["state"] == "ready"), 60, "the agent to come back")
    assert _comp(mesh, f"{pod}/app")["pid"] == app["pid"]
    _wait(lambda: any(i["id"] == f"default.{pod}" and i.get("healthy", True)
                      for i in mesh.get_json("instances", "-A")), 30, "re-registration")
    mesh.wait_synced()
    r = mesh.load("sleep", WEB, count=200)
    _assert_clean(r)


def test_app_crash_marks_instance_unhealthy_until_back(mesh: Mesh) -> None:
    pod = _pods(mesh, "web-v1")[0]
    app = _comp(mesh, f"{pod['name']}/app")
    log = Path(pod["dir"]) / "agent.log"
    os.killpg(app["pid"], signal.SIGKILL)
    _wait(lambda: "not listening: marking unhealthy" in log.read_text(), 30, "unhealthy mark")
    _wait(lambda: "listening again" in log.read_text(), 60, "the app to come back")
    _wait(lambda: any(i["id"] == f"default.{pod['name']}" and i.get("healthy", True)
                      for i in mesh.get_json("instances", "-A")), 30, "healthy again")
    assert _comp(mesh, f"{pod['name']}/app")["restarts"] >= 1


def test_hold_application_opt_out(mesh: Mesh) -> None:
    pod = _pods(mesh, "fast-v1")[0]
    assert pod["holdApplicationUntilProxyStarts"] is False and pod["ready"], pod
    runner_log = (mesh.state_dir / "logs" / "runner.log").read_text()
    assert f"{pod['name']}: sidecar ready, starting the app" not in runner_log
    r = mesh.load("sleep", "http://fast:9080/ratings/0", count=50)
    _assert_clean_small(r)


def _assert_clean_small(r: dict) -> None:
    assert r["errors"] == {} and set(r["status"]) == {"200"}, r
