"""`mizzen apply --dry-run` (every server-side check, nothing stored) and `--skip-unknown` (known kinds applied,
one warning per skipped document), against the real REST server of the CLI tests."""
from __future__ import annotations

from tests.cli.test_config_commands import VS, write

UNKNOWN = "apiVersion: example.com/v1\nkind: Frobnicator\nmetadata: {name: f}\nspec: {}\n"


def test_dry_run(cli, mesh, tmp_path):
    f = write(tmp_path, "vs.yaml", VS)
    r = cli("apply", "--dry-run", "-f", f)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == ["virtualservice.networking.istio.io/reviews created (dry run)"]
    assert mesh.store.revision == 0
    r = cli("apply", "--dry-run", "-f", write(tmp_path, "bad.yaml", VS.replace("reviews", "Bad_Name", 1)))
    assert r.exit_code == 1 and "metadata.name" in r.stderr and mesh.store.revision == 0


def test_skip_unknown(cli, mesh, tmp_path):
    f = write(tmp_path, "mixed.yaml", VS + "---\n" + UNKNOWN)
    r = cli("apply", "-f", f)
    assert r.exit_code == 1 and "unknown kind 'Frobnicator'" in r.stderr and mesh.store.revision == 0
    r = cli("apply", "--skip-unknown", "-f", f)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == ["virtualservice.networking.istio.io/reviews created"]
    assert "Warning:" in r.stderr and "skipped: unknown kind 'Frobnicator'" in r.stderr
