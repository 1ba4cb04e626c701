"""The knobs of `mizzen up` that the runner's parts share (defaults as the CLI's)."""
from __future__ import annotations

from dataclasses import dataclass

WITHDRAW_TIMEOUT_SECONDS = 10.0  # how long a stop waits for callers' proxies to drop a withdrawn instance
APP_STOP_SECONDS = 10.0  # SIGTERM -> SIGKILL grace of an app


@dataclass(frozen=True)
class Options:
    concurrency: int = 1  # Envoy worker threads
    timeout: float = 120.0  # start-up, and a new replica's readiness
    drain_seconds: float = 2.0  # a sidecar's drain (Envoy --drain-time-s); also the in-flight wait of a stop
    withdraw_timeout: float = WITHDRAW_TIMEOUT_SECONDS
    app_stop_seconds: float = APP_STOP_SECONDS
    control_planes: int = 1
    trust_domain: str = "cluster.local"  # the mesh's SPIFFE trust domain (the control plane's --trust-domain)
    cert_ttl_seconds: float = 24 * 3600.0  # workload certificate validity (the control plane's --cert-ttl)
    outbound_traffic_policy: str = "ALLOW_ANY"  # the control planes' mesh-wide egress default
    ratelimit: bool = True  # run the global rate-limit service (local/ratelimit.py)
    ratelimit_replicas: int = 1
    ratelimit_redis: str | None = None  # a Redis URL, "managed", or None (counters in memory)
