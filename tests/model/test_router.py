"""Router resource: generates the VirtualService + DestinationRule pair; conflicts are rejected at apply."""
from __future__ import annotations

from pathlib import Path

import pytest

from mizzen.api import InvalidConfig, load_text
from mizzen.model.router import conflicts, expand
from mizzen.registry.embedded import EmbeddedRegistry
from mizzen.server.core import ControlPlaneCore
from mizzen.store.sqlite import SqliteStore

ROUTER = """apiVersion: mizzen.dev/v1
kind: Router
metadata: {name: web, namespace: shop}
spec:
  port: 9090
  protocol: http
  subsets:
  - branch: master
    versions: {v1.0.1: 90, v1.0.2: 10}
  - branch: box-0999
"""
HAND_VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web-by-hand, namespace: shop}
spec:
  hosts: [web]
  http: [{route: [{destination: {host: web}}]}]
"""


def test_expand_generates_vs_and_dr() -> None:
    (r,) = load_text(ROUTER).resources
    vs, dr = expand(r)
    assert [s.name for s in dr.spec.subsets] == ["master-v1.0.1", "master-v1.0.2", "box-0999"]
    assert dr.spec.subsets[0].labels == {"branch": "master", "version": "v1.0.1"}
    first, default = vs.spec.http
    assert first.match[0].source_labels == {"branch": "box-0999"}
    assert first.route[0].destination.subset == "box-0999"
    assert [(d.destination.subset, d.weight) for d in default.route] == [("master-v1.0.1", 90), ("master-v1.0.2", 10)]


@pytest.mark.parametrize("bad,needle", [
    ("    versions: {v1.0.1: 90, v1.0.2: 20}", "sum to 110"),
    ("    versions: {'bad version': 100}", "invalid version"),
])
def test_router_validation(bad: str, needle: str) -> None:
    with pytest.raises(InvalidConfig) as e:
        load_text(ROUTER.replace("    versions: {v1.0.1: 90, v1.0.2: 10}", bad))
    assert needle in str(e.value) and "spec.subsets[0].versions" in str(e.value)


def test_default_branch_must_exist() -> None:
    with pytest.raises(InvalidConfig) as e:
        load_text(ROUTER + "  defaultBranch: main\n")
    assert "defaultBranch 'main'" in str(e.value)


def test_hand_written_vs_conflicts_at_apply_and_changes_nothing(tmp_path: Path) -> None:
    core = ControlPlaneCore(SqliteStore(tmp_path / "s.db"), EmbeddedRegistry(tmp_path / "r.db"), [conflicts])
    core.apply([("router.yaml", ROUTER)])
    rev = core.revision
    with pytest.raises(InvalidConfig) as e:
        core.apply([("hand.yaml", HAND_VS)])
    msg = str(e.value)
    assert "managed by Router shop/web" in msg and "VirtualService shop/web-by-hand" in msg
    assert core.revision == rev
    got = core.get("Router", "shop", "web")
    kinds = [g["kind"] for g in got["status"]["generated"]]
    assert kinds == ["VirtualService", "DestinationRule"]
    # the other way round: a Router over an existing hand-written VS is refused too
    core.delete("Router", "shop", "web")
    core.apply([("hand.yaml", HAND_VS)])
    with pytest.raises(InvalidConfig) as e2:
        core.apply([("router.yaml", ROUTER)])
    assert "Router shop/web" in str(e2.value)
