"""Faults as data: parsing, the record's round trip, and the seeded choice of targets (pure)."""
from __future__ import annotations

import pytest

from mizzen.chaos.spec import (Fault, NetworkParams, Selection, SpecError, chain_name, parse_duration,
                               parse_percent, parse_rate, parse_signal)
from mizzen.chaos.targets import choose, how_many, pick_pods, pick_processes


def test_durations_percentages_rates():
    assert parse_duration("100ms") == pytest.approx(0.1)
    assert parse_duration("20s") == 20.0 and parse_duration("1.5m") == 90.0 and parse_duration(3) == 3.0
    assert parse_percent("30%") == pytest.approx(0.3) and parse_percent(5) == pytest.approx(0.05)
    assert parse_rate("1mbit") == 1_000_000 and parse_rate("2mbps") == 16_000_000
    assert parse_signal("kill") == 9 and parse_signal("TERM") == 15
    for bad, fn in (("fast", parse_duration), ("-1", parse_duration), ("130%", parse_percent),
                    ("lots", parse_rate), ("1bit", parse_rate), ("HUP", parse_signal)):
        with pytest.raises(SpecError):
            fn(bad)


def test_network_params_are_checked_with_the_field_named():
    with pytest.raises(SpecError, match="at least one"):
        NetworkParams().validate()
    with pytest.raises(SpecError, match="jitter"):
        NetworkParams(latency=0.01, jitter=0.02).validate()
    with pytest.raises(SpecError, match="partition"):
        NetworkParams(loss=1.0).validate()
    NetworkParams(latency=0.1, jitter=0.02, loss=0.3, bandwidth=1_000_000).validate()
    assert NetworkParams(latency=0.1, jitter=0.02, loss=0.3).describe() == "latency 100ms ±20ms, loss 30%"


def test_fault_record_round_trips_and_chain_names_fit_iptables():
    f = Fault(id="net-1a2b", kind="network", params={"latency": 0.1}, selection=Selection(pods=("a",)).to_dict(),
              seed=7, created=1.0, duration=20.0, targets=[{"name": "a"}])
    assert Fault.from_dict(f.to_dict()) == f
    assert len(chain_name("part-ffff", "POUT")) <= 28
    assert f.describe() == "network latency 100ms" and f.where() == "a"


STATUS = {
    "pods": [
        {"name": "web-0", "workload": "web", "namespace": "default", "labels": {"app": "web"}, "sidecar": True,
         "netns": "mizzen-abc123-web-0", "ip": "10.244.0.2"},
        {"name": "web-1", "workload": "web", "namespace": "default", "labels": {"app": "web"}, "sidecar": True,
         "netns": "mizzen-abc123-web-1", "ip": "10.244.0.3"},
        {"name": "web-2", "workload": "web", "namespace": "default", "labels": {"app": "web"}, "sidecar": True,
         "netns": "mizzen-abc123-web-2", "ip": "10.244.0.4", "terminating": True},
        {"name": "plain-0", "workload": "plain", "namespace": "default", "labels": {"app": "plain"}, "sidecar": False,
         "netns": "mizzen-abc123-plain-0", "ip": "10.244.0.5"},
    ],
    "components": [
        {"name": "controlplane", "kind": "controlplane", "pid": 100, "replica": 0, "state": "running"},
        {"name": "controlplane-1", "kind": "controlplane", "pid": 101, "replica": 1, "state": "running"},
        {"name": "web-0/agent", "kind": "agent", "pod": "web-0", "pid": 200},
        {"name": "web-0/envoy", "kind": "envoy", "pod": "web-0", "pid": 201},
        {"name": "web-0/app", "kind": "app", "pod": "web-0", "pid": 202},
        {"name": "web-1/agent", "kind": "agent", "pod": "web-1", "pid": 210},
        {"name": "web-1/envoy", "kind": "envoy", "pod": "web-1", "pid": None},
        {"name": "web-1/app", "kind": "app", "pod": "web-1", "pid": 212},
        {"name": "plain-0/app", "kind": "app", "pod": "plain-0", "pid": 300},
    ],
}


def test_a_seed_replays_the_same_choice_and_terminating_pods_are_never_chosen():
    picks = {tuple(p["name"] for p in pick_pods(STATUS, Selection(workload="web", count=1), seed)) for seed in
             range(40)}
    assert picks == {("web-0",), ("web-1",)}  # web-2 is being stopped by a rollout
    assert pick_pods(STATUS, Selection(workload="web", count=1), 5) == pick_pods(STATUS, Selection(workload="web",
                                                                                                  count=1), 5)
    assert how_many(10, Selection(percent=0.25)) == 3 and how_many(10, Selection()) == 10
    assert choose([{"name": n} for n in "abcdef"], Selection(count=2), 1) == \
        choose([{"name": n} for n in "abcdef"], Selection(count=2), 1)


def test_selection_errors_name_what_is_missing():
    with pytest.raises(SpecError, match="no pod named nope"):
        pick_pods(STATUS, Selection(pods=("nope",)), 1)
    with pytest.raises(SpecError, match="workload 'db'"):
        pick_pods(STATUS, Selection(workload="db"), 1)
    with pytest.raises(SpecError, match="sidecar"):
        pick_pods(STATUS, Selection(pods=("plain-0",)), 1, need_sidecar=True)


def test_processes_of_a_kill():
    apps = pick_processes(STATUS, "app", Selection(workload="web"), 1)
    assert [(p["name"], p["group"]) for p in apps] == [("web-0/app", True), ("web-1/app", True)]
    envoys = pick_processes(STATUS, "envoy", Selection(workload="web"), 1)
    assert [p["name"] for p in envoys] == ["web-0/envoy"]  # web-1's Envoy is restarting (no pid)
    pod = pick_processes(STATUS, "pod", Selection(pods=("web-0",)), 1)
    assert sorted(p["kind"] for p in pod) == ["agent", "app"]
    cps = {pick_processes(STATUS, "controlplane", Selection(), s)[0]["name"] for s in range(20)}
    assert cps == {"controlplane", "controlplane-1"}  # one replica, at random
    assert pick_processes(STATUS, "controlplane", Selection(replica=1), 0)[0]["pid"] == 101
    assert not any(p["kind"] == "controlplane" for p in pick_processes(STATUS, "agent", Selection(), 0))


def test_a_kill_is_drawn_among_pods_where_that_process_runs():
    """A rollout's new replica whose app has not started yet (or a restarting Envoy) is never drawn: the soak
    on a loaded machine drew such a pod for both of its app kills and skipped them."""
    for seed in range(20):
        envoys = pick_processes(STATUS, "envoy", Selection(workload="web", count=1), seed)
        assert [p["name"] for p in envoys] == ["web-0/envoy"]  # web-1's Envoy has no pid


def test_a_control_plane_kill_while_the_replica_restarts_is_skipped_not_an_error():
    """The 30-minute soak kills replica 1 only; when the runner is still restarting it from the previous kill the
    step has nothing to hit (NothingToKill: skipped), which is not a broken scenario (SpecError: it failed)."""
    from mizzen.chaos.actions import NothingToKill

    restarting = {**STATUS, "components": [dict(c, pid=None, state="restarting") if c["name"] == "controlplane-1"
                                           else c for c in STATUS["components"]]}
    with pytest.raises(NothingToKill):
        pick_processes(restarting, "controlplane", Selection(replica=1), 0)
    with pytest.raises(SpecError, match="no control-plane replica 7"):
        pick_processes(STATUS, "controlplane", Selection(replica=7), 0)
