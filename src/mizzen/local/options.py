"""The knobs of `mizzen up` that the runner's parts share (defaults as the CLI's)."""
from __future__ import annotations

from dataclasses import dataclass

WITHDRAW_TIMEOUT_SECONDS = 10.0  # how long a stop waits for callers' proxies to drop a withdrawn instance
APP_STOP_SECONDS = 10.0  # SIGTERM -> SIGKILL grace of an app
LISTENER_DRAIN_SECONDS = 2.0  # Envoy --drain-time-s: agent.config.AgentConfig.listener_drain_seconds


@dataclass(frozen=True)
class Options:
    concurrency: int = 1  # Envoy worker threads
    timeout: float = 120.0  # start-up, and a new replica's readiness
    drain_seconds: float = 2.0  # a sidecar's drain when its pod stops: the in-flight wait of a stop
    # how long a filter chain replaced by a config change keeps serving what is in flight (Envoy --drain-time-s)
    listener_drain_seconds: float = LISTENER_DRAIN_SECONDS
    withdraw_timeout: float = WITHDRAW_TIMEOUT_SECONDS
    app_stop_seconds: float = APP_STOP_SECONDS
    control_planes: int = 1
    trust_domain: str = "cluster.local"  # the mesh's SPIFFE trust domain (the control plane's --trust-domain)
    cert_ttl_seconds: float = 24 * 3600.0  # workload certificate validity (the control plane's --cert-ttl)
    outbound_traffic_policy: str = "ALLOW_ANY"  # the control planes' mesh-wide egress default
    ratelimit: bool = True  # run the global rate-limit service (local/ratelimit.py)
    ratelimit_replicas: int = 1
    ratelimit_redis: str | None = None  # a Redis URL, "managed", or None (counters in memory)
    store_url: str | None = None  # None: SQLite in the state dir; "etcd://...": every control plane uses it
    consul_api: str | None = None  # "HOST:PORT" the first control plane serves the Consul API on; None: off
    # One host of a multi-host mesh (local/hosts.py, `mizzen up --host NAME --join ...`): no control plane of its
    # own; the pods of the Workloads placed on `host` (those without spec.host if it is `default_host`).
    host: str | None = None
    default_host: str | None = None
    join_api: tuple[str, ...] = ()  # the control planes' REST API addresses (host:port), one per replica
    join_xds: tuple[str, ...] = ()  # ... and their xDS addresses
    join_ca: tuple[str, ...] = ()  # ... and their certificate services' (TLS, the sidecars' workload certificates)
    pod_subnet: str | None = None  # this host's pods (e.g. 10.244.3.0/24), behind a gateway in its namespace
    routed: tuple[str, ...] = ()  # what pods reach through that gateway (other hosts' pods, the hosts' network)
    outbound_excluded: tuple[str, ...] = ()  # destinations sidecars never capture (the control plane's address)
    # The control planes of a multi-host mesh: in the control-plane host's namespace, on its address (TCP)
    cp_netns: str | None = None
    cp_address: str | None = None

    @property
    def joined(self) -> bool:
        """A host runner: it joins control planes that run elsewhere."""
        return bool(self.join_api)

    @property
    def join_api_urls(self) -> tuple[str, ...]:
        """The joined control planes' REST API: TLS only over TCP (checked against the mesh root)."""
        return tuple(a if "://" in a else f"https://{a}" for a in self.join_api)
