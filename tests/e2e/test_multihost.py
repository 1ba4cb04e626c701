"""Several hosts on one machine (issue 12 §2, §4, §5): `mizzen up` of a mesh file with three Hosts — `cp` (the
control plane, an etcd member), `node-a` and `node-b` (an etcd member each, and the workloads) — each its own
network namespace with its own runner, joined by a private bridge; sidecars reach the control plane over TCP.
Processes outside the mesh run in the hosts' own namespaces (not in pods), as programs on those machines.

- Meshed traffic crosses hosts: `sleep` on node-a reaches `web` replicas on both hosts by name.
- A service outside the mesh (`ledger`, registered only through the Consul API by py-consul, on node-b) is
  reached by name from the mesh, with a VirtualService's retries and response header applied; its instance's
  health comes from its Consul HTTP check.
- A caller outside the mesh (on node-b) finds meshed `web` through the Consul API and calls its pods directly.
- Migration under load: `pay` starts as two Consul-registered processes (one per host); meshed and non-meshed
  callers load it while its instances move into the mesh one by one (a meshed replica added, a legacy one
  withdrawn, twice): 0 failed requests for both kinds of callers.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.etcd.fixtures import needs_etcd

from .mesh import ROOT, SLEEP_COMMAND, Mesh, can_run_netns, running_mesh

pytestmark = [pytest.mark.e2e, pytest.mark.slow, needs_etcd,
              pytest.mark.skipif(can_run_netns() is not None, reason=str(can_run_netns()))]

APPS = ROOT / "tests" / "e2e" / "apps"
APP = APPS / "policy_app.py"


def host(name: str, cp: bool = False) -> str:
    return f"""---
apiVersion: mizzen.dev/v1
kind: Host
metadata: {{name: {name}}}
spec: {{controlPlane: {str(cp).lower()}, etcd: true}}
"""


def workload(name: str, app: str, on: str, replicas: int = 1, port: int = 8080) -> str:
    return f"""---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {{name: {name}, labels: {{app: {app}}}}}
spec:
  replicas: {replicas}
  host: {on}
  command: [python3, {APP}]
  env: {{PORT_8080: "{port}"}}
  ports: [{{containerPort: {port}}}]
"""


MESH = host("cp", cp=True) + host("node-a") + host("node-b") + """---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 8080, name: http}]
""" + workload("web-a", "web", "node-a") + workload("web-b", "web", "node-b", replicas=2) + f"""---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {{name: sleep, labels: {{app: sleep}}}}
spec:
  host: node-a
  command: {SLEEP_COMMAND}
"""
LEDGER_VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ledger}
spec:
  hosts: [ledger]
  http:
  - route: [{destination: {host: ledger}}]
    retries: {attempts: 3, retryOn: 5xx}
    headers: {response: {set: {x-routed: mesh}}}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Mesh:
    with running_mesh(tmp_path_factory.mktemp("multihost"), text=MESH, expect=4) as m:
        yield m


def hosts(m: Mesh) -> dict[str, dict]:
    return {h["name"]: h for h in m.status()["hosts"]}


def in_host(m: Mesh, name: str, *argv: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", hosts(m)[name]["netns"], *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def run_in_host(m: Mesh, name: str, *argv: str, timeout: float = 120) -> str:
    p = in_host(m, name, *argv)
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, f"{argv}: {out}\n{err}"
    return out


def legacy(m: Mesh, on: str, name: str, sid: str, port: int, *extra: str) -> subprocess.Popen:
    h = hosts(m)
    consul = m.status()["consulApi"]
    return in_host(m, on, sys.executable, str(APPS / "legacy_app.py"), "--listen", f"{h[on]['ip']}:{port}",
                   "--consul", consul, "--name", name, "--id", sid, *extra)


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def eds(m: Mesh, pod: str, cluster: str) -> set[str]:
    """host:port of the endpoints the control plane sent the pod's proxy for `cluster`."""
    from mizzen.client import ApiClient
    from mizzen.local.meshview import eds_endpoints

    api = ApiClient(str(m.state_dir), timeout=10)
    pid = next(p["id"] for p in api.proxies() if f"~{pod}." in p["id"] and p.get("connected"))
    answer = api.proxy_resources(pid, "EDS")
    mine = [r for r in answer.get("resources", []) if r.get("name") == cluster]
    return {f"{a}:{p}" for a, p in eds_endpoints({"resources": mine})}


