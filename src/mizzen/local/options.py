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
    store_url: str | None = None  # None: SQLite in the state dir; "etcd://...": every control plane uses it
    consul_api: str | None = None  # "HOST:PORT" the first control plane serves the Consul API on; None: off
