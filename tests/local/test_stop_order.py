"""The orderly stop of replicas, step by step, against the `Operations` collaborators' protocols
(local/protocols.py): withdraw → every proxy ACKed an EDS without the pod → nothing in flight → app →
sidecar → pod removed. The collaborators here are recording ones, in-process (the only test doubles of the
suite: the same order is checked end to end with real processes in tests/e2e/test_drain.py and
test_lifecycle.py); each failure case is handled as the runner always did: the stop goes on, bounded."""
from __future__ import annotations

import time
from typing import Any, Sequence

import pytest

from mizzen.client import Unavailable
from mizzen.local.netns import NetnsError
from mizzen.local.operations import Operations
from mizzen.local.options import Options
from mizzen.local.pods import Pod
from mizzen.local.protocols import ControlPlaneApi, Launcher, PodNetwork
from mizzen.local.table import MeshInfo, PodTable

CALLER = "sidecar~10.244.0.9~caller-0.default~default.svc.cluster.local"


def pod(name: str, ip: str, ports: Sequence[int] = (80,), sidecar: bool = True) -> Pod:
    p = Pod(name=name, workload=name.rsplit("-", 1)[0], namespace="default", labels={"app": "web"},
            ports=list(ports), sidecar=sidecar, service_account="default", locality="", command=["app"], env={},
            cwd="/", index=0)
    p.ip, p.dir, p.port_map = ip, f"/state/pods/{name}", {x: x for x in ports}
    return p


def cla(endpoints: set[tuple[str, int]]) -> dict[str, Any]:
    """What `/api/v1/proxies/{id}/resources?type=EDS` answers: ClusterLoadAssignments as JSON."""
    lbs = [{"endpoint": {"address": {"socketAddress": {"address": a, "portValue": p}}}} for a, p in sorted(endpoints)]
    return {"id": CALLER, "type": "EDS", "resources": [
        {"name": "outbound|80||web.default.svc.cluster.local", "version": "1",
         "resource": {"clusterName": "outbound|80||web.default.svc.cluster.local",
                      "endpoints": [{"locality": {"zone": "z"}, "lbEndpoints": lbs}]}}]}


class Events(list):
    def index_of(self, name: str, last: bool = False) -> int:
        found = [i for i, e in enumerate(self) if e[0] == name]
        assert found, f"no {name!r} in {self}"
        return found[-1] if last else found[0]


