from __future__ import annotations

import sys

import click
from click.testing import CliRunner

from mizzen.cli.main import add_plugins, build_cli


def test_plugins_are_added_when_importable(tmp_path, monkeypatch):
    (tmp_path / "mz_fake_local.py").write_text(
        "import click\n"
        "@click.command()\n@click.argument('pod')\ndef exec_(pod):\n    click.echo('exec ' + pod)\n"
        "@click.command()\ndef up():\n    click.echo('up!')\n")
    (tmp_path / "mz_fake_broken.py").write_text("raise RuntimeError('half-written')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    group = build_cli(plugins=False)
    add_plugins(group, (
        ("mz_fake_local", (("up", "up"), ("exec_", "exec"), ("down", "down"))),  # `down` not exported yet
        ("mz_fake_missing", (("agent", "agent"),)),
        ("mz_fake_broken", (("bench", "bench"),)),
    ))
    assert {"up", "exec", "apply", "get"} <= set(group.commands)
    assert not {"down", "agent", "bench"} & set(group.commands)
    r = CliRunner().invoke(group, ["exec", "reviews-v1-0"])
    assert r.exit_code == 0 and r.stdout == "exec reviews-v1-0\n"
    r = CliRunner().invoke(group, ["--help"])
    assert "proxy-config" in r.stdout and "proxy-status" in r.stdout
    for m in ("mz_fake_local", "mz_fake_broken"):
        sys.modules.pop(m, None)


def test_broken_plugin_warns_instead_of_crashing(tmp_path, monkeypatch, capsys):
    (tmp_path / "mz_fake_broken2.py").write_text("raise RuntimeError('half-written')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    group = click.Group()
    add_plugins(group, (("mz_fake_broken2", (("bench", "bench"),)),))
    assert group.commands == {}
    assert "cannot load mz_fake_broken2: RuntimeError: half-written" in capsys.readouterr().err
