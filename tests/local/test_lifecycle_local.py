"""Lifecycle pieces that need no running mesh: holdApplicationUntilProxyStarts in the plan, the runner's
control channel (runner.sock, real server and client) with a stand-in implementing its `ControlTarget`
protocol, the CLI's --state-dir on command groups."""
from __future__ import annotations

import os
import stat
import tempfile
import threading
import time

import pytest
from click.testing import CliRunner

from mizzen.client import HttpError, RunnerClient
from mizzen.local import commands
from mizzen.local.control import ControlServer, ControlTarget
from mizzen.local.pods import OperationError, plan_pods
from mizzen.manifests import load_files

WORKLOADS = """
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: a, labels: {app: a}}
spec: {command: [x], replicas: 2}
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: b, labels: {app: b}}
spec: {command: [x], holdApplicationUntilProxyStarts: false}
"""


def test_hold_application_until_proxy_starts_defaults_true(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text(WORKLOADS)
    pods = plan_pods(load_files([str(f)]).resources, str(tmp_path))
    assert [(p.name, p.hold) for p in pods] == [("a-0", True), ("a-1", True), ("b-0", False)]


class FakeRunner:
    def __init__(self) -> None:
        self.op_lock = threading.Lock()
        self.phase = "running"
        self.release = threading.Event()

    def status(self) -> dict:
        return {"phase": self.phase, "pods": []}

    def rollout_restart(self, workload, namespace, progress):
        if workload == "bad":
            raise OperationError("no workload 'bad'")
        progress(f"restarting {workload}")
        self.release.wait(10)
        progress("done")
        return [f"{workload}-abcde"]

    def scale(self, workload, namespace, replicas, progress):
        return [workload] * replicas

    def proxy_upgrade(self, workload, namespace, envoy, progress):
        return [{"pod": workload, "epoch": 1, "envoyPid": 1}]


@pytest.fixture
def control():
    d = tempfile.mkdtemp(prefix="mzct-", dir="/tmp")
    runner = FakeRunner()
    target: ControlTarget = runner
    srv = ControlServer(target, os.path.join(d, "runner.sock"))
    srv.start()
    yield runner, srv
    runner.release.set()
    srv.stop(wait_op=5)
    os.rmdir(d)


def test_control_channel_streams_progress_and_one_operation_at_a_time(control, monkeypatch):
    from mizzen.local import control as control_mod

    monkeypatch.setattr(control_mod, "BUSY_WAIT_SECONDS", 0.3)
    runner, srv = control
    client = RunnerClient(srv.path)
    events: list[dict] = []
    t = threading.Thread(target=lambda: events.extend(client.operation("/rollout/restart", {"workload": "web"})))
    t.start()
    deadline = time.monotonic() + 10
    while not events and time.monotonic() < deadline:
        time.sleep(0.02)
    assert events[0] == {"event": "progress", "message": "restarting web"}
    with pytest.raises(HttpError, match="another operation") as e:
        list(client.operation("/scale", {"workload": "web", "replicas": 1}))
    assert e.value.status == 409
    runner.release.set()
    t.join(10)
    assert events[-1] == {"event": "done", "ok": True, "result": ["web-abcde"]}
    bad = list(client.operation("/rollout/restart", {"workload": "bad"}))
    assert bad[-1] == {"event": "done", "ok": False, "error": "no workload 'bad'"}
    with pytest.raises(HttpError, match="no such operation"):
        list(client.operation("/nope", {"workload": "x"}))
    with pytest.raises(HttpError, match="workload: required"):
        list(client.operation("/scale", {}))
    assert client.status() == {"phase": "running", "pods": []}
    assert stat.S_IMODE(os.stat(srv.path).st_mode) == 0o600


def test_an_operation_waits_for_a_short_holder_of_the_lock(control):
    """A reconcile pass (or the previous operation's tail) holds the lock briefly: the next operation waits for
    it instead of answering 409."""
    runner, srv = control
    runner.op_lock.acquire()
    threading.Timer(0.5, runner.op_lock.release).start()
    t0 = time.monotonic()
    events = list(RunnerClient(srv.path).operation("/proxy/upgrade", {"workload": "web"}))
    assert events[-1]["event"] == "done" and events[-1]["ok"], events
    assert time.monotonic() - t0 >= 0.4


def test_control_channel_refuses_when_not_running(control):
    runner, srv = control
    runner.phase = "stopping"
    with pytest.raises(HttpError, match="stopping"):
        list(RunnerClient(srv.path).operation("/proxy/upgrade", {"workload": "web"}))


def test_group_state_dir_reaches_subcommands(tmp_path):
    for args in (["--state-dir", str(tmp_path), "restart", "web"], ["restart", "web", "--state-dir", str(tmp_path)]):
        r = CliRunner().invoke(commands.rollout, args)
        assert r.exit_code == 1 and f"no mesh running in {tmp_path}" in r.output, r.output
    r = CliRunner().invoke(commands.proxy, ["--state-dir", str(tmp_path), "upgrade", "web"])
    assert f"no mesh running in {tmp_path}" in r.output, r.output
