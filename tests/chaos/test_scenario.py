"""ChaosScenario files: the shipped examples parse; bad ones are refused naming the file, scenario and field."""
from __future__ import annotations

from pathlib import Path

import pytest

from mizzen.chaos.scenario import ScenarioError, parse
from mizzen.chaos.soak import soak_scenario

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "chaos"


@pytest.mark.parametrize("name", ["envoy-crash-loop", "controlplane-partition", "rollout-during-controlplane-kill",
                                  "lossy-replica-outlier-detection"])
def test_examples_parse(name):
    path = EXAMPLES / f"{name}.yaml"
    s = parse(path.read_text(), str(path))
    assert s.name == name and s.steps and s.load.rate == 200
    assert s.steady.synced_within == 30.0
    for step in s.steps:
        assert 0 < step.at < s.load.duration


def test_the_lossy_example_sets_up_outlier_detection():
    s = parse((EXAMPLES / "lossy-replica-outlier-detection.yaml").read_text())
    kinds = [d["kind"] for d in s.setup]
    assert kinds == ["DestinationRule", "VirtualService"]
    assert "outlierDetection" in s.setup[0]["spec"]["trafficPolicy"]
    (step,) = s.steps
    assert step.action == "network" and step.args["params"].loss == pytest.approx(0.3)


GOOD = """
apiVersion: mizzen.dev/v1
kind: ChaosScenario
metadata: {name: t}
spec:
  load: {from: sleep, target: "http://web:9080/", rate: 100, duration: 30s}
  faults:
  - {at: 5s, kill: {target: app, workload: web, count: 1}}
  - {at: 1s, network: {pods: [web-0], latency: 100ms, jitter: 20ms, duration: 10s}}
  steadyState: {maxErrorRatio: 1%, p99: 250ms}
"""


def test_steps_are_ordered_by_time_and_values_parsed():
    s = parse(GOOD, "t.yaml")
    assert [st.action for st in s.steps] == ["network", "kill"]
    assert s.steps[0].args["params"].latency == pytest.approx(0.1)
    assert s.steady.max_error_ratio == pytest.approx(0.01) and s.steady.p99 == pytest.approx(0.25)
    assert s.load.concurrency == 32 and s.load.expect == (200,) and s.load.access_log


@pytest.mark.parametrize("change, message", [
    (("kill: {target: app", "kill: {target: nginx"), "spec.faults[0].kill.target: one of app, envoy"),
    (("at: 5s", "at: 50s"), "spec.faults[0].at: 50s is not within the load's 30s"),
    (("latency: 100ms, jitter: 20ms", "jitter: 20ms"), "spec.faults[1].network: jitter: needs a latency"),
    (("rate: 100", "rate: fast"), "spec.load.rate"),
    (("mizzen.dev/v1", "mizzen.dev/v2"), "field apiVersion: must be mizzen.dev/v1"),
    (("maxErrorRatio: 1%", "maxErrorRatio: lots"), "spec.steadyState.maxErrorRatio"),
    (("duration: 10s}}", "}}"), "spec.faults[1].network.duration: required"),
    (("count: 1}", "count: 1, speed: 2}"), "unknown field(s) speed"),
])
def test_bad_scenarios_name_file_scenario_and_field(change, message):
    with pytest.raises(ScenarioError) as e:
        parse(GOOD.replace(*change), "t.yaml")
    assert any(p.startswith("t.yaml: ChaosScenario t") and message in p for p in e.value.problems), e.value.problems


def test_a_file_without_a_scenario():
    with pytest.raises(ScenarioError, match="expected one document of kind ChaosScenario"):
        parse("apiVersion: v1\nkind: Service\nmetadata: {name: x}\n", "x.yaml")


def test_soak_schedule_is_seeded_and_mixes_every_kind():
    a = soak_scenario(seconds=300, rps=200, kill_every=5, seed=3)
    b = soak_scenario(seconds=300, rps=200, kill_every=5, seed=3)
    assert [(s.at, s.action, s.args.get("target")) for s in a.steps] == \
        [(s.at, s.action, s.args.get("target")) for s in b.steps]
    kinds = {s.args.get("target") for s in a.steps if s.action == "kill"}
    assert kinds == {"app", "envoy", "agent", "controlplane"}
    assert [s.action for s in a.steps].count("rollout") == 1
    assert all(s.at < 300 - 15 for s in a.steps if s.action == "kill")
