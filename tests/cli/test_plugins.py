"""Every `mizzen` verb is registered explicitly: a command module that does not import is a crash with a
traceback, never a silently missing verb."""
from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from mizzen.cli.main import build_cli

VERBS = {"apply", "delete", "get", "proxy-status", "proxy-config", "up", "down", "exec", "status", "rollout",
         "scale", "proxy", "agent", "controlplane", "bench", "analyze", "validate", "logs", "etcd", "ratelimit", "ca", "token",
         "stat", "top", "tap", "traces", "dashboard", "prometheus-config", "mesh", "chaos",
         "proxyless-bootstrap"}


def test_every_verb_is_registered():
    group = build_cli()
    assert set(group.commands) == VERBS
    r = CliRunner().invoke(group, ["--help"])
    assert r.exit_code == 0 and all(v in r.stdout for v in VERBS)


def test_a_broken_command_module_is_a_crash_with_a_traceback(tmp_path):
    """A command module that fails to import takes `mizzen` down loudly (here: a `mizzen.bench` package
    shadowed by one that raises), instead of the verb quietly disappearing."""
    fake = tmp_path / "mizzen_shadow"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(
        "import sys, types\n"
        "class Broken(types.ModuleType):\n"
        "    def __getattr__(self, name):\n"
        "        raise ImportError('half-written module')\n"
        "sys.modules['mizzen.bench.commands'] = Broken('mizzen.bench.commands')\n")
    code = "import sitecustomize; from mizzen.cli.main import main; main(['--help'])"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={"PYTHONPATH": str(fake)})
    assert p.returncode != 0
    assert "Traceback" in p.stderr and "half-written module" in p.stderr
