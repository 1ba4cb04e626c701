"""Apps run as a non-root user: which uid (the Workload's securityContext, else the mesh's app user), and the
`setpriv` command line that drops to it — run for real as root: the process has that uid, no supplementary
groups, no way back to root, and cannot read a root-only file (such as the admin credential)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mizzen.api import load_text
from mizzen.local.pods import APP_UID_BASE, APP_UID_SPAN, as_user, mesh_app_user, plan_pods
from mizzen.local.procs import env_without_proxies

WORKLOADS = """
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: plain, namespace: shop}
spec: {command: [sleep, "1"]}
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: chosen, namespace: shop}
spec: {command: [sleep, "1"], securityContext: {runAsUser: 4242}}
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: root, namespace: shop}
spec: {command: [sleep, "1"], securityContext: {runAsUser: 0, runAsGroup: 0}}
"""


def test_which_user_an_app_runs_as():
    uid, gid = mesh_app_user("a1b2c3")
    assert uid == gid and APP_UID_BASE <= uid < APP_UID_BASE + APP_UID_SPAN
    assert mesh_app_user("a1b2c3") == (uid, gid) and mesh_app_user("a1b2c4") != (uid, gid)  # per mesh
    plain, chosen, root = plan_pods(load_text(WORKLOADS).resources, "/tmp")
    assert plain.resolve_app_user("a1b2c3", root=True) == (uid, gid)
    assert chosen.resolve_app_user("a1b2c3", root=True) == (4242, 4242)
    assert root.resolve_app_user("a1b2c3", root=True) == (0, 0)
    assert plain.resolve_app_user("a1b2c3", root=False) is None  # a non-root runner cannot switch
    assert as_user(None, ["x"]) == ["x"] and as_user((0, 0), ["x"]) == ["x"]
    assert as_user((5, 6), ["x", "-y"]) == ["setpriv", "--reuid=5", "--regid=6", "--clear-groups",
                                             "--no-new-privs", "--", "x", "-y"]


def test_the_clis_credentials_are_not_handed_to_apps():
    env = env_without_proxies({"MIZZEN_TOKEN": "mzt_x", "MIZZEN_SERVER": "https://a:1", "http_proxy": "p",
                               "PATH": "/bin"})
    assert env == {"PATH": "/bin"}


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_setpriv_drops_to_the_app_user_for_real(tmp_path):
    secret = tmp_path / "admin.token"
    secret.write_text("mzt_secret")
    os.chmod(secret, 0o600)
    os.chmod(tmp_path, 0o711)
    uid, gid = mesh_app_user("abcdef")
    probe = ("import os, sys\n"
             "print(os.getuid(), os.getgid(), os.getgroups())\n"
             "try:\n    open(sys.argv[1]).read(); print('read')\nexcept PermissionError: print('denied')\n"
             "try:\n    os.setuid(0); print('root again')\nexcept PermissionError: print('stays')\n")
    out = subprocess.run(as_user((uid, gid), [sys.executable, "-c", probe, str(secret)]), capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == [f"{uid} {gid} []", "denied", "stays"]


@pytest.mark.skipif(os.geteuid() != 0, reason="checks another uid's view of the file system")
def test_the_app_gets_the_part_of_path_it_can_reach(tmp_path):
    """root's PATH may start with dirs only root can reach (~/.pyenv/shims): `python3` must not resolve there."""
    from mizzen.local.pods import SYSTEM_PATH, path_for

    private = tmp_path / "private" / "bin"
    private.mkdir(parents=True)
    os.chmod(tmp_path / "private", 0o700)
    os.chmod(tmp_path, 0o755)
    user = mesh_app_user("abcdef")
    assert path_for(user, f"{private}:/usr/bin:/bin:/usr/bin") == "/usr/bin:/bin"
    assert path_for(user, str(private)) == SYSTEM_PATH
    assert path_for(None, f"{private}:/bin") == f"{private}:/bin"
    out = subprocess.run(as_user(user, ["sh", "-c", "command -v python3"]), capture_output=True, text=True,
                         env={"PATH": path_for(user, f"{private}:/usr/local/bin:/usr/bin:/bin")}, timeout=30)
    assert out.returncode == 0 and out.stdout.strip().startswith(("/usr/bin/", "/usr/local/bin/")), out
