"""The runner's planning and the CLI commands' behaviour that needs no running mesh."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import click
import pytest

from mizzen.manifests import load_files
from mizzen.local.commands import find_pod
from mizzen.local.pods import Pod, plan_pods
from mizzen.agent.config import AgentConfig
from mizzen.client import StateLayout
from mizzen.local.launcher import agent_config
from mizzen.local.meshstate import live_status, write_json
from mizzen.local.options import Options
from mizzen.local.runner import Runner, untraversable

from .conftest import requires_netns

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOOKINFO = os.path.join(ROOT, "examples", "bookinfo", "mesh.yaml")


def test_bookinfo_mesh_matches_istio_sample():
    res = load_files([BOOKINFO]).resources
    by = {(r.kind, r.name): r for r in res}
    for app in ("details", "ratings", "reviews", "productpage"):
        svc = by[("Service", app)]
        assert svc.metadata.labels == {"app": app, "service": app}
        assert [(p.port, p.name) for p in svc.spec.ports] == [(9080, "http")]
        assert svc.spec.selector == {"app": app}
        assert by[("ServiceAccount", f"bookinfo-{app}")].metadata.labels == {"account": app}
    for wl, v in (("details-v1", "v1"), ("ratings-v1", "v1"), ("reviews-v1", "v1"), ("reviews-v2", "v2"),
                  ("reviews-v3", "v3"), ("productpage-v1", "v1")):
        w = by[("Workload", wl)]
        assert w.metadata.labels == {"app": wl.split("-")[0], "version": v}
        assert w.spec.env["SERVICE_VERSION"] == v
        assert [p.container_port for p in w.spec.ports] == [9080]
        assert os.path.exists(os.path.join(os.path.dirname(BOOKINFO), w.spec.command[1]))
    sleep = by[("Workload", "sleep")]
    assert sleep.metadata.labels == {"app": "sleep"} and not sleep.spec.ports


def test_plan_pods():
    pods = plan_pods(load_files([BOOKINFO]).resources, "/m")
    assert [p.name for p in pods] == ["details-v1-0", "ratings-v1-0", "reviews-v1-0", "reviews-v2-0",
                                      "reviews-v3-0", "productpage-v1-0", "sleep-0"]
    assert [p.index for p in pods] == list(range(7))
    rv2 = pods[3]
    assert (rv2.workload, rv2.cwd, rv2.command, rv2.env, rv2.ports, rv2.service_account) == (
        "reviews-v2", "/m", ["python3", "reviews.py"], {"SERVICE_VERSION": "v2"}, [9080], "bookinfo-reviews")


def _status_with_pods():
    def pod(name, workload, app):
        return {"name": name, "workload": workload, "namespace": "default", "labels": {"app": app}}
    return {"pods": [pod("reviews-v1-0", "reviews-v1", "reviews"), pod("reviews-v1-1", "reviews-v1", "reviews"),
                     pod("productpage-v1-0", "productpage-v1", "productpage")]}


def test_find_pod_by_pod_workload_or_app():
    st = _status_with_pods()
    assert find_pod(st, "reviews-v1-1")["name"] == "reviews-v1-1"
    assert find_pod(st, "reviews-v1")["name"] == "reviews-v1-0"
    assert find_pod(st, "productpage")["name"] == "productpage-v1-0"
    with pytest.raises(click.ClickException):
        find_pod(st, "ratings")


def test_agent_config_netns(tmp_path):
    """The runner writes agent.json from the AgentConfig the agent reads back: one typed contract."""
    layout = StateLayout(str(tmp_path / "s"))
    pod = plan_pods(load_files([BOOKINFO]).resources, "/m")[3]
    pod.ip, pod.port_map = "10.244.0.5", {9080: 9080}
    cfg = agent_config(pod, layout, Options(), "netns")
    assert cfg.interception == "netns" and (cfg.envoy_uid, cfg.envoy_gid) == (1337, 1337)
    assert (cfg.outbound_port, cfg.inbound_port, cfg.health_port, cfg.health_host) == (15001, 15006, 15020, "0.0.0.0")
    assert cfg.xds_address == f"unix:{tmp_path / 's' / 'xds.sock'}"
    assert cfg.port_map == ((9080, 9080),) and cfg.register is True and cfg.register_port_map == ()
    assert cfg.label_dict == {"app": "reviews", "version": "v2"}
    files = layout.pod("reviews-v2-0")
    assert (cfg.work_dir, cfg.admin_socket, cfg.control_socket) == (files.path, files.admin_socket, files.agent_socket)
    d = cfg.to_dict()
    assert d["portMap"] == {"9080": 9080} and d["labels"] == {"app": "reviews", "version": "v2"}
    assert d["envoyUid"] == 1337 and d["xdsAddress"] == f"unix:{tmp_path / 's' / 'xds.sock'}"
    assert AgentConfig.from_dict(d) == cfg


def test_agent_config_of_a_joined_host_uses_tls_api_and_tcp_ca(tmp_path):
    """A host of a multi-host mesh: its agents reach the control planes' API over TLS and the CA over TCP, one
    address per replica; `--join` alone derives the xDS and CA addresses of each replica."""
    from mizzen.local.commands import _host_options

    opts = _host_options("node-a", "10.250.0.1:15080,10.250.0.1:15081", None, None, None, None, (), ())
    assert opts["join_xds"] == ("10.250.0.1:15010", "10.250.0.1:15011")
    assert opts["join_ca"] == ("10.250.0.1:15020", "10.250.0.1:15021")
    options = Options(**opts)
    assert options.joined and options.join_api_urls == ("https://10.250.0.1:15080", "https://10.250.0.1:15081")
    layout = StateLayout(str(tmp_path / "s"))
    pod = plan_pods(load_files([BOOKINFO]).resources, "/m")[3]
    pod.ip, pod.port_map = "10.244.2.5", {9080: 9080}
    cfg = agent_config(pod, layout, options, "netns", "cluster.local")
    assert cfg.api_address == ("https://10.250.0.1:15080", "https://10.250.0.1:15081")
    assert cfg.ca_address == ("10.250.0.1:15020", "10.250.0.1:15021")
    assert cfg.xds_address == ("10.250.0.1:15010", "10.250.0.1:15011")
    assert AgentConfig.from_dict(cfg.to_dict()) == cfg


def test_agent_config_loopback_round_trips(tmp_path):
    layout = StateLayout(str(tmp_path / "s"))
    pod = plan_pods(load_files([BOOKINFO]).resources, "/m")[3]
    pod.port_map, pod.register_port_map = {9080: 23456}, {9080: 23457}
    pod.outbound_port, pod.inbound_port, pod.health_port = 23458, 23457, 23459
    cfg = agent_config(pod, layout, Options(drain_seconds=3.5, listener_drain_seconds=30, concurrency=2), "loopback")
    assert cfg.envoy_uid is None and cfg.health_host == "127.0.0.1" and cfg.register_port_map == ((9080, 23457),)
    assert (cfg.drain_seconds, cfg.listener_drain_seconds, cfg.concurrency) == (3.5, 30, 2)
    assert AgentConfig.from_dict(cfg.to_dict()) == cfg


def test_invalid_mesh_file_starts_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: mizzen.dev/v1\nkind: Workload\nmetadata: {name: x}\nspec: {command: [], bogus: 1}\n")
    sd = tmp_path / "state"
    p = subprocess.run([sys.executable, "-m", "mizzen.cli.main", "up", str(bad), "--state-dir", str(sd),
                        "--detach"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert "spec.bogus: unknown field" in p.stderr and "spec.command" in p.stderr
    assert not sd.exists()


def test_live_status_marks_dead_processes(tmp_path):
    write_json(str(tmp_path / "status.json"), {
        "phase": "running", "ready": True, "runner": {"pid": 999999999},
        "components": [{"name": "controlplane", "kind": "controlplane", "pid": 999999998, "state": "running"}],
        "pods": []})
    st = live_status(str(tmp_path))
    assert st["phase"] == "dead" and not st["ready"]
    assert st["components"][0]["state"] == "dead" and not st["components"][0]["alive"]


def test_untraversable(tmp_path):
    d = tmp_path / "a"
    d.mkdir(mode=0o700)
    os.chmod(d, 0o700)
    if os.geteuid() == 0:
        assert untraversable(str(d / "b" / "c"), 1337) is not None
    os.chmod(d, 0o755)
    assert untraversable("/", 1337) is None


def test_pod_instance_id():
    p = Pod("r-0", "r", "ns1", {}, [], True, "default", "", ["x"], {}, "/", 0)
    assert p.instance_id == "ns1.r-0"


@requires_netns
def test_preflight_makes_a_private_tmp_state_dir_searchable_for_envoy():
    d = tempfile.mkdtemp(prefix="mz-pf-")  # mode 700, as the demo's and many tests' state dirs
    try:
        r = Runner(BOOKINFO, os.path.join(d, ".mizzen"), mode="netns")
        r.preflight()
        assert os.stat(d).st_mode & 0o001
        assert untraversable(os.path.join(d, ".mizzen"), 1337) is None
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_runner_gives_agents_every_control_plane_replica(tmp_path):
    from mizzen.local.pods import Pod, RunnerError

    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("")
    state = tmp_path / "st"
    layout = StateLayout(str(state))
    pod = Pod(name="web-0", workload="web", namespace="default", labels={}, ports=[80], sidecar=True,
              service_account="default", locality="", command=["true"], env={}, cwd=str(tmp_path), index=0)
    one = agent_config(pod, layout, Options(), "loopback").to_dict()
    assert one["xdsAddress"] == f"unix:{state / 'xds.sock'}" and one["apiAddress"] == f"unix:{state / 'api.sock'}"
    two = agent_config(pod, layout, Options(control_planes=2), "loopback").to_dict()
    assert two["xdsAddress"] == [f"unix:{state / 'xds.sock'}", f"unix:{state / 'xds-1.sock'}"]
    assert two["apiAddress"] == [f"unix:{state / 'api.sock'}", f"unix:{state / 'api-1.sock'}"]
    with pytest.raises(RunnerError):
        Runner(str(mesh), str(state), control_planes=4)
