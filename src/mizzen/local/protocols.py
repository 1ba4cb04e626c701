"""What the runner's parts need from each other, as typing Protocols (no behaviour here).

`Operations` (operations.py) is built from a `PodTable` and three collaborators: a `Launcher` (the pods'
processes), a `ControlPlaneApi` (the control plane's REST API: `mizzen.client.ApiClient`) and a
`PodNetwork` (network.py). The runner passes the real ones; the stop-ordering unit tests pass recording
ones (tests/local/test_stop_order.py).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from ..model.types import Instance
from .pods import Pod

Progress = Callable[[str], None]


class ControlPlaneApi(Protocol):
    def services(self) -> list[dict[str, Any]]: ...
    def instances(self) -> list[dict[str, Any]]: ...
    def egress(self, workloads: list[dict[str, Any]]) -> list[dict[str, Any]]: ...
    def put_instance(self, instance: Instance) -> dict[str, Any]: ...
    def delete_instance(self, id: str) -> dict[str, Any]: ...
    def proxies(self) -> list[dict[str, Any]]: ...
    def proxy_resources(self, proxy_id: str, type_: str) -> Any: ...
    def get_resource(self, kind: str, namespace: str, name: str) -> dict[str, Any]: ...
    def list_resources(self, kind: str | None = None, namespace: str | None = None) -> list[dict[str, Any]]: ...
    def apply(self, files: list[tuple[str, str]], namespace: str | None = None) -> dict[str, Any]: ...


class PodNetwork(Protocol):
    routes_vips: bool  # whether pods get service-VIP rules (set_vip_rules does something)

    def add_pod(self, pod: Pod, vip_chain: Sequence[str]) -> None: ...
    def remove_pod(self, pod: Pod) -> None: ...
    def set_services(self, services: Iterable[Mapping[str, Any]]) -> bool: ...
    def set_vip_rules(self, pod: str, chain: Sequence[str]) -> bool: ...


class Launcher(Protocol):
    """The pods' processes: made, started, asked to withdraw, stopped."""

    def make_pod(self, pod: Pod) -> None:
        """The pod's dir and its agent's config (after the network placed it)."""

    def launch(self, pod: Pod) -> None:
        """Start its agent, and its app (at once, or once the sidecar is ready)."""

    def withdraw(self, pod: Pod) -> bool:
        """Ask the pod's agent to withdraw its instance (it keeps serving). False: it could not be asked or
        did not confirm (it was signalled to withdraw anyway); the caller deregisters the instance itself."""

    def in_flight(self, pod: Pod) -> int:
        """Requests its sidecar is serving, or connections open to a sidecar-less app (0: none or unknown)."""

    def stop_apps(self, pods: Sequence[Pod], grace: float) -> None:
        """SIGTERM the apps and wait; SIGKILL after `grace` seconds."""

    def stop_sidecars(self, pods: Sequence[Pod], grace: float) -> None:
        """SIGTERM the agents (they drain and stop Envoy) and wait; kill what is left after `grace`."""

    def forget(self, pod: Pod) -> None:
        """Remove what a stopped pod leaves besides its logs (dead sockets)."""

    def hot_restart(self, pod: Pod, envoy: str | None) -> dict[str, Any]:
        """Envoy epoch N+1 takes over in the pod (a new binary is kept in agent.json for later restarts)."""
