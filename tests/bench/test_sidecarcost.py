"""The real-sidecar cost benchmark (bench/sidecarcost.py): a sidecar's config dump becomes a static bootstrap that
Envoy accepts, with RDS inlined, EDS as static endpoints and SDS as files, and every bisection variant of it is a
valid Envoy config too. Built from a golden's generated resources in config-dump shape (the full run needs a mesh
and valgrind: `python -m mizzen.bench.sidecarcost`)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from mizzen.bench import sidecarcost as sc
from mizzen.bench.mtls import _certs
from mizzen.envoybin import find_envoy

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "bookinfo-mtls" / "out"


def _dump() -> dict:
    load = lambda name: yaml.safe_load((GOLDEN / name).read_text())  # noqa: E731
    pipe = lambda name: {"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {  # noqa: E731
        "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {
            "path": f"/tmp/{name}.sock"}}}}]}]}}
    boot = {"node": {"id": "sidecar~10.0.0.1~p.default~default.svc.cluster.local", "cluster": "p"},
            "static_resources": {"clusters": [pipe(n) for n in ("xds-grpc", "sds-grpc", "mizzen-telemetry",
                                                                "mizzen-traces")]},
            "dynamic_resources": {"ads_config": {}}}
    return {"configs": [
        {"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap": boot},
        {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
         "dynamic_active_clusters": [{"cluster": dict(c, **{"@type": "x"})} for c in load("clusters.yaml")]},
        {"@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
         "dynamic_endpoint_configs": [{"endpoint_config": e} for e in load("endpoints.yaml")]},
        {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
         "dynamic_listeners": [{"name": l["name"], "active_state": {"listener": l}} for l in load("listeners.yaml")]},
        {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
         "dynamic_route_configs": [{"route_config": r} for r in load("routes.yaml")]}]}


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory):
    files = _certs(tmp_path_factory.mktemp("certs"))
    return sc.static_bootstrap(_dump(), "10.244.0.9", files, "client")


def test_the_dump_becomes_a_static_bootstrap(bootstrap):
    text = json.dumps(bootstrap)
    assert '"rds"' not in text and "sds_config" not in text and '"EDS"' not in text
    names = [c["name"] for c in bootstrap["static_resources"]["clusters"]]
    assert "xds-grpc" not in names and "sds-grpc" not in names and "mizzen-telemetry" in names
    eps = [ep for c in bootstrap["static_resources"]["clusters"] if c["name"].startswith("outbound|")
           for loc in c["load_assignment"].get("endpoints", []) for ep in loc["lb_endpoints"]]
    assert eps and {e["endpoint"]["address"]["socket_address"]["address"] for e in eps} == {"10.244.0.9"}
    assert "admin" in bootstrap  # the tap filter's admin sink needs one


@pytest.mark.parametrize("variant", sorted(set(sc.VARIANTS) | set(sc.default_variants()) - {"bare"}))
def test_every_variant_is_a_valid_envoy_config(variant, bootstrap, tmp_path):
    a, _ = sc.variant_configs(variant, bootstrap, bootstrap, tls=True)
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(a))
    r = subprocess.run([find_envoy(), "--mode", "validate", "-c", str(path), "--concurrency", "1",
                        "--log-level", "warning"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    if variant == "stripped":
        hcms = sc._hcms(a)
        assert hcms and all("tracing" not in h and not h.get("access_log") for h in hcms)
        assert all([f["name"] for f in h["http_filters"]][-1:] == ["envoy.filters.http.router"] for h in hcms)


def test_the_table_gives_each_piece_against_its_base():
    r = {"requests": 10, "modes": {"plaintext": {"bare": (100.0, 100.0), "mesh": (150.0, 160.0),
                                                 "no-tracing": (120.0, 130.0),
                                                 "no-tracing+no-tap": (117.0, 126.0)}}}
    md = sc.markdown(r)
    assert "| no-tracing | 120 | 1.20× | +30 | 130 | 1.30× | +30 |" in md
    assert "| no-tracing+no-tap | 117 | 1.17× | +3 | 126 | 1.26× | +4 |" in md