STRICT = """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
"""


def handshakes(pod: dict) -> int:
    """TLS handshakes of the pod's sidecar towards web's cluster (its client side of mTLS)."""
    from mizzen.client import EnvoyAdmin

    stats = EnvoyAdmin(str(Path(pod["dir"]) / "admin.sock"), timeout=5).get_json(
        "/stats?format=json&filter=" + "web.default.svc.cluster.local.ssl.handshake")["stats"]
    return sum(int(x.get("value") or 0) for x in stats if "value" in x)


def wait_for(cond, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.5)


def test_hosts_and_meshed_traffic_across_them(mesh: Mesh) -> None:
    st = mesh.status()
    h = {x["name"]: x for x in st["hosts"]}
    assert [h[n]["ip"] for n in ("cp", "node-a", "node-b")] == ["10.250.0.1", "10.250.0.2", "10.250.0.3"]
    assert st["store"].startswith("etcd://10.250.0.1:2379,10.250.0.2:2379,10.250.0.3:2379")
    assert st["consulApi"] == "10.250.0.1:8500"
    pods = {p["name"]: p for p in st["pods"]}
    assert pods["web-a-0"]["host"] == "node-a" and pods["web-b-1"]["host"] == "node-b"
    assert pods["web-b-0"]["ip"].startswith("10.244.3.") and pods["sleep-0"]["ip"].startswith("10.244.2.")
    # sidecars on TCP to the control plane's host: xDS, the REST API over TLS (checked against the mesh root the
    # runner provisioned, with the pod's own credential), workload certificates from the CA service over TLS
    agent = json.loads((Path(pods["sleep-0"]["dir"]) / "agent.json").read_text())
    assert agent["xdsAddress"] == "10.250.0.1:15010" and agent["apiAddress"] == "https://10.250.0.1:15080"
    assert agent["caAddress"] == "10.250.0.1:15020"
    # each host runner has a token of its own (revoked at `down`), not the control plane's admin credential
    names = {t.get("name") for t in json.loads(mesh.cli("token", "list", "-o", "json").stdout)}
    assert {"host/node-a", "host/node-b"} <= names, names
    result = mesh.load("sleep-0", "http://web:8080/", count=300)
    assert result["errors"] == {} and result["status"] == {"200": 300}, result
    assert set(result["served_by"]) == {"web-a-0", "web-b-0", "web-b-1"}
    # across hosts the sidecars talk mTLS (auto mTLS): and still with STRICT, which refuses plaintext
    assert handshakes(pods["sleep-0"]) > 0
    mesh.apply_text(STRICT)
    try:
        mesh.wait_synced(expect=4)
        result = mesh.load("sleep-0", "http://web:8080/", count=60)
        assert result["errors"] == {} and result["status"] == {"200": 60}, result
        assert set(result["served_by"]) == {"web-a-0", "web-b-0", "web-b-1"}
    finally:
        mesh.cli("delete", "peerauthentication", "default", "-n", "istio-system", check=False)


def test_a_consul_registered_service_outside_the_mesh_is_reached_by_name(mesh: Mesh) -> None:
    p = legacy(mesh, "node-b", "ledger", "ledger-1", 7070, "--fail-every", "3")
    try:
        wait_for(lambda: eds(mesh, "sleep-0", "outbound|7070||ledger.default.svc.cluster.local")
                 == {"10.250.0.3:7070"}, what="ledger in the caller's EDS")
        svc = mesh.get_json("svc", "ledger")
        assert svc["metadata"]["labels"]["consul.mizzen.dev/synced"] == "true"
        mesh.apply_text(LEDGER_VS)
        mesh.wait_synced(expect=4)
        wait_for(lambda: mesh.exec("sleep-0", "getent", "hosts", "ledger").returncode == 0, what="ledger's VIP")
        # every third answer of ledger is a 503: the VirtualService's retries hide them, and its header is set
        result = mesh.load("sleep-0", "http://ledger:7070/", count=90, concurrency=1)
        assert result["status"] == {"200": 90} and result["errors"] == {}, result
        tagged = mesh.load("sleep-0", "http://ledger:7070/", count=10, concurrency=1, field="x-routed")
        assert tagged["served_by"] == {"mesh": 10}, tagged
    finally:
        stop(p)
        mesh.cli("delete", "virtualservice", "ledger", check=False)
    wait_for(lambda: "ledger" not in {s["metadata"]["name"] for s in mesh.get_json("svc").get("items", [])},
             what="the synced Service removed with its last instance")


