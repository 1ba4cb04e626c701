"""Acceptance: Istio's own Bookinfo samples, applied unchanged, route as Istio's docs describe.

One real mesh for the module: control plane, agents, real Envoy sidecars, the Python Bookinfo apps, each
replica in its own network namespace with iptables capture. Requests are made from inside the `sleep`
pod (or another pod) by a load client, so they go through that pod's sidecar; assertions are on the
`x-served-by` header each app sets (e.g. `reviews-v2`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from .mesh import SAMPLES, Mesh, can_run_netns, share, running_mesh

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(can_run_netns() is not None, reason=str(can_run_netns()))]

REVIEWS = "http://reviews:9080/reviews/0"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Mesh:
    with running_mesh(tmp_path_factory.mktemp("bookinfo")) as m:
        yield m


@pytest.fixture(autouse=True)
def clean_routing(mesh: Mesh):
    mesh.reset_routing()
    yield


def test_default_round_robin_reaches_every_version(mesh: Mesh) -> None:
    r = mesh.load("sleep", REVIEWS, count=300)
    assert r["status"] == {"200": 300}, r
    for v in ("reviews-v1", "reviews-v2", "reviews-v3"):
        assert r["served_by"].get(v, 0) > 30, r
    page = mesh.exec("sleep", "curl", "-s", "http://productpage:9080/productpage")
    assert page.returncode == 0 and "productpage" in page.stdout, page


def test_all_v1(mesh: Mesh) -> None:
    mesh.apply(SAMPLES / "destination-rule-all.yaml", SAMPLES / "virtual-service-all-v1.yaml")
    mesh.wait_synced()
    r = mesh.load("sleep", REVIEWS, count=200)
    assert r["status"] == {"200": 200} and r["served_by"] == {"reviews-v1": 200}, r
    # and productpage's own sidecar applies it too: the page always shows reviews v1
    body = mesh.exec("sleep", "curl", "-s", "http://productpage:9080/api/v1/products/0/reviews")
    assert body.returncode == 0, body


def test_jason_gets_v2_others_v3(mesh: Mesh) -> None:
    mesh.apply(SAMPLES / "destination-rule-all.yaml", SAMPLES / "virtual-service-reviews-jason-v2-v3.yaml")
    mesh.wait_synced()
    jason = mesh.load("sleep", REVIEWS, count=100, headers={"end-user": "jason"})
    other = mesh.load("sleep", REVIEWS, count=100, headers={"end-user": "alice"})
    anon = mesh.load("sleep", REVIEWS, count=100)
    assert jason["served_by"] == {"reviews-v2": 100}, jason
    assert other["served_by"] == {"reviews-v3": 100}, other
    assert anon["served_by"] == {"reviews-v3": 100}, anon


@pytest.mark.parametrize("sample,expect", [
    ("virtual-service-reviews-90-10.yaml", {"reviews-v1": 90, "reviews-v2": 10}),
    ("virtual-service-reviews-80-20.yaml", {"reviews-v1": 80, "reviews-v2": 20}),
    ("virtual-service-reviews-50-v3.yaml", {"reviews-v1": 50, "reviews-v3": 50}),
])
def test_weighted_split(mesh: Mesh, sample: str, expect: dict[str, int]) -> None:
    mesh.apply(SAMPLES / "destination-rule-all.yaml", SAMPLES / sample)
    mesh.wait_synced()
    r = mesh.load("sleep", REVIEWS, count=1000, concurrency=8)
    assert r["status"] == {"200": 1000}, r
    for version, pct in expect.items():
        got = share(r["served_by"], version)
        assert abs(got - pct) <= 5, f"{version}: {got:.1f}% (want {pct}±5) {r}"
    assert sum(r["served_by"].get(v, 0) for v in expect) == 1000, r


def test_source_labels(mesh: Mesh) -> None:
    mesh.apply(SAMPLES / "destination-rule-all.yaml")
    mesh.apply_text("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - sourceLabels: {app: productpage}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v3}
""")
    mesh.wait_synced()
    from_pp = mesh.load("productpage-v1", REVIEWS, count=50)
    from_sleep = mesh.load("sleep", REVIEWS, count=50)
    assert from_pp["served_by"] == {"reviews-v2": 50}, from_pp
    assert from_sleep["served_by"] == {"reviews-v3": 50}, from_sleep


def test_sidecar_limits_clusters(mesh: Mesh) -> None:
    def outbound_hosts() -> set[str]:
        out = mesh.cli("proxy-config", "clusters", "sleep", "-o", "json").stdout
        names = set()
        for line in json.dumps(json.loads(out)).split('"'):
            if line.startswith("outbound|"):
                names.add(line.split("|")[3])
        return names

    assert {"reviews.default.svc.cluster.local", "ratings.default.svc.cluster.local"} <= outbound_hosts()
    mesh.apply_text("""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sleep-egress}
spec:
  workloadSelector: {labels: {app: sleep}}
  egress:
  - hosts: ["./reviews.default.svc.cluster.local"]
""")
    mesh.wait_synced()
    deadline = time.monotonic() + 30
    while outbound_hosts() != {"reviews.default.svc.cluster.local"} and time.monotonic() < deadline:
        time.sleep(0.5)
    assert outbound_hosts() == {"reviews.default.svc.cluster.local"}
    assert mesh.load("sleep", REVIEWS, count=20)["status"] == {"200": 20}


