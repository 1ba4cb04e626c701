"""`mizzen up` as root never falls back to loopback mode silently: without `iptables` (or `ip`) it refuses,
naming the missing command, what loopback mode changes for the apps and how to install it — unless
`--mode loopback` was asked for. Checked with a real PATH that lacks the commands."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from mizzen.local.pods import RunnerError
from mizzen.local.runner import resolve_mode


def _path_with(tmp_path, *tools: str) -> str:
    """A PATH holding only these commands (links to the real ones, or scripts where absent)."""
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    for t in tools:
        real = shutil.which(t)
        if real:
            os.symlink(real, d / t)
        else:
            (d / t).write_text("#!/bin/sh\nexit 0\n")
            (d / t).chmod(0o755)
    return str(d)


def test_root_without_iptables_is_refused_with_what_to_do(tmp_path):
    path = _path_with(tmp_path, "ip")
    for mode in ("auto", "netns"):
        with pytest.raises(RunnerError) as e:
            resolve_mode(mode, euid=0, path=path)
        msg = str(e.value)
        assert "`iptables`, `iptables-restore` commands are missing" in msg
        assert "make sysdeps" in msg and "apt-get install iptables iproute2" in msg
        assert "--mode loopback" in msg and "$PORT" in msg and "HTTP_PROXY" in msg


def test_root_without_ip_is_refused_naming_it(tmp_path):
    path = _path_with(tmp_path, "iptables", "iptables-restore")
    with pytest.raises(RunnerError, match=r"the `ip` command is missing"):
        resolve_mode("auto", euid=0, path=path)


def test_loopback_asked_for_runs_without_the_tools(tmp_path):
    assert resolve_mode("loopback", euid=0, path=str(tmp_path)) == "loopback"


def test_without_root_auto_is_loopback_and_netns_an_error(tmp_path):
    assert resolve_mode("auto", euid=1000, path=str(tmp_path)) == "loopback"
    with pytest.raises(RunnerError, match="need root"):
        resolve_mode("netns", euid=1000, path=str(tmp_path))
    with pytest.raises(RunnerError, match="unknown mode"):
        resolve_mode("bridge", euid=0, path=str(tmp_path))


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal is for root; as another user auto means loopback")
def test_mizzen_up_refuses_and_starts_nothing(tmp_path):
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("apiVersion: mizzen.dev/v1\nkind: Workload\nmetadata: {name: web}\nspec: {command: [sleep, '9']}\n")
    state = tmp_path / "state"
    env = dict(os.environ, PATH=_path_with(tmp_path, "ip"))
    p = subprocess.run([sys.executable, "-m", "mizzen.cli.main", "up", str(mesh), "--state-dir", str(state),
                        "--detach"], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 1
    assert "`iptables`, `iptables-restore` commands are missing" in p.stderr and "--mode loopback" in p.stderr
    assert not state.exists()
