"""Real processes for the rate-limit tests: a redis-server the test starts and stops, and `mizzen ratelimit`."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from mizzen.local.procs import free_ports


def _die_with_the_test() -> None:
    """preexec_fn: SIGKILL this child when the test process dies (PR_SET_PDEATHSIG), so a killed pytest leaves
    no redis-server or rate-limit service behind (their own sessions would otherwise outlive it)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


def admin(port: int, path: str):
    """A rate-limit service's admin endpoint, as JSON."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.load(r)


def engines() -> list:
    """`mizzen ratelimit --engine` values to run a service test with: python always, native when it is built."""
    from mizzen.server.ratelimit_native import binary

    exe, why = binary()
    return ["python", pytest.param("native", marks=pytest.mark.skipif(exe is None, reason=f"native RLS: {why}"))]


def free_port() -> int:
    return free_ports(1)[0]


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def need_redis() -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (make sysdeps installs it)")
    return exe


class RedisServer:
    """One redis-server on loopback, no persistence; stop() kills it, start() brings it back on the same port."""

    def __init__(self, workdir: str, port: int | None = None):
        self.exe = need_redis()
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(os.path.join(self.workdir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.workdir, "--protected-mode", "yes"], stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_the_test)  # noqa: PLW1509
        log.close()
        wait_port(self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    d = tempfile.mkdtemp(prefix="mizzen-rl-redis-")
    srv = RedisServer(d)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(d, ignore_errors=True)


class RlsProcess:
    """`mizzen ratelimit` as a real process, serving gRPC on a loopback port, admin on another."""

    def __init__(self, workdir: str, limits: str, *, backend: str | None = None, extra: list[str] | None = None):
        self.workdir = workdir
        self.port, self.admin_port = free_ports(2)
        self.limits = limits
        self.backend = backend
        self.extra = extra or []
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(workdir, f"rls-{self.port}.log")

    def start(self) -> None:
        cmd = [sys.executable, "-m", "mizzen.cli.main", "ratelimit", "--limits", self.limits,
               "--port", f"127.0.0.1:{self.port}", "--admin-port", f"127.0.0.1:{self.admin_port}",
               "--poll-interval", "0.2", *self.extra]
        if self.backend:
            cmd += ["--redis", self.backend]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=_die_with_the_test)  # noqa: PLW1509
        log.close()
        wait_port(self.port, 30, self.proc)

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
