"""The CLI's ApiClient reaches a control-plane replica's api-<i>.sock when api.sock is down, and merges the
replicas' proxies (real control planes on one state dir)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from mizzen.client import ApiClient, MeshUnavailable


def _start(state: str, i: int) -> subprocess.Popen:
    argv = [sys.executable, "-m", "mizzen.cli.main", "controlplane", "--state-dir", state, "--replica", str(i)]
    log = open(os.path.join(state, f"cp-{i}.log"), "wb")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_ready(path: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "control plane exited"
        if os.path.exists(path):
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
                return
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.1)
    raise AssertionError(f"{path} never accepted connections")


def test_cli_falls_back_to_another_replica(tmp_path):
    state = str(tmp_path)
    procs = [_start(state, 0), _start(state, 1)]
    try:
        _wait_ready(os.path.join(state, "api.sock"), procs[0])
        _wait_ready(os.path.join(state, "api-1.sock"), procs[1])
        api = ApiClient(state, timeout=10)
        svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: [{port: 80}]}\n"
        api.apply([("svc.yaml", svc)])
        assert api.proxies() == []
        procs[0].kill()
        procs[0].wait(10)
        assert os.path.exists(os.path.join(state, "api.sock"))  # left behind: connection refused
        deadline = time.monotonic() + 20  # replica 1 picks up replica 0's commit from the shared store
        names: list[str] = []
        while time.monotonic() < deadline and names != ["web"]:
            names = [r["metadata"]["name"] for r in api.list_resources("Service", "shop")]  # replica 1 answers
            time.sleep(0.1)
        assert names == ["web"]
        api.delete_resource("Service", "shop", "web")
        assert api.list_resources("Service", "shop") == []
        procs[1].kill()
        procs[1].wait(10)
        with pytest.raises(MeshUnavailable):
            api.services()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
