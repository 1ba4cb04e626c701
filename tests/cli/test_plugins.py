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
    import click

    group = build_cli()
    ctx = click.Context(group)
    assert set(group.list_commands(ctx)) == VERBS
    for v in VERBS:  # each one's module imports, and the command is the one named so
        cmd = group.get_command(ctx, v)
        assert isinstance(cmd, click.Command) and v in (cmd.name, v), v
    r = CliRunner().invoke(group, ["--help"])
    assert r.exit_code == 0 and all(v in r.stdout for v in VERBS)


def test_a_verb_imports_only_its_own_module():
    """`mizzen exec` / `get` / `status` run many times a minute from scripts: they must not import every kind's
    schema, the translator, the control plane or aiohttp (that cost ~2.5 s of CPU per call)."""
    code = ("import sys; from mizzen.cli.main import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in sys.modules if m in ('mizzen.api.kinds', 'mizzen.translate.renderer', "
            "'mizzen.local.runner', 'mizzen.server.controlplane', 'aiohttp', 'grpc'))\n"
            "print('HEAVY', heavy)")
    for verb in (["exec", "--help"], ["status", "--help"], ["get", "--help"]):
        p = subprocess.run([sys.executable, "-c", code, *verb], capture_output=True, text=True, timeout=60)
        assert "HEAVY []" in p.stdout, (verb, p.stdout[-500:], p.stderr[-2000:])


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
