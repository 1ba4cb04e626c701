"""The global rate-limit service of a local mesh: `mizzen ratelimit` replicas and, when asked, a managed
`redis-server`, supervised like the control plane (restart with back-off, status, logs, teardown).

`mizzen up` always starts the service (one replica by default; `--no-ratelimit` leaves it out): applying the
first global RateLimit then needs no restart and leaves no gap in which the sidecars would call a service that
is not there yet (each limit's failureMode would apply). An idle replica costs one Python process that reads
the RateLimits from the control plane once a second (measured in docs/ratelimit.md).

Counters: in memory (one replica only), `--ratelimit-redis URL`, or `--ratelimit-redis managed`: a
redis-server on `STATE/redis.sock` (no TCP port, no persistence) that the runner starts first and stops
last. Several replicas (`--ratelimit-replicas N`) need Redis: they share counters there, and every sidecar's
rate-limit cluster lists them all (Envoy balances and fails over). Sidecars reach them over unix sockets
(`STATE/ratelimit[-<i>].sock`, mode 0666: Envoy runs as uid 1337), across network namespaces like xds.sock.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
from typing import Callable

from ..client import StateLayout
from ..client.http import unix_request
from .pods import RunnerError
from .procs import Child, env_without_proxies, tail, wait_children
from .table import PodTable

log = logging.getLogger("mizzen.local")

MANAGED = "managed"
START_TIMEOUT_SECONDS = 30.0


def check_redis_option(value: str | None, replicas: int) -> None:
    """Refuse what cannot work before anything starts."""
    if replicas > 1 and not value:
        raise RunnerError(f"--ratelimit-replicas {replicas} needs shared counters: add --ratelimit-redis URL "
                          f"or --ratelimit-redis {MANAGED}")
    if value == MANAGED and shutil.which("redis-server") is None:
        raise RunnerError("--ratelimit-redis managed needs redis-server (`make sysdeps`, or apt-get install "
                          "redis-server), or give the URL of a Redis you run: --ratelimit-redis redis://HOST:PORT/0")
    if value and value != MANAGED and not value.startswith(("redis://", "rediss://", "unix://")):
        raise RunnerError(f"--ratelimit-redis {value!r}: give a redis://HOST:PORT/DB (or unix://PATH) URL, "
                          f"or '{MANAGED}'")


class RateLimitServices:
    """Starts, checks and stops the rate-limit replicas and the managed Redis, recorded in the PodTable."""

    def __init__(self, table: PodTable, replicas: int, redis: str | None, join_api: tuple[str, ...] = ()):
        self.table = table
        self.join_api = join_api  # a host runner's: the control planes' TLS API (their tokens/root in its state dir)
        self.layout: StateLayout = table.info.layout
        self.replicas = replicas
        self.redis = redis

    @property
    def redis_url(self) -> str | None:
        if self.redis == MANAGED:
            return f"unix://{self.layout.redis_socket}"
        return self.redis

    def addresses(self) -> tuple[str, ...]:
        """What each sidecar's agent.json names as its rate-limit service(s)."""
        return tuple(f"unix:{s}" for s in self.layout.ratelimit_sockets(self.replicas))

    # ------------------------------------------------------------------ start
    def start(self, check_stop: Callable[[], None]) -> None:
        """Redis first (when managed), then each replica; returns once each replica serves its limits (it
        listens only after loading them from the control plane, so the control plane must be up)."""
        if self.redis == MANAGED:
            self._start_redis(check_stop)
        for i in range(self.replicas):
            argv = [sys.executable, "-m", "mizzen.cli.main", "ratelimit", "--state-dir", self.layout.root,
                    "--socket", self.layout.ratelimit_socket(i), "--admin-socket", self.layout.ratelimit_admin_socket(i)]
            if self.redis_url:
                argv += ["--redis", self.redis_url]
            if self.join_api:  # a host of a multi-host mesh: the control planes' TLS API elsewhere
                argv += ["--api", ",".join(self.join_api)]
            child = Child(self.layout.ratelimit_name(i), argv, self.layout.ratelimit_log(i),
                          env=env_without_proxies(), exec_argv=argv)
            with self.table.lock:
                self.table.ratelimit.append(child)
            child.start()
            self._wait(child, lambda i=i: _healthy(self.layout.ratelimit_admin_socket(i)), check_stop)
        log.info("rate-limit service ready (%d replica%s, counters %s)", self.replicas,
                 "" if self.replicas == 1 else "s", self._describe_counters())

    def _describe_counters(self) -> str:
        if self.redis == MANAGED:
            return f"in a managed redis-server on {self.layout.redis_socket}"
        return f"in Redis {self.redis}" if self.redis else "in memory"

    def _start_redis(self, check_stop: Callable[[], None]) -> None:
        os.makedirs(self.layout.redis_dir, exist_ok=True)
        exe = shutil.which("redis-server") or "redis-server"
        argv = [exe, "--port", "0", "--unixsocket", self.layout.redis_socket, "--unixsocketperm", "600",
                "--dir", self.layout.redis_dir, "--save", "", "--appendonly", "no", "--daemonize", "no"]
        child = Child("redis", argv, self.layout.redis_log, env=env_without_proxies(), exec_argv=argv)
        with self.table.lock:
            self.table.redis = child
        child.start()
        self._wait(child, lambda: _redis_up(self.layout.redis_socket), check_stop)
        log.info("managed redis-server started (pid %s) on %s", child.pid, self.layout.redis_socket)

    def _wait(self, child: Child, ready: Callable[[], bool], check_stop: Callable[[], None]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not ready():
            check_stop()
            if not child.poll():
                raise RunnerError(f"{child.name} exited during start-up:\n" + tail(child.log_path, 30))
            if time.monotonic() > deadline:
                raise RunnerError(f"{child.name} did not become ready in {START_TIMEOUT_SECONDS:.0f}s:\n"
                                  + tail(child.log_path, 30))
            time.sleep(0.1)

    # ------------------------------------------------------------------ supervise, stop
    def check(self, now: float) -> None:
        """Restart what died (Child's back-off); called with the table locked."""
        for c in self.children():
            c.check(now)

    def children(self) -> list[Child]:
        return list(self.table.ratelimit) + ([self.table.redis] if self.table.redis is not None else [])

    def stop(self, grace: float) -> None:
        """Replicas first (they stop asking Redis), Redis last."""
        reps = list(self.table.ratelimit)
        for c in reps:
            c.stop(signal.SIGTERM)
        if reps:
            wait_children(reps, grace, group=True, force=self.table.run.force)
        if self.table.redis is not None:
            self.table.redis.stop(signal.SIGTERM)
            wait_children([self.table.redis], grace, group=True, force=self.table.run.force)


def _healthy(admin_socket: str) -> bool:
    try:
        status, _ = unix_request(admin_socket, "GET", "/healthz", timeout=1.0)
    except Exception:  # not there yet, refused, or not answering HTTP
        return False
    return status == 200


def _redis_up(path: str) -> bool:
    import socket

    if not os.path.exists(path):
        return False
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1.0)
            s.connect(path)
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False
