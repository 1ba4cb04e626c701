"""Router resource end to end: one resource declares branches and version weights; callers carrying a branch
label reach their branch, everyone else the default branch split by version weight."""
from __future__ import annotations

import pytest

from .mesh import ROOT, Mesh, can_run_netns, share, running_mesh

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(can_run_netns() is not None, reason=str(can_run_netns()))]

EXAMPLE = ROOT / "examples" / "router"
URL = "http://web:9090/"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Mesh:
    with running_mesh(tmp_path_factory.mktemp("router"), EXAMPLE / "mesh.yaml", synced=False) as m:
        yield m


def test_router_branches_and_weights(mesh: Mesh) -> None:
    mesh.apply(EXAMPLE / "router.yaml")
    mesh.wait_synced()
    got = mesh.cli("get", "router", "web", "-n", "shop", "-o", "yaml").stdout
    assert "kind: VirtualService" in got and "kind: DestinationRule" in got  # the generated pair is shown
    main = mesh.load("caller", URL, count=1000, concurrency=8)
    assert main["status"] == {"200": 1000}, main
    assert abs(share(main["served_by"], "v1.0.1") - 90) <= 5 and abs(share(main["served_by"], "v1.0.2") - 10) <= 5, main
    assert "web-box-0999" not in main["served_by"], main
    box = mesh.load("caller-box", URL, count=100)
    assert box["served_by"] == {"web-box-0999": 100}, box


def test_hand_written_vs_for_router_host_is_rejected(mesh: Mesh) -> None:
    mesh.apply(EXAMPLE / "router.yaml")
    p = mesh.apply_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                        "metadata: {name: web-by-hand, namespace: shop}\n"
                        "spec:\n  hosts: [web]\n  http: [{route: [{destination: {host: web}}]}]\n", check=False)
    assert p.returncode != 0 and "managed by Router shop/web" in p.stderr, p.stderr
    assert mesh.get_json("vs", "-n", "shop").get("items", []) == []
