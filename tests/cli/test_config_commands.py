"""`mizzen apply / delete / get` against a real REST server on a real unix socket."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import yaml

from mizzen.api import Issue

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
"""
DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""
SVC = """\
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{port: 9080, name: http}]
"""
BAD = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken}
spec:
  hosts: [reviews]
  htttp: []
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: Bad_Name}
spec: {host: reviews}
"""


def write(dir_, name: str, text: str) -> str:
    p = dir_ / name
    p.write_text(text)
    return str(p)


def test_apply_created_configured_unchanged(cli, tmp_path):
    f1, f2 = write(tmp_path, "vs.yaml", VS), write(tmp_path, "dr.yaml", DR)
    r = cli("apply", "-f", f1, "-f", f2)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == ["virtualservice.networking.istio.io/reviews created",
                                     "destinationrule.networking.istio.io/reviews created"]
    r = cli("apply", "-f", f1, "-f", f2)
    assert r.stdout.splitlines() == ["virtualservice.networking.istio.io/reviews unchanged",
                                     "destinationrule.networking.istio.io/reviews unchanged"]
    write(tmp_path, "vs.yaml", VS.replace("subset: v1", "subset: v2"))
    r = cli("apply", "-f", f1)
    assert r.stdout.splitlines() == ["virtualservice.networking.istio.io/reviews configured"]
    r = cli("apply", "-f", write(tmp_path, "svc.yaml", SVC), "-n", "shop")
    assert r.stdout.splitlines() == ["service/reviews created"]


def test_apply_errors_one_per_line_and_nothing_changes(cli, mesh, tmp_path):
    good = write(tmp_path, "vs.yaml", VS)
    bad = write(tmp_path, "bad.yaml", BAD)
    r = cli("apply", "-f", good, "-f", bad)
    assert r.exit_code == 1
    lines = r.stderr.splitlines()
    assert lines == [
        f"{bad} (document 1): VirtualService default/broken field spec.htttp: unknown field",
        f"{bad} (document 2): DestinationRule default/Bad_Name field metadata.name: invalid name 'Bad_Name': "
        "lower-case letters, digits, '-' and '.' only, at most 253 characters",
    ]
    assert r.stdout == ""
    assert mesh.store.revision == 0 and mesh.store.list() == []


def test_apply_directory_and_stdin(cli, mesh, tmp_path):
    d = tmp_path / "manifests"
    d.mkdir()
    write(d, "a.yaml", VS)
    write(d, "b.yml", DR)
    write(d, "notes.txt", "not: a manifest")
    r = cli("apply", "-f", str(d))
    assert r.exit_code == 0, r.output
    assert len(r.stdout.splitlines()) == 2
    r = cli("apply", "-f", "-", "-n", "staging", input=SVC)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "service/reviews created"
    assert [str(x.key) for x in mesh.store.list()] == [
        "DestinationRule/default/reviews", "Service/staging/reviews", "VirtualService/default/reviews"]


def test_apply_warnings_and_unreadable_file(cli, tmp_path):
    dep = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n---\n" + VS
    r = cli("apply", "-f", write(tmp_path, "mixed.yaml", dep))
    assert r.exit_code == 0
    assert "Warning:" in r.stderr and "Deployment" in r.stderr
    r = cli("apply", "-f", str(tmp_path / "missing.yaml"))
    assert r.exit_code == 1 and "missing.yaml: cannot read: No such file or directory" in r.stderr


def test_get_table_yaml_json(cli, tmp_path):
    cli("apply", "-f", write(tmp_path, "all.yaml", VS + "---\n" + DR))
    cli("apply", "-f", write(tmp_path, "vs2.yaml", VS.replace("name: reviews", "name: ratings")), "-n", "shop")

    r = cli("get", "vs")
    assert r.exit_code == 0
    rows = [line.split() for line in r.stdout.splitlines()]
    assert rows[0] == ["NAMESPACE", "NAME", "GATEWAYS", "HOSTS", "REVISION"]
    assert rows[1:] == [["default", "reviews", "-", "reviews", "1"]]

    r = cli("get", "virtualservices", "-A")
    assert [line.split()[:2] for line in r.stdout.splitlines()[1:]] == [["default", "reviews"], ["shop", "ratings"]]
    r = cli("get", "dr", "-n", "shop")
    assert r.stdout == "" and "No resources found in shop namespace." in r.stderr

    r = cli("get", "destinationrule", "reviews", "-o", "wide")
    assert r.stdout.splitlines()[1].split()[:4] == ["default", "reviews", "reviews", "v1,v2"]

    # -o yaml prints the stored documents; re-applying them changes nothing
    r = cli("get", "vs", "-A", "-o", "yaml")
    docs = list(yaml.safe_load_all(r.stdout))
    assert [d["metadata"]["name"] for d in docs] == ["reviews", "ratings"]
    out = tmp_path / "dump.yaml"
    out.write_text(r.stdout)
    r = cli("apply", "-f", str(out))
    assert r.stdout.splitlines() == ["virtualservice.networking.istio.io/reviews unchanged",
                                     "virtualservice.networking.istio.io/ratings unchanged"]

    assert json.loads(cli("get", "sidecars", "-A", "-o", "json").stdout) == \
        {"apiVersion": "v1", "kind": "List", "items": []}
    assert len(json.loads(cli("get", "vs", "-A", "-o", "json").stdout)["items"]) == 2

    r = cli("get", "vs", "reviews", "-o", "json")
    d = json.loads(r.stdout)
    assert d["kind"] == "VirtualService" and d["spec"]["hosts"] == ["reviews"]


def test_get_missing_and_unknown_kind(cli):
    r = cli("get", "vs", "nope")
    assert r.exit_code == 1
    assert 'virtualservice.networking.istio.io "nope" not found' in r.stderr
    r = cli("get", "pods")
    assert r.exit_code == 1 and 'resource type "pods"' in r.stderr


def test_get_instances_and_services(cli, mesh):
    from mizzen.client import ApiClient
    from mizzen.model.types import Instance
    api = ApiClient(str(mesh.state_dir))
    api.put_instance(Instance.from_dict({"id": "default.reviews-v1-0", "namespace": "default",
                                         "workload": "reviews-v1", "address": "10.244.0.2", "ports": [9080],
                                         "labels": {"version": "v1"}}))
    api.put_instance(Instance.from_dict({"id": "shop.cart-0", "namespace": "shop", "workload": "cart",
                                         "address": "10.244.0.3", "healthy": False}))
    r = cli("get", "instances")
    rows = [line.split() for line in r.stdout.splitlines()]
    assert rows == [["NAMESPACE", "ID", "WORKLOAD", "ADDRESS", "PORTS", "HEALTHY"],
                    ["default", "default.reviews-v1-0", "reviews-v1", "10.244.0.2", "9080", "yes"]]
    r = cli("get", "instances", "-A", "-o", "wide")
    assert [line.split()[1] for line in r.stdout.splitlines()[1:]] == ["default.reviews-v1-0", "shop.cart-0"]
    assert "version=v1" in r.stdout
    assert json.loads(cli("get", "inst", "-n", "shop", "-o", "json").stdout)[0]["healthy"] is False

    mesh.services = [{"name": "reviews", "namespace": "default", "hostname": "reviews.default.svc.cluster.local",
                      "vip": "10.96.0.10", "ports": [{"port": 9080, "name": "http", "protocol": "HTTP",
                                                      "targetPort": 9080}]}]
    r = cli("get", "services")
    assert [line.split() for line in r.stdout.splitlines()] == [
        ["NAMESPACE", "NAME", "VIP", "PORTS", "HOSTNAME"],
        ["default", "reviews", "10.96.0.10", "9080/http", "reviews.default.svc.cluster.local"]]


def test_delete_by_name_and_by_file(cli, mesh, tmp_path):
    f = write(tmp_path, "all.yaml", VS + "---\n" + DR)
    cli("apply", "-f", f)
    r = cli("delete", "vs", "reviews", "nope")
    assert r.exit_code == 1
    assert r.stdout.strip() == 'virtualservice.networking.istio.io "reviews" deleted'
    assert 'virtualservice.networking.istio.io "nope" not found' in r.stderr
    # delete -f: all-or-nothing, the VS is already gone so nothing is deleted
    r = cli("delete", "-f", f)
    assert r.exit_code == 1 and '"reviews" not found' in r.stderr
    assert [str(x.key) for x in mesh.store.list()] == ["DestinationRule/default/reviews"]
    r = cli("delete", "-f", write(tmp_path, "dr.yaml", DR))
    assert r.exit_code == 0 and r.stdout.strip() == 'destinationrule.networking.istio.io "reviews" deleted'
    assert mesh.store.list() == []


def test_no_mesh_running(tmp_path):
    from tests.cli.conftest import Cli
    state = tmp_path / "nothing"
    r = Cli(state)("get", "vs")
    assert r.exit_code == 1
    assert f"no mesh running in {state} (start one with `mizzen up`)" in r.stderr
    # a stale socket (nobody listening) reads the same
    state.mkdir()
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(state / "api.sock"))
    s.close()
    r = Cli(state)("apply", "-f", "-", input=VS)
    assert r.exit_code == 1 and "no mesh running" in r.stderr


def test_state_dir_from_environment(cli, mesh, tmp_path):
    cli("apply", "-f", write(tmp_path, "vs.yaml", VS))
    r = cli("get", "vs", env={"MIZZEN_STATE_DIR": str(mesh.state_dir)}, state_dir=False)
    assert r.exit_code == 0 and "reviews" in r.stdout


def test_console_script_as_a_process(mesh, tmp_path):
    """`python -m mizzen.cli.main` in a real subprocess, talking to the real server."""
    env = {**os.environ, "MIZZEN_STATE_DIR": str(mesh.state_dir)}
    p = subprocess.run([sys.executable, "-m", "mizzen.cli.main", "apply", "-f", "-"], input=VS, env=env,
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "virtualservice.networking.istio.io/reviews created"
    p = subprocess.run([sys.executable, "-m", "mizzen.cli.main", "get", "vs", "-o", "yaml"], env=env,
                       capture_output=True, text=True, timeout=20)
    assert yaml.safe_load(p.stdout)["metadata"]["resourceVersion"] == "1"


def test_issue_lines_match_issue_str():
    from mizzen.cli.render import issue_line
    i = Issue("bad", "f.yaml", 2, "VirtualService", "ns", "n", "spec.x")
    assert issue_line(i.to_dict()) == str(i)
    assert issue_line(Issue("plain").to_dict()) == str(Issue("plain"))


def test_deep_state_dir(tmp_path):
    """Unix socket paths are limited to 108 bytes; a deep state dir must still work end to end."""
    from tests.cli.conftest import Cli, Mesh
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    assert len(str(deep / "api.sock")) > 108
    m = Mesh(deep).start()
    try:
        r = Cli(deep)("apply", "-f", "-", input=VS)
        assert r.exit_code == 0, r.output
        assert Cli(deep)("get", "vs").stdout.splitlines()[1].split()[:2] == ["default", "reviews"]
    finally:
        m.stop()