class Api:
    """The control plane as the stop sees it: one connected caller proxy whose EDS drops an endpoint two
    polls after its instance was withdrawn (first sent, then ACKed)."""

    def __init__(self, events: Events, endpoints: set[tuple[str, int]], *, drops: bool = True,
                 reachable: bool = True):
        self.events, self.endpoints, self.drops, self.reachable = events, set(endpoints), drops, reachable
        self.withdrawn: set[tuple[str, int]] = set()
        self.polls_since_withdraw = 0
        self.state = "SYNCED"

    def withdraw(self, eps: set[tuple[str, int]]) -> None:
        self.withdrawn |= eps
        self.polls_since_withdraw = 0

    def proxies(self) -> list[dict[str, Any]]:
        if not self.reachable:
            self.events.append(("proxies", "unreachable"))
            raise Unavailable("no mesh", ["unix:/state/api.sock"])
        if self.withdrawn and self.drops:
            self.polls_since_withdraw += 1
            if self.polls_since_withdraw == 2:
                self.endpoints -= self.withdrawn
                self.state = "SENT"  # sent, not ACKed yet
            elif self.polls_since_withdraw >= 3:
                self.state = "SYNCED"
        synced_without = self.state == "SYNCED" and not (self.endpoints & self.withdrawn)
        self.events.append(("proxies", "synced-without" if self.withdrawn and synced_without else self.state))
        return [{"id": CALLER, "connected": True, "types": {"EDS": {"state": self.state}}}]

    def proxy_resources(self, proxy_id: str, type_: str) -> Any:
        assert (proxy_id, type_) == (CALLER, "EDS")
        return cla(self.endpoints)

    def delete_instance(self, id: str) -> dict[str, Any]:
        self.events.append(("deregister", id))
        return {"ok": True}

    def services(self) -> list[dict[str, Any]]:
        self.events.append(("services",))
        return []

    def instances(self) -> list[dict[str, Any]]:
        return []

    def egress(self, workloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [dict(w, mode="ALLOW_ANY") for w in workloads]

    def put_instance(self, instance: Any) -> dict[str, Any]:
        raise AssertionError("a stop registers nothing")

    def get_resource(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        self.events.append(("get", kind, name))
        return {"apiVersion": "mizzen.dev/v1", "kind": kind, "metadata": {"name": name, "namespace": namespace,
                "resourceVersion": "7"}, "spec": {"replicas": 3, "command": ["app"]}}

    def list_resources(self, kind: str | None = None, namespace: str | None = None) -> list[dict[str, Any]]:
        return []

    def apply(self, files: list[tuple[str, str]], namespace: str | None = None) -> dict[str, Any]:
        self.events.append(("apply", files[0][1]))
        return {}


class Proc:
    """The pods' processes: an agent that withdraws (telling the API), requests in flight that end."""

    def __init__(self, events: Events, api: Api, *, agent_answers: bool = True, in_flight: int = 2):
        self.events, self.api, self.agent_answers = events, api, agent_answers
        self.in_flight_left = {}
        self.start_in_flight = in_flight

    def make_pod(self, pod: Pod) -> None:
        self.events.append(("make", pod.name))

    def launch(self, pod: Pod) -> None:
        self.events.append(("launch", pod.name))

    def withdraw(self, pod: Pod) -> bool:
        self.events.append(("withdraw", pod.name))
        if self.agent_answers:
            self.api.withdraw(pod.endpoints())
        return self.agent_answers

    def in_flight(self, pod: Pod) -> int:
        n = self.in_flight_left.setdefault(pod.name, self.start_in_flight)
        self.events.append(("in_flight", pod.name, n))
        if n == -1:  # requests that never end
            return 1
        if n > 0:
            self.in_flight_left[pod.name] = n - 1
        return n

    def stop_apps(self, pods: Sequence[Pod], grace: float) -> None:
        self.events.append(("stop_apps", tuple(p.name for p in pods), grace))

    def stop_sidecars(self, pods: Sequence[Pod], grace: float) -> None:
        self.events.append(("stop_sidecars", tuple(p.name for p in pods), grace))

    def forget(self, pod: Pod) -> None:
        self.events.append(("forget", pod.name))

    def hot_restart(self, pod: Pod, envoy: str | None) -> dict[str, Any]:
        raise AssertionError("not in a stop")


class Net:
    routes_vips = True

    def __init__(self, events: Events, *, fail_remove: bool = False):
        self.events, self.fail_remove = events, fail_remove

    def add_pod(self, pod: Pod, vip_chain: Sequence[str]) -> None:
        self.events.append(("add_pod", pod.name))

    def remove_pod(self, pod: Pod) -> None:
        self.events.append(("remove_pod", pod.name))
        if self.fail_remove:
            raise NetnsError("`ip netns del` failed (1): busy")

    def set_services(self, services: Any) -> bool:
        return False

    def set_vip_rules(self, pod: str, chain: Sequence[str]) -> bool:
        self.events.append(("vip_rules", pod))
        return True


def setup(pods: Sequence[Pod], *, options: Options | None = None, **kw: Any):
    events = Events()
    endpoints = set().union(*(p.endpoints() for p in pods)) | {("10.244.0.7", 80)}  # a sibling stays
    api = Api(events, endpoints, drops=kw.pop("drops", True), reachable=kw.pop("reachable", True))
    proc = Proc(events, api, agent_answers=kw.pop("agent_answers", True), in_flight=kw.pop("in_flight", 2))
    net = Net(events, fail_remove=kw.pop("fail_remove", False))
    table = PodTable(MeshInfo("abc123", "/state", "/m/mesh.yaml", "netns"))
    for p in pods:
        table.add(p)
    launcher: Launcher = proc
    cp_api: ControlPlaneApi = api
    network: PodNetwork = net
    ops = Operations(table, launcher, cp_api, network,
                     options or Options(withdraw_timeout=5.0, drain_seconds=0.0, app_stop_seconds=7.0))
    return ops, table, events, api


def test_stop_order_withdraw_eds_ack_in_flight_app_sidecar():
    web = pod("web-0", "10.244.0.2")
    ops, table, events, api = setup([web])
    progress: list[str] = []
    ops.stop_pods([web], progress.append)
    withdraw = events.index_of("withdraw")
    acked = events.index(("proxies", "synced-without"))
    assert withdraw < acked
    assert ("proxies", "SENT") in events[withdraw:acked]  # sent but not ACKed: the stop kept waiting
    first_in_flight, last_in_flight = events.index_of("in_flight"), events.index_of("in_flight", last=True)
    assert acked < first_in_flight and events[last_in_flight] == ("in_flight", "web-0", 0)
    assert last_in_flight < events.index_of("stop_apps") < events.index_of("stop_sidecars") \
        < events.index_of("remove_pod") < events.index_of("forget")
    assert events[events.index_of("stop_apps")] == ("stop_apps", ("web-0",), 7.0)
    assert events[events.index_of("stop_sidecars")] == ("stop_sidecars", ("web-0",), 15.0)
    assert "deregister" not in [e[0] for e in events]  # the agent withdrew: the runner does not
    assert web.stopping and web not in table.pods
    assert progress == ["web-0: withdrawn; callers' proxies dropped the endpoint", "web-0: app stopped",
                        "web-0: sidecar drained and stopped"]
    assert api.endpoints == {("10.244.0.7", 80)}


def test_an_agent_that_cannot_be_asked_is_deregistered_by_the_runner_and_the_stop_goes_on():
    web = pod("web-0", "10.244.0.2")
    ops, table, events, api = setup([web], agent_answers=False)
    ops.stop_pods([web], withdraw_timeout=0.5)
    assert events[events.index_of("withdraw") + 1] == ("deregister", "default.web-0")
    assert events.index_of("deregister") < events.index_of("proxies") < events.index_of("stop_apps") \
        < events.index_of("stop_sidecars")
    assert web not in table.pods


def test_proxies_that_never_drop_the_endpoint_delay_the_stop_only_until_the_withdraw_timeout():
    web = pod("web-0", "10.244.0.2")
    ops, table, events, api = setup([web], drops=False)
    progress: list[str] = []
    t0 = time.monotonic()
    ops.stop_pods([web], progress.append, withdraw_timeout=0.6)
    assert 0.6 <= time.monotonic() - t0 < 5
    assert "web-0: withdrawn; callers' proxies may still have the endpoint" in progress
    assert events.index_of("proxies", last=True) < events.index_of("stop_apps") < events.index_of("stop_sidecars")


def test_an_unreachable_control_plane_delays_the_stop_only_until_the_withdraw_timeout():
    web = pod("web-0", "10.244.0.2")
    ops, table, events, api = setup([web], reachable=False)
    ops.stop_pods([web], withdraw_timeout=0.5)
    assert ("proxies", "unreachable") in events
    assert events.index_of("stop_apps") < events.index_of("stop_sidecars") < events.index_of("remove_pod")


def test_requests_that_never_end_delay_the_stop_only_until_the_drain_time():
    web = pod("web-0", "10.244.0.2")
    ops, table, events, api = setup([web], in_flight=-1)  # always one request in flight
    t0 = time.monotonic()
    ops.stop_pods([web])
    assert 1.0 <= time.monotonic() - t0 < 6  # max(1 s, drainSeconds)
    assert events.index_of("in_flight", last=True) < events.index_of("stop_apps")


def test_a_second_signal_skips_the_in_flight_wait_and_shortens_the_graces():
    web = pod("web-0", "10.244.0.2")
    ops, table, events, api = setup([web], in_flight=-1)
    table.run.force = True
    t0 = time.monotonic()
    ops.stop_pods([web])
    assert time.monotonic() - t0 < 1.0
    assert events[events.index_of("stop_apps")][2] == 1.0 and events[events.index_of("stop_sidecars")][2] == 1.0


def test_a_namespace_that_cannot_be_removed_is_logged_and_the_pod_still_forgotten(caplog):
    web = pod("web-0", "10.244.0.2")
    ops, table, events, api = setup([web], fail_remove=True)
    ops.stop_pods([web])
    assert events.index_of("remove_pod") < events.index_of("forget")
    assert web not in table.pods
    assert "busy" in caplog.text


def test_a_pod_without_ports_is_not_withdrawn_and_nothing_waits_for_proxies():
    client = pod("sleep-0", "10.244.0.3", ports=())
    ops, table, events, api = setup([client])
    ops.stop_pods([client])
    names = [e[0] for e in events]
    assert "withdraw" not in names and "deregister" not in names and "proxies" not in names
    assert names.index("stop_apps") < names.index("stop_sidecars") < names.index("remove_pod")


def test_scale_down_stops_the_newest_replicas_in_order_and_records_the_count():
    pods = [pod(f"web-{i}", f"10.244.0.{i + 2}") for i in range(3)]
    ops, table, events, api = setup(pods)
    names = ops.scale("web", "default", 1, lambda m: None)
    assert names == ["web-0"]
    stopped = [e[1] for e in events if e[0] == "stop_apps"]
    assert stopped == [("web-2", "web-1")]
    assert [e[1] for e in events if e[0] == "withdraw"] == ["web-2", "web-1"]
    applied = next(e[1] for e in events if e[0] == "apply")
    assert "replicas: 1" in applied and "resourceVersion" not in applied
    assert events.index_of("stop_sidecars") < events.index_of("apply")


@pytest.mark.parametrize("answer, expected", [
    ({"resources": []}, set()),
    (cla({("10.244.0.2", 80), ("127.0.0.1", 23456)}), {("10.244.0.2", 80), ("127.0.0.1", 23456)}),
    ({"resources": [{"name": "c", "resource": {"cluster_name": "c", "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 9}}}}]}]}}]},
     {("10.0.0.1", 9)}),
    ({"resources": [{"name": "c", "reportedByProxy": True}]}, set()),
])
def test_eds_endpoints_reads_the_cluster_load_assignments(answer, expected):
    from mizzen.local.meshview import eds_endpoints

    assert eds_endpoints(answer) == expected
