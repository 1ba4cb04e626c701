"""The local runner's processes: `Child` (a process it starts, watches and restarts with back-off) and small
helpers: liveness, signalling, log tails, free ports."""
from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import Sequence

log = logging.getLogger("mizzen.local")

BACKOFF_MAX_SECONDS = 30.0
STABLE_SECONDS = 30.0  # a process that ran this long has its back-off reset

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy")
# the CLI's credentials: never handed on to the processes of a mesh (apps would get the caller's token)
CREDENTIAL_VARS = ("mizzen_token", "mizzen_server", "mizzen_ca_cert")


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
    return {k: v for k, v in src.items() if k.lower() not in PROXY_VARS and k.lower() not in CREDENTIAL_VARS}


# --------------------------------------------------------------------------------- supervised process

@dataclass
class Child:
    """A process the runner starts, watches and restarts with back-off.

    `running` and `state()` report what was last observed (by `check()` or `poll()`), without a system
    call, so a status can be computed from recorded facts alone; `poll()` looks again."""

    name: str
    argv: list[str]
    log_path: str
    env: dict[str, str] | None = None
    cwd: str | None = None
    restart: bool = True
    popen: subprocess.Popen | None = None
    restarts: int = 0
    failures: int = 0  # consecutive quick exits (drives the back-off)
    started_at: float = 0.0
    started_wall: float = 0.0
    next_start: float = 0.0
    last_exit: int | None = None
    exec_argv: list[str] = field(default_factory=list)  # the argv after `ip netns exec` execs

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.returncode is None

    def poll(self) -> bool:
        """Running now? (Reaps an exited process; `check()` then records the exit.)"""
        if self.popen is not None:
            self.popen.poll()
        return self.running

    def start(self) -> None:
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)  # not other tenants' apps'
        with open(fd, "ab") as out:
            out.write(f"--- mizzen: {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}"
                      f"{f' (restart {self.restarts})' if self.restarts else ''}: {' '.join(self.argv)}\n".encode())
            out.flush()
            try:
                self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                              env=self.env, cwd=self.cwd, start_new_session=True)
            except OSError as e:
                out.write(f"--- mizzen: cannot start: {e}\n".encode())
                self.popen = None
                self.last_exit = 127
                self._schedule_restart(time.monotonic())
                return
        self.started_at = time.monotonic()
        self.started_wall = time.time()

    def _schedule_restart(self, now: float) -> None:
        self.failures += 1
        self.next_start = now + min(BACKOFF_MAX_SECONDS, 0.5 * 2 ** (self.failures - 1))

    def check(self, now: float) -> bool:
        """Notice an exit (scheduling a restart) or start when due. True when something changed."""
        if self.popen is not None:
            rc = self.popen.poll()
            if rc is None:
                return False
            self.popen = None
            self.last_exit = rc
            if now - self.started_at >= STABLE_SECONDS:
                self.failures = 0
            self._schedule_restart(now)
            log.warning("%s exited with %s%s", self.name, rc,
                        f"; restarting in {self.next_start - now:.1f}s" if self.restart else "")
            return True
        if self.restart and now >= self.next_start and self.last_exit is not None:
            self.restarts += 1
            self.start()
            return True
        return False

    def stop(self, sig: int = signal.SIGTERM, group: bool = False) -> None:
        self.restart = False
        if self.poll():
            assert self.popen is not None
            signal_pid(self.popen.pid, sig, group=group)

    def state(self) -> str:
        if self.running:
            return "running"
        if self.popen is None and self.last_exit is None:
            return "pending"
        return "restarting" if self.restart else "stopped"


def wait_children(children: Sequence[Child], timeout: float, *, group: bool, force: bool = False) -> None:
    """Wait (bounded) for stopped children to exit; SIGKILL what is left (and, with `group`, what a process
    left in its session, e.g. a shell's children)."""
    deadline = time.monotonic() + timeout
    for c in children:
        if c.popen is None:
            continue
        try:
            c.popen.wait(max(0.0, deadline - time.monotonic()) if not force else 0.5)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", c.name)
            signal_pid(c.popen.pid, signal.SIGKILL, group=group)
            signal_pid(c.popen.pid, signal.SIGKILL)
            try:
                c.popen.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if group:
            signal_pid(c.popen.pid, signal.SIGKILL, group=True)
        c.last_exit = c.popen.returncode
        c.popen = None


__all__ = ["Child", "alive", "cmdline", "same_process", "signal_pid", "wait_gone", "wait_children", "tail",
           "free_ports", "env_without_proxies"]
