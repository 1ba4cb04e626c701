"""Where everything of one mesh lives in its state dir: the one place that names a file or socket there.

    store.db, registry.db            the control plane's SQLite files (shared by every replica)
    jwks-cache.json                  JWKS fetched from RequestAuthentication jwksUris (last good keys)
    api.sock, xds.sock, ca.sock      control-plane replica 0 ("controlplane"); ca.sock: certificate signing (TLS)
    pod-api.sock                     replica 0's REST API for pods' apps (0666; app credentials only, read-only)
    api-<i>.sock, xds-<i>.sock, ...  replica i ("controlplane-<i>"), i < MAX_CONTROL_PLANES
    ca/                              the mesh CA (Istio's plug-in file names; keys 0600), kept across runs
    credentials.db                   pod credentials (token hashes) the CA authenticates agents with
    consul-kv.db                     the Consul API's KV store (SQLite backend)
    controlplane[-<i>].pid           each replica's PID (written by the replica)
    admin.token                      the mesh's admin credential (0600; the CLI's default token)
    tokens.db                        API tokens (hashes only), shared by every replica
    credentials.db                   per-pod credentials (hashes only), shared by every replica
    runner.pid, runner.sock          the `mizzen up` runner's PID and control channel
    status.json                      the runner's view of every component
    logs/                            runner.log, controlplane[-<i>].log
    controlplane[-<i>].endpoints.json  each replica's monitoring and console addresses (written once it serves)
    traces.sock, otlp.sock           the embedded trace collector (Zipkin v2 HTTP; OTLP/gRPC), replica 0
    console.token                    the console's access token (0600)
    prometheus/                      Prometheus file-based service discovery: sidecars.json (kept current by
                                     replica 0), controlplane[-<i>].json
    ratelimit[-<i>].sock             the global rate-limit service replica i (gRPC), and
    ratelimit[-<i>]-admin.sock         its admin HTTP (healthz, stats, limits)
    redis/, redis.sock               a managed redis-server's dir and socket (`mizzen up --ratelimit-redis managed`)
    hosts/<host>/, etcd/             a multi-host mesh: each host runner's state dir; the mesh's etcd members
    pods/<pod>/                      one replica: agent.json, agent.state, envoy.yaml, admin.sock (Envoy),
                                     agent.sock (agent control), sds.sock (the agent's SDS, for Envoy only),
                                     telemetry.sock (access-log stream), base-id, envoy.log, access.log, agent.log,
                                     app.log, home/ (the app's $HOME), secrets/ (the pod credential and the mesh
                                     root: the agent's only), app-secrets/token (the app's read-only credential:
                                     the app's uid only; $MIZZEN_TOKEN_FILE in the pod)
    chaos/                           `mizzen chaos`: <fault id>.json (one record per fault), lock; logs/chaos-<id>.log

Pure: building paths touches no file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..api.uids import ENVOY_UID  # Envoy runs as this uid: excluded from capture, owns the pod dirs

MAX_CONTROL_PLANES = 3
MAX_RATELIMIT_REPLICAS = 4
CONTROLPLANE = "controlplane"
RATELIMIT = "ratelimit"


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
    def grpc_bootstrap(self) -> str:
        """A proxyless pod's GRPC_XDS_BOOTSTRAP (written by the runner; docs/proxyless.md)."""
        return self._f("grpc-bootstrap.json")

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
    def sds_socket(self) -> str:
        return self._f("sds.sock")

    @property
    def secrets_dir(self) -> str:
        return self._f("secrets")

    @property
    def app_secrets_dir(self) -> str:
        """The app's own read-only API credential (`app-secrets/token`), readable by the app's uid only."""
        return self._f("app-secrets")

    @property
    def app_token(self) -> str:
        return os.path.join(self.app_secrets_dir, "token")

    @property
    def telemetry_socket(self) -> str:
        """The agent's access-log receiver (gRPC; Envoy streams its request entries here)."""
        return self._f("telemetry.sock")

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
    def home(self) -> str:
        """The app's $HOME (0700, owned by the app's user when it has its own)."""
        return self._f("home")

    @property
    def sockets(self) -> tuple[str, ...]:
        """What a stopped pod leaves that must go (its dir stays for the logs)."""
        return self.admin_socket, self.agent_socket, self.sds_socket, self.telemetry_socket


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

    @property
    def jwks_cache(self) -> str:
        """The keys the control plane fetched from RequestAuthentication jwksUris (shared by every replica)."""
        return self._f("jwks-cache.json")

    @property
    def admin_token(self) -> str:
        """The admin credential a control plane writes at its first start (0600); the CLI's default token."""
        return self._f("admin.token")

    @property
    def tokens_db(self) -> str:
        return self._f("tokens.db")

    @property
    def credentials_db(self) -> str:
        return self._f("credentials.db")

    @property
    def consul_kv_db(self) -> str:
        """The Consul API's KV store (SQLite backend; on etcd it lives in the cluster)."""
        return self._f("consul-kv.db")

    def api_socket(self, replica: int = 0) -> str:
        return self._f(_numbered("api", replica, ".sock"))

    def xds_socket(self, replica: int = 0) -> str:
        return self._f(_numbered("xds", replica, ".sock"))

    def ca_socket(self, replica: int = 0) -> str:
        return self._f(_numbered("ca", replica, ".sock"))

    def ca_sockets(self, replicas: int = MAX_CONTROL_PLANES) -> list[str]:
        return [self.ca_socket(i) for i in range(replicas)]

    @property
    def ca_dir(self) -> str:
        return self._f("ca")

    def api_sockets(self, replicas: int = MAX_CONTROL_PLANES) -> list[str]:
        return [self.api_socket(i) for i in range(replicas)]

    def pod_api_socket(self, replica: int = 0) -> str:
        """The REST API as pods' apps reach it (any uid connects; only app credentials are accepted)."""
        return self._f(_numbered("pod-api", replica, ".sock"))

    def pod_api_sockets(self, replicas: int = MAX_CONTROL_PLANES) -> list[str]:
        return [self.pod_api_socket(i) for i in range(replicas)]

    def xds_sockets(self, replicas: int = MAX_CONTROL_PLANES) -> list[str]:
        return [self.xds_socket(i) for i in range(replicas)]

    def controlplane_pid(self, replica: int = 0) -> str:
        return self._f(f"{replica_name(replica)}.pid")

    def controlplane_log(self, replica: int = 0) -> str:
        return os.path.join(self.logs_dir, f"{replica_name(replica)}.log")

    def controlplane_endpoints(self, replica: int = 0) -> str:
        """JSON written by each replica once it serves: its monitoring (`/metrics`) and console addresses."""
        return self._f(f"{replica_name(replica)}.endpoints.json")

    # ------------------------------------------------------------------ telemetry (served by replica 0)
    @property
    def traces_socket(self) -> str:
        """The embedded trace collector's Zipkin v2 endpoint (HTTP; sidecar Envoys post spans here)."""
        return self._f("traces.sock")

    @property
    def otlp_socket(self) -> str:
        """The embedded trace collector's OTLP/gRPC endpoint (apps' OpenTelemetry SDKs, collectors)."""
        return self._f("otlp.sock")

    @property
    def console_token(self) -> str:
        """The console's access token (mode 0600): `mizzen dashboard` puts it in the URL it prints."""
        return self._f("console.token")

    @property
    def prometheus_dir(self) -> str:
        return self._f("prometheus")

    @property
    def prometheus_sidecar_targets(self) -> str:
        """Prometheus file-based service discovery of every sidecar, kept current by replica 0."""
        return os.path.join(self.prometheus_dir, "sidecars.json")

    def prometheus_controlplane_targets(self, replica: int = 0) -> str:
        """... and of each control-plane replica's monitoring port (written by that replica)."""
        return os.path.join(self.prometheus_dir, f"{replica_name(replica)}.json")

    # ------------------------------------------------------------------ rate-limit service
    def ratelimit_name(self, replica: int = 0) -> str:
        """ratelimit, ratelimit-1, ... (as `mizzen status` names them)."""
        if not 0 <= replica < MAX_RATELIMIT_REPLICAS:
            raise ValueError(f"rate-limit replica {replica} out of range 0..{MAX_RATELIMIT_REPLICAS - 1}")
        return RATELIMIT if replica == 0 else f"{RATELIMIT}-{replica}"

    def ratelimit_socket(self, replica: int = 0) -> str:
        return self._f(f"{self.ratelimit_name(replica)}.sock")

    def ratelimit_sockets(self, replicas: int) -> list[str]:
        return [self.ratelimit_socket(i) for i in range(replicas)]

    def ratelimit_admin_socket(self, replica: int = 0) -> str:
        return self._f(f"{self.ratelimit_name(replica)}-admin.sock")

    def ratelimit_log(self, replica: int = 0) -> str:
        return os.path.join(self.logs_dir, f"{self.ratelimit_name(replica)}.log")

    @property
    def redis_dir(self) -> str:
        return self._f("redis")

    @property
    def redis_socket(self) -> str:
        return self._f("redis.sock")

    @property
    def redis_log(self) -> str:
        return os.path.join(self.logs_dir, "redis.log")

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

    # ------------------------------------------------------------------ a multi-host mesh (local/hosts.py)
    @property
    def hosts_dir(self) -> str:
        return self._f("hosts")

    def host(self, name: str) -> "StateLayout":
        """The state dir of one host's runner: `hosts/<name>/` (its pods, status.json, runner.sock)."""
        return StateLayout(os.path.join(self.hosts_dir, name))

    def host_names(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.hosts_dir) if os.path.isdir(os.path.join(self.hosts_dir, n)))
        except OSError:
            return []

    def host_log(self, name: str) -> str:
        return os.path.join(self.logs_dir, f"host-{name}.log")

    @property
    def etcd_dir(self) -> str:
        """The mesh's own etcd cluster (members on hosts with `etcd: true`): etcd.cluster.LocalCluster's dir."""
        return self._f("etcd")

    def proxyless_bootstrap(self, namespace: str, workload: str) -> str:
        """`mizzen proxyless-bootstrap`'s default output: a proxyless gRPC client's GRPC_XDS_BOOTSTRAP file."""
        return self._f("proxyless", f"{namespace}.{workload}.json")

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
        """What a new `mizzen up` removes first: the store, the pods' credentials, every socket and the last
        status (the CA stays: a plugged-in root must survive)."""
        out = [self.store_db, self.store_db + "-wal", self.store_db + "-shm", self.status_file, self.runner_socket,
               self.traces_socket, self.otlp_socket]
        out += [self.credentials_db, self.credentials_db + "-wal", self.credentials_db + "-shm"]
        for i in range(MAX_CONTROL_PLANES):
            out += [self.api_socket(i), self.pod_api_socket(i), self.xds_socket(i), self.ca_socket(i),
                    self.controlplane_endpoints(i)]
        for i in range(MAX_RATELIMIT_REPLICAS):
            out += [self.ratelimit_socket(i), self.ratelimit_admin_socket(i)]
        return out + [self.redis_socket]
