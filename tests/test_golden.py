"""Golden translation tests: tests/golden/<case>/{in.yaml, registry.yaml, proxy.yaml[, jwks.yaml, mesh.yaml]} →
out/*.yaml.

Each case is also folded into a static bootstrap and checked by the real Envoy (`--mode validate`),
so a golden file can never bless config Envoy would reject. Regenerate with `pytest --update-golden`
and review the diff.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format

from mizzen.api import load_text
from mizzen.model import Instance, Proxy, Snapshot
from mizzen.model.authz import Jwks
from mizzen.model.snapshot import MeshSettings
from mizzen.model.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from mizzen.translate import Renderer
from mizzen.translate.static import static_bootstrap
from tests.envoy_bin import envoy_binary

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "in.yaml").exists())
OUT = {CLUSTER: "clusters", ENDPOINT: "endpoints", LISTENER: "listeners", ROUTE: "routes"}
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_case(case: str):
    d = GOLDEN / case
    text = (d / "in.yaml").read_text().replace("${EXAMPLES}", str(EXAMPLES))
    # `#include path` lines pull in the project's example files (Bookinfo's services and routing) unchanged
    docs = []
    for line in text.splitlines():
        if line.startswith("#include "):
            docs.append(Path(line.split(" ", 1)[1].strip()).read_text())
    docs.append(text)
    resources = []
    for i, t in enumerate(docs):
        resources += load_text(t, file=f"{case}/in.yaml#{i}").resources
    resources = [r.with_revision(i + 1) for i, r in enumerate(resources)]
    instances = [Instance.from_dict(x) for x in yaml.safe_load((d / "registry.yaml").read_text()) or []] \
        if (d / "registry.yaml").exists() else []
    proxy_d = yaml.safe_load((d / "proxy.yaml").read_text())
    proxy = Proxy.from_node(proxy_d["id"], Proxy(id=proxy_d["id"], **_proxy_kwargs(proxy_d)).node_metadata())
    # jwks.yaml: what the control plane fetched, {jwksUri: {keys: JSON text, error: text}}
    jwks = {uri: Jwks(**v) for uri, v in (yaml.safe_load((d / "jwks.yaml").read_text()) or {}).items()} \
        if (d / "jwks.yaml").exists() else {}
    # mesh.yaml: the control plane's mesh-wide settings (MeshSettings fields)
    mesh = MeshSettings(**yaml.safe_load((d / "mesh.yaml").read_text())) if (d / "mesh.yaml").exists() else None
    return Snapshot.build(resources, instances, jwks=jwks, mesh=mesh), proxy


def _proxy_kwargs(d: dict) -> dict:
    kw = {k: v for k, v in d.items() if k != "id"}
    if "labels" in kw:
        kw["labels"] = tuple(sorted(kw["labels"].items()))
    if "ports" in kw:
        kw["ports"] = tuple(kw["ports"])
    if "port_map" in kw:
        kw["port_map"] = tuple(sorted(kw["port_map"].items()))
    if "bootstrap_clusters" in kw:
        kw["bootstrap_clusters"] = tuple(sorted(kw["bootstrap_clusters"]))
    if "host_ports" in kw:
        kw["host_ports"] = tuple(sorted(kw["host_ports"].items()))
    return kw


# protobuf map fields: their JSON key order follows Python's hash seed, so they are sorted (fields keep their
# declaration order)
MAP_FIELDS = {"policies", "providers", "typed_per_filter_config", "requirement_map", "filter_metadata",
              "typed_filter_metadata"}


def _sort_maps(v, key: str = ""):
    if isinstance(v, dict):
        items = sorted(v.items()) if key in MAP_FIELDS else v.items()
        return {k: _sort_maps(x, k) for k, x in items}
    if isinstance(v, list):
        return [_sort_maps(x, key) for x in v]
    return v


def bootstrap_clusters(proxy: Proxy) -> list[dict]:
    """The static clusters the proxy's bootstrap would have (as the agent builds them), for Envoy's check."""
    from mizzen.agent.bootstrap import telemetry_clusters
    from mizzen.agent.config import AgentConfig

    cfg = AgentConfig(pod="validate", work_dir="/tmp/validate", telemetry="mizzen-telemetry" in proxy.bootstrap_clusters,
                      traces_address="unix:/tmp/validate/traces.sock" if "mizzen-traces" in proxy.bootstrap_clusters
                      else None)
    return telemetry_clusters(cfg)


def as_yaml(resources: dict) -> str:
    items = [_sort_maps(json.loads(json_format.MessageToJson(r.message, preserving_proto_field_name=True)))
             for _, r in sorted(resources.items())]
    return yaml.safe_dump(items, sort_keys=False, width=120)


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, update_golden: bool, tmp_path: Path) -> None:
    snap, proxy = load_case(case)
    res = Renderer(snap).resources_for(proxy)
    out = GOLDEN / case / "out"
    for t, fname in OUT.items():
        text = as_yaml(res[t])
        path = out / f"{fname}.yaml"
        if update_golden:
            out.mkdir(exist_ok=True)
            path.write_text(text)
        assert path.exists(), f"missing golden {path}; run pytest --update-golden"
        assert text == path.read_text(), f"{case}: {fname} differ from golden (pytest --update-golden, review diff)"
    boot = tmp_path / "bootstrap.json"
    static = static_bootstrap(res)
    static["staticResources"].setdefault("clusters", []).extend(bootstrap_clusters(proxy))
    boot.write_text(json.dumps(static))
    p = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(boot), "--log-level", "error"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"Envoy rejects the generated config for {case}:\n{p.stdout}\n{p.stderr}"