def test_a_caller_outside_the_mesh_discovers_meshed_services_through_consul(mesh: Mesh) -> None:
    out = run_in_host(mesh, "node-b", sys.executable, str(APPS / "consul_caller.py"), "--consul",
                      mesh.status()["consulApi"], "--service", "web", "--rps", "30", "--seconds", "5")
    result = json.loads(out.strip().splitlines()[-1])
    assert result["errors"] == {} and set(result["status"]) == {"200"} and result["total"] >= 50, result
    assert set(result["served_by"]) == {"web-a-0", "web-b-0", "web-b-1"}  # pod addresses on both hosts


def test_moving_a_service_into_the_mesh_one_instance_at_a_time_under_load(mesh: Mesh, tmp_path: Path) -> None:
    legacy_a = legacy(mesh, "node-a", "pay", "pay-legacy-a", 9090)
    legacy_b = legacy(mesh, "node-b", "pay", "pay-legacy-b", 9090)
    stop_file = mesh.stop_path("move-in.stop")
    loads: list[subprocess.Popen] = []
    try:
        cluster = "outbound|9090||pay.default.svc.cluster.local"
        wait_for(lambda: eds(mesh, "sleep-0", cluster) == {"10.250.0.2:9090", "10.250.0.3:9090"},
                 what="pay's Consul instances in the caller's EDS")
        wait_for(lambda: mesh.exec("sleep-0", "getent", "hosts", "pay").returncode == 0, what="pay's VIP")
        loads.append(mesh.load_background("sleep-0", "http://pay:9090/", rps=100, seconds=240, stop_file=stop_file))
        loads.append(in_host(mesh, "cp", sys.executable, str(APPS / "consul_caller.py"), "--consul",
                             mesh.status()["consulApi"], "--service", "pay", "--rps", "40", "--seconds", "240",
                             "--stop-file", str(stop_file)))
        time.sleep(3)

        def meshed(n: int) -> None:
            mesh.apply_text(workload("pay", "pay", "node-b", replicas=n, port=9090))
            wait_for(lambda: len([p for p in mesh.status()["pods"] if p["workload"] == "pay" and p["registered"]
                                  and p["ready"]]) == n, timeout=120, what=f"{n} meshed pay replica(s)")
            ips = {f"{p['ip']}:9090" for p in mesh.status()["pods"] if p["workload"] == "pay"}
            wait_for(lambda: ips <= eds(mesh, "sleep-0", cluster), what="the meshed replicas in the caller's EDS")
            time.sleep(2)  # the Consul caller's blocking query has them too

        meshed(1)
        stop(legacy_a)  # deregisters, keeps serving a little, exits
        time.sleep(2)
        meshed(2)
        stop(legacy_b)
        time.sleep(3)
    finally:
        stop_file.touch()
        results = []
        for p in loads:
            out, err = p.communicate(timeout=240)
            results.append(json.loads(out.strip().splitlines()[-1]) if out.strip() else {"err": err})
        stop(legacy_a)
        stop(legacy_b)
        mesh.cli("delete", "workload", "pay", check=False)
    meshed_caller, plain_caller = results
    for r in results:
        assert r.get("errors") == {} and set(r.get("status", {})) == {"200"}, r
    for r in (meshed_caller, plain_caller):  # both kinds of callers used both kinds of instances
        assert {"pay-legacy-a", "pay-legacy-b"} <= set(r["served_by"]), r
        assert any(k.startswith("pay-") and "legacy" not in k for k in r["served_by"]), r
