"""Gateway pods in the runner's plan: no command (a pause process holds the pod), host ports checked before
anything starts (a port published twice, or already bound on 127.0.0.1, is refused with the workload named)."""
from __future__ import annotations

import socket

import pytest

from mizzen.api import load_text
from mizzen.local.launcher import agent_config
from mizzen.local.options import Options
from mizzen.local.pods import PAUSE_COMMAND, RunnerError, check_host_ports, plan_pods
from mizzen.client import StateLayout


def gateway(name: str, host_port: int) -> str:
    return (f"---\napiVersion: mizzen.dev/v1\nkind: Workload\nmetadata: {{name: {name}, labels: {{gw: {name}}}}}\n"
            f"spec: {{gateway: true, hostPorts: [{{port: 8443, hostPort: {host_port}}}]}}\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_gateway_pod_runs_the_pause_process_and_its_agent_knows_it_is_a_gateway(tmp_path) -> None:
    port = free_port()
    pods = plan_pods(load_text(gateway("ingress", port)).resources, str(tmp_path))
    (pod,) = pods
    assert pod.gateway and pod.command == PAUSE_COMMAND and pod.host_ports == {8443: port} and pod.sidecar
    check_host_ports(pods)
    pod.dir = str(tmp_path / "pods" / pod.name)
    cfg = agent_config(pod, StateLayout(str(tmp_path)), Options(), "netns", "cluster.local")
    assert cfg.gateway and cfg.host_ports == ((8443, port),) and cfg.host_netns.endswith("/ns/net")
    assert cfg.envoy_uid is None  # root: it binds its host ports in the host's network namespace


def test_host_ports_published_twice_or_in_use_are_refused() -> None:
    port = free_port()
    pods = plan_pods(load_text(gateway("a", port) + gateway("b", port)).resources, "/tmp")
    with pytest.raises(RunnerError, match=f"host port {port} is published by both default/a and default/b"):
        check_host_ports(pods)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(RunnerError, match=f"gateway default/a: host port {busy} .* cannot be bound"):
            check_host_ports(plan_pods(load_text(gateway("a", busy)).resources, "/tmp"))
