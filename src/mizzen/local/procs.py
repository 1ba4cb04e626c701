"""Small process helpers of the local runner: liveness, signalling, log tails, free ports."""
from __future__ import annotations

import os
import random
import socket
import time
from typing import Sequence

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy")


def alive(pid: int | None) -> bool:
    """True if pid runs (a zombie counts as dead)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def same_process(pid: int | None, argv: Sequence[str] | None) -> bool:
    """pid is alive and still runs argv (guards against PID reuse before signalling a recorded PID)."""
    if not alive(pid):
        return False
    if not argv:
        return True
    return cmdline(pid) == list(argv)


def signal_pid(pid: int | None, sig: int, group: bool = False) -> bool:
    if not pid or pid <= 0:
        return False
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """Wait until none of pids is alive; return those still alive after timeout."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left


def tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            data = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct free TCP ports on host, picked at random *below* the kernel's ephemeral range: a port the
    kernel hands out (bind to 0) can be taken meanwhile as the source port of any outgoing connection, and
    a listener started later on it fails (EADDRINUSE; seen in loopback mode). Held open together while
    picking, so they differ."""
    low, high = 10000, max(10001, _ephemeral_low())
    rng = random.SystemRandom()
    socks: list[socket.socket] = []
    try:
        for _ in range(50 * n):
            if len(socks) == n:
                break
            s = socket.socket()
            try:
                s.bind((host, rng.randrange(low, high)))
            except OSError:
                s.close()
                continue
            socks.append(s)
        while len(socks) < n:  # a crowded range: let the kernel choose
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def env_without_proxies(env: dict[str, str] | None = None) -> dict[str, str]:
    src = os.environ if env is None else env
    return {k: v for k, v in src.items() if k.lower() not in PROXY_VARS}


__all__ = ["alive", "cmdline", "same_process", "signal_pid", "wait_gone", "tail", "free_ports",
           "env_without_proxies"]
