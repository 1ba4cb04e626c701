"""Where everything of one mesh lives in its state dir: the one place that names a file or socket there.

    store.db, registry.db            the control plane's SQLite files (shared by every replica)
    api.sock, xds.sock               control-plane replica 0 ("controlplane")
    api-<i>.sock, xds-<i>.sock       replica i ("controlplane-<i>"), i < MAX_CONTROL_PLANES
    controlplane[-<i>].pid           each replica's PID (written by the replica)
    runner.pid, runner.sock          the `mizzen up` runner's PID and control channel
    status.json                      the runner's view of every component
    logs/                            runner.log, controlplane[-<i>].log
    pods/<pod>/                      one replica: agent.json, agent.state, envoy.yaml, admin.sock (Envoy),
                                     agent.sock (agent control), base-id, envoy.log, access.log, agent.log, app.log
    chaos/                           `mizzen chaos`: <fault id>.json (one record per fault), lock; logs/chaos-<id>.log

Pure: building paths touches no file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

ENVOY_UID = 1337  # Envoy runs as this uid (Istio's convention): excluded from capture, owns the pod dirs
MAX_CONTROL_PLANES = 3
CONTROLPLANE = "controlplane"


def replica_name(replica: int) -> str:
    """controlplane, controlplane-1, controlplane-2 (as `mizzen status` and `/api/v1/proxies` name them)."""
    if not 0 <= replica < MAX_CONTROL_PLANES:
        raise ValueError(f"control-plane replica {replica} out of range 0..{MAX_CONTROL_PLANES - 1}")
    return CONTROLPLANE if replica == 0 else f"{CONTROLPLANE}-{replica}"


def _numbered(stem: str, replica: int, ext: str) -> str:
    replica_name(replica)  # range check
    return f"{stem}{ext}" if replica == 0 else f"{stem}-{replica}{ext}"


@dataclass(frozen=True)
class PodDir:
    """One pod's directory: `<state>/pods/<pod>/`."""

    path: str

    def _f(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def agent_json(self) -> str:
        return self._f("agent.json")

    @property
    def agent_state(self) -> str:
        return self._f("agent.state")

    @property
    def envoy_yaml(self) -> str:
        return self._f("envoy.yaml")

    @property
    def admin_socket(self) -> str:
        return self._f("admin.sock")

    @property
    def agent_socket(self) -> str:
        return self._f("agent.sock")

    @property
    def base_id(self) -> str:
        return self._f("base-id")

    @property
    def envoy_log(self) -> str:
        return self._f("envoy.log")

    @property
    def access_log(self) -> str:
        return self._f("access.log")

    @property
    def agent_log(self) -> str:
        return self._f("agent.log")

    @property
    def app_log(self) -> str:
        return self._f("app.log")

    @property
    def sockets(self) -> tuple[str, str]:
        """What a stopped pod leaves that must go (its dir stays for the logs)."""
        return self.admin_socket, self.agent_socket


@dataclass(frozen=True)
class StateLayout:
    """The files and sockets of the mesh in `root` (made absolute)."""

    root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", os.path.abspath(self.root))

    def _f(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    # ------------------------------------------------------------------ control plane
    @property
    def store_db(self) -> str:
        return self._f("store.db")

    @property
    def registry_db(self) -> str:
        return self._f("registry.db")

    def api_socket(self, replica: int = 0) -> str:
        return self._f(_numbered("api", replica, ".sock"))

    def xds_socket(self, replica: int = 0) -> str:
        return self._f(_numbered("xds", replica, ".sock"))

    def api_sockets(self, replicas: int = MAX_CONTROL_PLANES) -> list[str]:
        return [self.api_socket(i) for i in range(replicas)]

    def xds_sockets(self, replicas: int = MAX_CONTROL_PLANES) -> list[str]:
        return [self.xds_socket(i) for i in range(replicas)]

    def controlplane_pid(self, replica: int = 0) -> str:
        return self._f(f"{replica_name(replica)}.pid")

    def controlplane_log(self, replica: int = 0) -> str:
        return os.path.join(self.logs_dir, f"{replica_name(replica)}.log")

    # ------------------------------------------------------------------ runner
    @property
    def runner_pid(self) -> str:
        return self._f("runner.pid")

    @property
    def runner_socket(self) -> str:
        return self._f("runner.sock")

    @property
    def status_file(self) -> str:
        return self._f("status.json")

    @property
    def logs_dir(self) -> str:
        return self._f("logs")

    @property
    def runner_log(self) -> str:
        return os.path.join(self.logs_dir, "runner.log")

    # ------------------------------------------------------------------ pods
    @property
    def pods_dir(self) -> str:
        return self._f("pods")

    def pod(self, name: str) -> PodDir:
        return PodDir(os.path.join(self.pods_dir, name))

    def pod_names(self) -> list[str]:
        """The pod directories present (reads the directory)."""
        try:
            return sorted(n for n in os.listdir(self.pods_dir) if os.path.isdir(os.path.join(self.pods_dir, n)))
        except OSError:
            return []

    # ------------------------------------------------------------------ chaos (mizzen chaos)
    @property
    def chaos_dir(self) -> str:
        return self._f("chaos")

    def chaos_record(self, fault_id: str) -> str:
        return os.path.join(self.chaos_dir, f"{fault_id}.json")

    @property
    def chaos_lock(self) -> str:
        return os.path.join(self.chaos_dir, "lock")

    def chaos_log(self, fault_id: str) -> str:
        return os.path.join(self.logs_dir, f"chaos-{fault_id}.log")

    # ------------------------------------------------------------------ a fresh start
    def previous_run_files(self) -> list[str]:
        """What a new `mizzen up` removes first: the store, every socket and the last status."""
        out = [self.store_db, self.store_db + "-wal", self.store_db + "-shm", self.status_file, self.runner_socket]
        for i in range(MAX_CONTROL_PLANES):
            out += [self.api_socket(i), self.xds_socket(i)]
        return out
