"""`mizzen validate -f FILE...`: offline validation with apply's rules, istioctl-style output and exit status,
`--skip-unknown`, JSON output; nothing needs a running mesh."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

GOOD = """apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {ports: [{port: 9080, name: http}], selector: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}], timeout: 1m30s}]
"""
BAD = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}
"""
UNKNOWN = """apiVersion: networking.istio.io/v1
kind: Widget
metadata: {name: g}
spec: {}
---
apiVersion: example.com/v1
kind: Frobnicator
metadata: {name: f}
"""


def run(tmp_path: Path, *args: str, **files: str) -> subprocess.CompletedProcess:
    paths = []
    for name, text in files.items():
        (tmp_path / f"{name}.yaml").write_text(text)
        paths += ["-f", str(tmp_path / f"{name}.yaml")]
    return subprocess.run([sys.executable, "-m", "mizzen.cli.main", "validate", *paths, *args],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)


def test_valid_files(tmp_path: Path) -> None:
    p = run(tmp_path, good=GOOD)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "validation succeed (2 resources)"


def test_invalid_document_names_file_document_resource_and_field(tmp_path: Path) -> None:
    p = run(tmp_path, good=GOOD, bad=BAD)
    assert p.returncode == 1
    assert "Error: 1 error occurred:" in p.stderr
    assert (f"{tmp_path / 'bad.yaml'} (document 1): DestinationRule default/reviews field "
            "spec.trafficPolicy.connectionPool.tcp.maxConnections:") in p.stderr


def test_unknown_kinds_are_each_named_and_can_be_skipped(tmp_path: Path) -> None:
    p = run(tmp_path, good=GOOD, mixed=UNKNOWN)
    assert p.returncode == 1
    assert "unknown kind 'Widget'" in p.stderr and "unknown kind 'Frobnicator'" in p.stderr
    p = run(tmp_path, "--skip-unknown", good=GOOD, mixed=UNKNOWN)
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("Warning:") == 2 and "skipped: unknown kind 'Frobnicator'" in p.stderr


def test_json_output(tmp_path: Path) -> None:
    p = run(tmp_path, "-o", "json", good=GOOD, bad=BAD)
    out = json.loads(p.stdout)
    assert p.returncode == 1 and out["valid"] is False
    assert out["errors"][0]["path"] == "spec.trafficPolicy.connectionPool.tcp.maxConnections"


def test_duplicate_keys_are_reported_with_their_line(tmp_path: Path) -> None:
    p = run(tmp_path, dup="apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  name: b\n")
    assert p.returncode == 1 and "duplicate key 'name' in a mapping (first at line 4) at line 5" in p.stderr
