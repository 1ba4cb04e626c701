"""`mizzen analyze`: each analyzer finds its problem, and clean Istio samples give no errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mizzen.analyze import analyze
from mizzen.api import load_text
from mizzen.manifests import load_files

HERE = Path(__file__).parent
from tests.samples import ISTIO_BOOKINFO as SHARED, OWN_BOOKINFO, OWN_NETWORKING, needs_istio_samples


def codes(text: str) -> list[tuple[str, str]]:
    return [(m.code, m.path) for m in analyze(load_text(text).resources)]


def test_mixed_file_finds_every_problem() -> None:
    msgs = analyze(load_files([str(HERE / "mixed.yaml")]).resources)
    got = {(m.code, m.resource, m.path) for m in msgs}
    assert got == {
        ("IST0111", "Sidecar default/b", ""),
        ("IST0101", "VirtualService default/reviews", "spec.gateways[1]"),
        ("IST0101", "VirtualService default/reviews", "spec.http[0].route[0].destination.subset"),
        ("IST0101", "VirtualService default/reviews", "spec.http[1].route[0].destination.host"),
        ("IST0109", "VirtualService default/reviews-2", "spec.hosts"),
        ("MZ0101", "VirtualService default/reviews", "spec.http[1]"),
        ("MZ0102", "VirtualService default/reviews-2", "spec.http[1].match[0]"),
        ("IST0118", "Service default/reviews", "spec.ports[0].name"),
        ("MZ0103", "VirtualService default/reviews-2", "spec.http[0].route[1].weight"),
    }
    assert all(m.hint for m in msgs)


@needs_istio_samples
def test_bookinfo_with_istio_samples_is_clean() -> None:
    res = load_files([str(SHARED / "platform" / "kube" / "bookinfo.yaml"),
                      str(SHARED / "networking" / "destination-rule-all.yaml"),
                      str(SHARED / "networking" / "virtual-service-reviews-jason-v2-v3.yaml")]).resources
    assert [m for m in analyze(res) if m.level != "Info"] == []


def test_bookinfo_with_own_routing_files_is_clean() -> None:
    res = load_files([str(OWN_BOOKINFO / "mesh.yaml"), str(OWN_NETWORKING / "destination-rule-all.yaml"),
                      str(OWN_NETWORKING / "virtual-service-reviews-jason-v2-v3.yaml")]).resources
    assert [m for m in analyze(res) if m.level != "Info"] == []


def test_overlapping_sidecar_selectors() -> None:
    text = """apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: w, labels: {app: a, tier: x}}
spec: {command: ["true"]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: by-app}
spec: {workloadSelector: {labels: {app: a}}, egress: [{hosts: ["./*"]}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: by-tier}
spec: {workloadSelector: {labels: {tier: x}}, egress: [{hosts: ["./*"]}]}
"""
    assert codes(text) == [("IST0110", "")]


def test_cli_reports_schema_errors_with_code_and_exit_status(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n"
                 "  hosts: [r]\n  http:\n  - route:\n    - destination: {host: r}\n      weight: 0\n"
                 "    - destination: {host: r}\n      weight: 0\n")
    p = subprocess.run([sys.executable, "-m", "mizzen.cli.main", "analyze", "--no-mesh", "-f", str(f), "-o", "json"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stderr
    (m,) = json.loads(p.stdout)["messages"]
    assert m["code"] == "IST0106" and "total destination weight = 0" in m["message"] and m["path"] == "spec.http[0].route"
    clean = subprocess.run([sys.executable, "-m", "mizzen.cli.main", "analyze", "--no-mesh", "-f",
                            str(OWN_NETWORKING / "destination-rule-all.yaml")],
                           capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0 and "No validation issues" in clean.stdout, clean.stdout + clean.stderr
