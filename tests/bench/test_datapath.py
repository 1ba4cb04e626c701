"""The data-path benchmark's baseline (issue 15 goal 1): its static Envoy configs pass Envoy's own validation,
the mesh file it runs is a valid mesh, and its ratios are taken pair by pair."""
from __future__ import annotations

import subprocess

import pytest
import yaml

from mizzen.bench import datapath
from mizzen.bench.mtls import _certs
from mizzen.envoybin import find_envoy


def _validate(cfg: dict, path) -> None:
    path.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([find_envoy(), "--mode", "validate", "-c", str(path), "--concurrency", "1",
                        "--log-level", "warning"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "mtls"])
def test_bare_envoys_and_app_validate(tls, tmp_path):
    a, b = datapath.bare_configs("10.244.0.9", _certs(tmp_path) if tls else None)
    _validate(a, tmp_path / "a.yaml")
    _validate(b, tmp_path / "b.yaml")
    _validate(datapath.app_config(), tmp_path / "app.yaml")
    # the bare pair listens where the capture sends traffic, like a sidecar
    assert a["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] == 15001
    assert b["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] == 15006
    chain = b["static_resources"]["listeners"][0]["filter_chains"][0]
    assert ("transport_socket" in chain) is tls


def test_mesh_file_is_a_valid_mesh(tmp_path):
    import sys

    f = tmp_path / "mesh.yaml"
    f.write_text(datapath.mesh_yaml("/usr/bin/envoy", tmp_path / "app.yaml"))
    r = subprocess.run([sys.executable, "-m", "mizzen.cli.main", "validate", "-f", str(f)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(f.read_text())]
    assert kinds.count("Workload") == 4
    for i, text in enumerate(set(datapath.TELEMETRY.values()) | {datapath.PLAINTEXT_DR}):  # what the modes apply
        g = tmp_path / f"mode{i}.yaml"
        g.write_text(text)
        r = subprocess.run([sys.executable, "-m", "mizzen.cli.main", "validate", "-f", str(g)], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, text + r.stdout + r.stderr


def test_ratios_are_pairwise_and_markdown_names_the_goal():
    def run(path, load, rps, p50, p99, cpu):
        return {"path": path, "load": load, "rps": rps, "p50_ms": p50, "p99_ms": p99, "requests": 1000,
                "errors": 0, "cpu_client_us": cpu, "cpu_server_us": cpu}

    rs = [run("bare", "paced", 1000, 2.0, 4.0, 100), run("mesh", "paced", 1000, 2.2, 4.0, 120),
          run("mesh", "paced", 1000, 3.0, 8.0, 150), run("bare", "paced", 1000, 2.0, 4.0, 100),
          run("bare", "saturation", 3000, 1.0, 2.0, 100), run("mesh", "saturation", 2700, 1.1, 2.4, 110)]
    assert datapath._pairs(rs, "paced", "p50_ms") == pytest.approx([1.1, 1.5])
    assert datapath._pairs(rs, "saturation", "rps") == pytest.approx([0.9])
    md = datapath.markdown({"seconds": 10, "rate": 1000, "pairs": 2, "wall_s": 60, "runs": {"plaintext": rs}})
    assert "| p50 | 1.30× (1.10–1.50) |" in md
    assert "| throughput | - | 0.90× (0.90–0.90) | ≥ 0.95× saturation |" in md
    # the same pairs as goal 1's rows of the goals table: ratio goals, met or not by the median ratio
    from mizzen.bench.table import table
    rows = {r.goal: r for r in datapath.goal_rows({"runs": {"plaintext": rs}})}
    p50 = rows["1. data path (plaintext): p50 ms at 1000 rps paced"]
    assert p50.ratios() == pytest.approx([1.1, 1.5]) and p50.met() == "no"  # median 1.30 > 1.05
    tput = rows["1. data path (plaintext): throughput at saturation, requests/s"]
    assert tput.met() == "no" and tput.target == "≥ 0.95×"  # 0.90 < 0.95
    assert rows["1. data path (plaintext): p99 ms at 1000 rps paced"].met() == "no"  # median(1.0, 2.0) = 1.5
    ok = datapath.goal_rows({"runs": {"m": [run("bare", "saturation", 3000, 1.0, 2.0, 100),
                                            run("mesh", "saturation", 2900, 1.0, 2.1, 100)]}})
    assert [r.met() for r in ok if "saturation" in r.goal] == ["yes", "yes"]  # 0.97 >= 0.95, 1.05 <= 1.10
    text = table(list(rows.values()))
    assert "| 1. data path (plaintext): throughput at saturation, requests/s | ≥ 0.95× | 2700 | 3000 | two bare " \
           "Envoys, same capture | 0.90 | no |" in text