def test_route_changes_under_load_have_no_errors(mesh: Mesh) -> None:
    mesh.apply(SAMPLES / "destination-rule-all.yaml")
    bg = mesh.load_background("sleep", REVIEWS, rps=100, seconds=25)
    try:
        time.sleep(2)
        for sample in ("virtual-service-reviews-90-10.yaml", "virtual-service-reviews-50-v3.yaml",
                       "virtual-service-all-v1.yaml", "virtual-service-reviews-jason-v2-v3.yaml",
                       "virtual-service-reviews-v3.yaml", "virtual-service-reviews-80-20.yaml"):
            mesh.apply(SAMPLES / sample)
            time.sleep(1.5)
        mesh.cli("delete", "destinationrule", "ratings")  # a DR change too
        mesh.apply(SAMPLES / "destination-rule-reviews.yaml")
        mesh.apply(SAMPLES / "virtual-service-reviews-v2-v3.yaml")
        time.sleep(2)
    finally:
        out, err = bg.communicate(timeout=120)
    r = json.loads(out.strip().splitlines()[-1])
    assert r["total"] > 1500, r
    assert r["errors"] == {} and set(r["status"]) == {"200"}, r


def test_bad_input_is_rejected_and_changes_nothing(mesh: Mesh, tmp_path: Path) -> None:
    mesh.apply(SAMPLES / "destination-rule-all.yaml")
    before = mesh.get_json("dr", "-A")
    cases = {
        "unknown-field.yaml": ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\n"
                               "spec:\n  hosts: [reviews]\n  htpp: []\n", "spec.htpp"),
        "weights.yaml": ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\n"
                         "spec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n"
                         "      weight: 0\n    - destination: {host: reviews, subset: v2}\n      weight: 0\n",
                         "total destination weight = 0"),
        "regex.yaml": ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\n"
                       "spec:\n  hosts: [reviews]\n  http:\n  - match:\n    - uri: {regex: '/api/(unclosed'}\n"
                       "    route:\n    - destination: {host: reviews}\n", "spec.http[0].match[0].uri.regex"),
        "kind.yaml": ("apiVersion: networking.istio.io/v1\nkind: VirtualServce\nmetadata: {name: reviews}\nspec: {}\n",
                      "unknown kind"),
    }
    for name, (text, needle) in cases.items():
        f = tmp_path / name
        # each bad document rides along with a good one: nothing of the file may be applied
        f.write_text("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: extra}\n"
                     "spec: {host: details}\n---\n" + text)
        p = mesh.apply(f, check=False)
        assert p.returncode != 0, p
        assert str(f) in p.stderr and needle in p.stderr, p.stderr
        assert "reviews" in p.stderr or "VirtualServce" in p.stderr, p.stderr
    assert mesh.get_json("dr", "-A") == before
    assert mesh.get_json("vs", "-A").get("items", []) == []


def test_access_logs_switched_per_workload_at_runtime(mesh: Mesh) -> None:
    def envoy_pids() -> dict[str, int]:
        return {c["name"]: c["pid"] for c in mesh.status()["components"] if c["kind"] == "envoy"}

    before = envoy_pids()
    mesh.apply(SAMPLES / "destination-rule-all.yaml", SAMPLES / "virtual-service-reviews-v3.yaml")
    assert mesh.cli("logs", "enable", "reviews-v3").returncode == 0
    mesh.wait_synced()
    r = mesh.load("sleep", "http://reviews:9080/reviews/4242", count=5)
    assert r["status"] == {"200": 5}, r
    deadline = time.monotonic() + 15
    while True:  # Envoy flushes access logs on a short timer: the 5 lines may come in several writes
        out = mesh.cli("logs", "reviews-v3").stdout
        lines = [ln for ln in out.splitlines() if "/reviews/4242" in ln]
        if len(lines) >= 5 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert len(lines) == 5 and all(" 200 " in ln for ln in lines), out
    assert "/reviews/4242" not in mesh.cli("logs", "sleep").stdout  # only the workload asked for
    assert mesh.cli("logs", "disable", "reviews-v3").returncode == 0
    mesh.wait_synced()
    mesh.load("sleep", "http://reviews:9080/reviews/4343", count=5)
    time.sleep(2)
    assert "/reviews/4343" not in mesh.cli("logs", "reviews-v3").stdout
    assert envoy_pids() == before  # switched at runtime: no Envoy restarted
