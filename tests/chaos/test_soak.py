"""The chaos soak, bounded (~2.5 minutes of load): 200 rps from `sleep` to `web` (3 replicas) while an app, an
Envoy, an agent or one of the two control-plane replicas is SIGKILLed every ~5 s (seeded), with one rollout
restart of `web` in the middle.

What it must show: the only failed requests are requests in flight at a killed process — counted by cause
(explain.py matches each failure, through the load sidecar's access log, to the kill that caused it) — and
every other failure is listed as unexplained and fails the test; every proxy is SYNCED afterwards; and nothing
is leaked: no fault left active, no chaos process, and at `mizzen down` no namespace, Envoy or control plane
(running_mesh checks those)."""
from __future__ import annotations

import os

import pytest

from mizzen.chaos.explain import APP_KILL, ENVOY_KILL
from mizzen.chaos.records import FaultStore
from mizzen.chaos.run import ScenarioRun
from mizzen.chaos.soak import Sampler, soak_mesh, soak_scenario
from mizzen.chaos.verdict import render
from tests.e2e.mesh import ROOT, Mesh, can_run_netns, running_mesh

from .helpers import chaos_processes

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.skipif(can_run_netns() is not None, reason=str(can_run_netns()))]

SECONDS = float(os.environ.get("MIZZEN_SOAK_SECONDS", "150"))
RPS = 200
PODS = 4  # web-v1 x3, sleep-0


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Mesh:
    with running_mesh(tmp_path_factory.mktemp("soak"), text=soak_mesh(str(ROOT / "examples" / "bookinfo")),
                      extra=("--control-planes", "2"), expect=PODS) as m:
        yield m
        assert not FaultStore(str(m.state_dir)).active()
        assert not chaos_processes(str(m.state_dir)), chaos_processes(str(m.state_dir))


def test_chaos_soak(mesh: Mesh) -> None:
    scenario = soak_scenario(seconds=SECONDS, rps=RPS, kill_every=5.0, seed=2024)
    sampler = Sampler(str(mesh.state_dir), "sleep-0", every=30.0)
    sampler.start()
    try:
        res = ScenarioRun(scenario, str(mesh.state_dir)).run()
    finally:
        samples = sampler.stop()
    text = render(res)
    print(text)
    print("samples:", samples)
    assert res["error"] is None, text
    load = res["load"]
    assert load["total"] >= 0.75 * RPS * SECONDS, text  # the load really ran at ~200 rps
    kills = [t for f in res["faults"] if f["kind"] == "kill" for t in f["targets"]]
    kinds = {t["kind"] for t in kills}
    assert {"app", "envoy", "agent", "controlplane"} <= kinds, kinds
    assert any(e["kind"] == "rollout" and e["text"] == "done" for e in res["timeline"]), text
    # every failure is a request in flight at a killed app or Envoy; none is unexplained
    ex = res["explained"]
    assert ex["unexplained"] == [], text
    assert set(ex["categories"]) <= {APP_KILL, ENVOY_KILL}, ex["categories"]
    assert ex["explained"] == load["failed"], text
    # ... a handful each, never a burst: at most ~20 per kill of a pod's process at this rate
    pod_kills = sum(1 for t in kills if t["kind"] != "controlplane")
    assert load["failed"] <= 20 * max(1, pod_kills), text
    # every proxy SYNCED again once the last fault was over
    synced = next(c for c in res["checks"] if c["name"] == "syncedWithin")
    assert synced["ok"], text
    mesh.wait_synced(expect=PODS, timeout=120)
