"""`mizzen chaos` faults on a real mesh (netns mode, two control-plane replicas): each is applied where asked,
does what it says to real traffic, is recorded, and is undone on expiry, on `mizzen chaos stop`, when its
keeper died, on Ctrl-C of `mizzen chaos run`, and by the runner's teardown (`mizzen down`)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mizzen.chaos.explain import APP_KILL
from mizzen.chaos.soak import soak_mesh
from mizzen.chaos.verdict import render
from tests.e2e.mesh import ROOT, Mesh, can_run_netns, running_mesh

from .helpers import (chaos, chaos_processes, curl_ms, fault_id, iptables_rules, pids, pod, qdisc, records,
                      wait_for)

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(can_run_netns() is not None, reason=str(can_run_netns()))]

APPS = ROOT / "examples" / "bookinfo"
PODS = 3  # web-v1-0, web-v1-1, sleep-0


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Mesh:
    with running_mesh(tmp_path_factory.mktemp("chaos"), text=soak_mesh(str(APPS), replicas=2),
                      extra=("--control-planes", "2"), expect=PODS) as m:
        yield m
        assert not chaos_processes(str(m.state_dir)), chaos_processes(str(m.state_dir))


def url(m: Mesh, pod_name: str) -> str:
    return f"http://{pod(m, pod_name)['ip']}:9080/details/0"


def test_latency_with_jitter_is_added_then_removed(mesh: Mesh) -> None:
    target = url(mesh, "web-v1-0")
    p = chaos(mesh, "network", "--pod", "web-v1-0", "--latency", "300ms", "--jitter", "20ms", "--duration", "10m",
              "--seed", "5")
    fid = fault_id(p)
    assert "latency 300ms ±20ms on web-v1-0 for 10m (seed 5)" in p.stdout, p.stdout
    netns = pod(mesh, "web-v1-0")["netns"]
    nat = iptables_rules(netns, "nat")
    assert f"MZC-{fid}-NI" in nat and f"MZC-{fid}-NO" in nat, nat
    rec = records(mesh)[fid]
    assert rec["state"] == "active" and rec["seed"] == 5 and rec["params"]["mechanism"] == "relay+iptables+tbf"
    times = [curl_ms(mesh, "sleep-0", target) for _ in range(4)]
    # an app kill elsewhere makes the runner rewrite every pod's service chain: the relay's rules stay
    chaos(mesh, "kill", "app", "--pod", "web-v1-1")
    times += [curl_ms(mesh, "sleep-0", target) for _ in range(4)]
    assert all(t is not None for t in times), times
    assert min(times) >= 280, times  # every response the pod sends waits latency - jitter at least
    assert records(mesh)[fid]["state"] == "active"  # (the measurement above ran within the fault)
    chaos(mesh, "stop", fid)
    assert f"MZC-{fid}" not in iptables_rules(netns, "nat")
    after = [curl_ms(mesh, "sleep-0", target) for _ in range(4)]
    assert all(t is not None for t in after) and min(after) < 150, after
    wait_for(lambda: not chaos_processes(str(mesh.state_dir)), 40, "the relay to drain and exit")


def test_a_fault_expires_on_its_own(mesh: Mesh) -> None:
    fid = fault_id(chaos(mesh, "network", "--pod", "web-v1-0", "--latency", "100ms", "--duration", "3s"))
    netns = pod(mesh, "web-v1-0")["netns"]
    wait_for(lambda: records(mesh)[fid]["state"] == "expired", 60, "the fault to expire")
    rec = records(mesh)[fid]
    assert rec["ended_by"] == "expiry" and rec["ended"] - rec["started"] >= 3.0
    assert f"MZC-{fid}" not in iptables_rules(netns, "nat")
    wait_for(lambda: not chaos_processes(str(mesh.state_dir)), 40, "the keeper and relay to exit")


def test_loss_and_bandwidth_are_rules_and_qdiscs_until_stopped(mesh: Mesh) -> None:
    fid = fault_id(chaos(mesh, "network", "--pod", "web-v1-1", "--loss", "20%", "--bandwidth", "1mbit",
                         "--duration", "5m"))
    netns = pod(mesh, "web-v1-1")["netns"]
    rules = iptables_rules(netns)
    assert f"-A INPUT -i eth0 -j MZC-{fid}-LOSS" in rules and f"-A OUTPUT -o eth0 -j MZC-{fid}-LOSS" in rules
    assert "--probability 0.2" in rules, rules
    assert "tbf" in qdisc(netns) and "rate 1Mbit" in qdisc(netns)
    bridge = f"mizzen-{mesh.status()['meshId']}-net"
    shaped = subprocess.run(["tc", "-n", bridge, "qdisc", "show"], capture_output=True, text=True).stdout
    assert "tbf" in shaped, shaped  # the traffic towards the pod, on its veth's bridge side
    # traffic still flows (TCP retransmits what is lost)
    r = mesh.load("sleep-0", url(mesh, "web-v1-1"), count=20, concurrency=2)
    assert r["status"] == {"200": 20}, r
    out = chaos(mesh, "stop", fid).stdout
    assert f"{fid} stopped" in out, out
    assert "MZC" not in iptables_rules(netns) and "tbf" not in qdisc(netns)
    assert "tbf" not in subprocess.run(["tc", "-n", bridge, "qdisc", "show"], capture_output=True, text=True).stdout
    assert records(mesh)[fid]["ended_by"] == "stop"


def test_partition_between_pods_and_its_heal(mesh: Mesh) -> None:
    fid = fault_id(chaos(mesh, "partition", "--pod", "sleep-0", "--peer", "web-v1-0", "--duration", "5m"))
    assert curl_ms(mesh, "sleep-0", url(mesh, "web-v1-0"), timeout=3) is None
    assert curl_ms(mesh, "sleep-0", url(mesh, "web-v1-1"), timeout=3) is not None
    for name in ("sleep-0", "web-v1-0"):  # both sides drop
        assert f"MZC-{fid}-PIN" in iptables_rules(pod(mesh, name)["netns"])
    chaos(mesh, "stop", fid)
    assert wait_for(lambda: curl_ms(mesh, "sleep-0", url(mesh, "web-v1-0"), timeout=3) is not None, 30, "heal")
    assert "MZC" not in iptables_rules(pod(mesh, "sleep-0")["netns"])


def _proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_control_plane_partitioned_from_every_sidecar_leaves_the_data_plane_serving(mesh: Mesh) -> None:
    cps = {c["name"]: c["pid"] for c in mesh.status()["components"] if c["kind"] == "controlplane"}
    assert len(cps) == 2
    fid = fault_id(chaos(mesh, "partition", "--controlplane", "--duration", "5m"))
    assert {_proc_state(p) for p in cps.values()} == {"T"}  # alive, answering nothing
    r = mesh.load("sleep-0", "http://web:9080/details/0", rps=100, seconds=8, concurrency=8)
    assert r["errors"] == {} and r["status"] == {"200": r["total"]} and r["total"] >= 500, r
    chaos(mesh, "stop", fid)
    assert {_proc_state(p) for p in cps.values()} <= {"S", "R"}
    mesh.wait_synced(expect=PODS, timeout=120)
    assert {c["name"]: c["pid"] for c in mesh.status()["components"] if c["kind"] == "controlplane"} == cps


def test_kills_are_recorded_and_the_mesh_replaces_what_died(mesh: Mesh) -> None:
    before = pids(mesh, "web-v1-0")
    p = chaos(mesh, "kill", "app", "--pod", "web-v1-0", "-o", "json")
    rec = json.loads(p.stdout)
    assert rec["state"] == "done" and rec["targets"][0]["pid"] == before["app"] and rec["targets"][0]["signal"] == 9
    chaos(mesh, "kill", "envoy", "--pod", "web-v1-0")
    chaos(mesh, "kill", "controlplane", "--replica", "1", "--signal", "TERM")

    def replaced() -> bool:
        now = pids(mesh, "web-v1-0")
        return now.get("app") not in (None, before["app"]) and now.get("envoy") not in (None, before["envoy"])

    wait_for(replaced, 60, "the app and the Envoy to be restarted")
    mesh.wait_synced(expect=PODS, timeout=120)
    # a seed replays the same choice
    a = json.loads(chaos(mesh, "kill", "agent", "--workload", "web-v1", "--count", "1", "--seed", "11", "-o",
                         "json").stdout)
    mesh.wait_synced(expect=PODS, timeout=120)
    b = json.loads(chaos(mesh, "kill", "agent", "--workload", "web-v1", "--count", "1", "--seed", "11", "-o",
                         "json").stdout)
    assert a["targets"][0]["pod"] == b["targets"][0]["pod"]
    mesh.wait_synced(expect=PODS, timeout=120)
    bad = chaos(mesh, "kill", "app", "--pod", "nope", check=False)
    assert bad.returncode == 1 and "no pod named nope" in bad.stderr


def test_a_crash_looping_envoy_takes_neither_its_agent_nor_its_app_down(mesh: Mesh) -> None:
    mesh.wait_synced(expect=PODS, timeout=120)
    before = pids(mesh, "web-v1-1")
    fid = fault_id(chaos(mesh, "kill", "envoy", "--pod", "web-v1-1", "--every", "2s", "--duration", "12s"))
    wait_for(lambda: records(mesh)[fid]["state"] == "expired", 60, "the crash loop to end")
    rec = records(mesh)[fid]
    killed = [t["pid"] for t in rec["targets"]]
    assert len(killed) >= 3 and len(set(killed)) == len(killed), rec["targets"]  # a new Envoy each time
    assert {t["pod"] for t in rec["targets"]} == {"web-v1-1"}
    now = pids(mesh, "web-v1-1")
    assert now["agent"] == before["agent"] and now["app"] == before["app"], (before, now)
    state = json.loads((mesh.state_dir / "pods" / "web-v1-1" / "agent.state").read_text())
    assert state["restarts"] >= len(killed) - 1, state
    mesh.wait_synced(expect=PODS, timeout=120)
    r = mesh.load("sleep-0", url(mesh, "web-v1-1"), count=50, concurrency=2)
    assert r["status"] == {"200": 50}, r


APP_KILLS = textwrap.dedent("""\
    apiVersion: mizzen.dev/v1
    kind: ChaosScenario
    metadata: {name: app-kills}
    spec:
      seed: 3
      load: {from: sleep, target: "http://web:9080/details/0", rate: 200, duration: 24s}
      faults:
      - {at: 4s, kill: {target: app, workload: web-v1, count: 1}}
      - {at: 12s, kill: {target: app, workload: web-v1, count: 1}}
      - {at: 18s, kill: {target: app, workload: web-v1, count: 1}}
      steadyState: {maxUnexplained: 0, syncedWithin: 60s}
    """)


def test_an_app_kill_costs_only_its_in_flight_requests(mesh: Mesh, tmp_path) -> None:
    """Requests sent to a killed app before callers' EDS drops it are refused by its sidecar (UF) and retried on
    the other replica (x-mizzen-unserved); what fails is only what the app was processing when it died."""
    mesh.wait_synced(expect=PODS, timeout=120)
    f = tmp_path / "s.yaml"
    f.write_text(APP_KILLS)
    p = chaos(mesh, "run", str(f), "-o", "json", check=False, timeout=300)
    res = json.loads(p.stdout)
    assert p.returncode == 0 and res["pass"], render(res) + p.stderr[-2000:]
    assert res["explained"]["unexplained"] == []
    assert set(res["explained"]["categories"]) <= {APP_KILL}
    assert res["load"]["total"] >= 0.75 * 200 * 24, res["load"]
    kills = [t for f in res["faults"] for t in f["targets"]]
    assert len(kills) == 3 and all(t["kind"] == "app" for t in kills)


def test_a_dead_keeper_is_undone_from_the_record(mesh: Mesh) -> None:
    fid = fault_id(chaos(mesh, "network", "--pod", "web-v1-0", "--loss", "10%", "--duration", "5m"))
    keeper = records(mesh)[fid]["keeper_pid"]
    os.kill(keeper, signal.SIGKILL)
    netns = pod(mesh, "web-v1-0")["netns"]
    assert f"MZC-{fid}-LOSS" in iptables_rules(netns)  # left behind by the dead keeper ...
    chaos(mesh, "stop")
    assert "MZC" not in iptables_rules(netns)  # ... and undone from its record
    assert records(mesh)[fid]["ended_by"] == "stop (keeper lost)"


def test_ctrl_c_of_a_scenario_undoes_its_faults(mesh: Mesh, tmp_path) -> None:
    f = tmp_path / "long.yaml"
    f.write_text(textwrap.dedent("""\
        apiVersion: mizzen.dev/v1
        kind: ChaosScenario
        metadata: {name: long}
        spec:
          load: {from: sleep, target: "http://web:9080/details/0", rate: 20, duration: 120s}
          faults:
          - {at: 1s, partition: {a: {pods: [sleep-0]}, b: {pods: [web-v1-0]}, duration: 100s}}
        """))
    proc = subprocess.Popen([sys.executable, "-m", "mizzen.cli.main", "chaos", "run", "--state-dir",
                             str(mesh.state_dir), str(f)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        netns = pod(mesh, "sleep-0")["netns"]
        wait_for(lambda: "MZC-part" in iptables_rules(netns), 60, "the partition")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert "interrupted" in out and "MZC" not in iptables_rules(netns)
    part = [r for r in records(mesh).values() if r["source"] == "scenario long"]
    assert part and all(r["state"] == "stopped" and r["ended_by"] == "interrupt" for r in part), part


def test_down_undoes_every_active_fault_first(tmp_path_factory) -> None:
    """The runner's teardown undoes faults before it stops anything (a frozen control plane would hang it)."""
    with running_mesh(tmp_path_factory.mktemp("chaosdown"), text=soak_mesh(str(APPS), replicas=1), expect=2) as m:
        ids = [fault_id(chaos(m, "partition", "--controlplane", "--duration", "10m")),
               fault_id(chaos(m, "network", "--pod", "web-v1-0", "--latency", "50ms", "--loss", "5%",
                              "--duration", "10m")),
               fault_id(chaos(m, "stress", "--pod", "web-v1-0", "--duration", "10m")),
               fault_id(chaos(m, "kill", "envoy", "--pod", "web-v1-0", "--every", "5s", "--duration", "10m"))]
        assert chaos_processes(str(m.state_dir))
        t0 = time.monotonic()
        p = m.down()
        assert p.returncode == 0 and "cleaned up by force" not in p.stdout, p.stdout + p.stderr
        assert time.monotonic() - t0 < 60
        log = (m.state_dir / "logs" / "runner.log").read_text()
        for fid in ids:
            assert f"chaos fault {fid}" in log and "undone: stopped" in log, log[-3000:]
        recs = {f.name[:-5]: json.loads(f.read_text()) for f in (m.state_dir / "chaos").glob("*.json")}
        assert all(recs[i]["state"] == "stopped" and recs[i]["ended_by"] == "teardown" for i in ids), recs
        assert not chaos_processes(str(m.state_dir))
