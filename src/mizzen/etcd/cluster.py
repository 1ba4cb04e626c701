"""A local etcd cluster of N members on loopback ports (Debian's `etcd-server`), for development and tests:
`mizzen etcd up --members 3 --data-dir DIR`, `mizzen etcd down --data-dir DIR`.

Layout of DIR: `cluster.json` (members: name, client and peer URLs, pid), `<name>/` (a member's data),
`<name>.log` (its output). Members run in their own sessions, so they outlive the command that started
them; `down` stops them (SIGTERM, then SIGKILL after a grace period). Ports are free loopback ports picked at
`up`. The members allow 4096 operations and 8 MiB per transaction (etcd's defaults: 128 and 1.5 MiB), so
an apply of a few thousand resources commits in one transaction.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..local.procs import free_ports
from .client import EtcdClient, EtcdUnavailable

STATE_FILE = "cluster.json"
MAX_TXN_OPS = 4096
MAX_REQUEST_BYTES = 8 * 1024 * 1024


class ClusterError(RuntimeError):
    pass


def find_etcd() -> str:
    for cand in (os.environ.get("MIZZEN_ETCD"), shutil.which("etcd"), "/usr/bin/etcd"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise ClusterError("etcd is not installed: apt-get install etcd-server (make sysdeps does), "
                       "or set MIZZEN_ETCD to the etcd binary")


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    pid: int = 0
    host: str = "127.0.0.1"  # the address it listens on
    netns: str | None = None  # a network namespace of its own (a host of a multi-host mesh: local/hosts.py)

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"


def _alive(pid: int, data_dir: Path) -> bool:
    """The pid runs an etcd on this data dir (not a recycled pid)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
    except OSError:
        return False
    return any(str(data_dir).encode() in part for part in cmd)


class LocalCluster:
    def __init__(self, data_dir: str | os.PathLike[str]):
        self.dir = Path(data_dir).absolute()
        self.members: list[Member] = []
        self.token = ""
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        state = self.dir / STATE_FILE
        if state.exists():
            d = json.loads(state.read_text())
            self.token = d.get("token", "")
            self.members = [Member(**m) for m in d["members"]]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def _save(self) -> None:
        tmp = self.dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps({"token": self.token, "members": [asdict(m) for m in self.members]}, indent=1))
        os.replace(tmp, self.dir / STATE_FILE)

    def _command(self, m: Member) -> list[str]:
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        return (["ip", "netns", "exec", m.netns] if m.netns else []) + [find_etcd(), "--name", m.name, "--data-dir", str(self.dir / m.name),
                "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
                "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", self.token,
                "--max-txn-ops", str(MAX_TXN_OPS), "--max-request-bytes", str(MAX_REQUEST_BYTES),
                "--heartbeat-interval", "100", "--election-timeout", "1000",
                "--auto-compaction-mode", "revision", "--auto-compaction-retention", "100000",
                "--logger", "zap", "--log-outputs", "stderr"]

    def up(self, members: int = 3, *, timeout: float = 30.0,
           placement: list[tuple[str, str, str]] | None = None) -> list[str]:
        """Start a new cluster (or the stopped members of an existing one) and wait until it serves.
        `placement`: one (name, network namespace, address) per member, each listening on its address's
        standard ports (2379 client, 2380 peer) inside its namespace; default: loopback, free ports."""
        if not self.members:
            if members < 1:
                raise ClusterError("--members must be at least 1")
            self.dir.mkdir(parents=True, exist_ok=True)
            if placement:
                self.members = [Member(name, 2379, 2380, host=addr, netns=ns) for name, ns, addr in placement]
            else:
                ports = free_ports(2 * members)
                self.members = [Member(f"m{i}", ports[2 * i], ports[2 * i + 1]) for i in range(members)]
            self.token = f"mizzen-{os.getpid()}-{int(time.time())}"
        for i, m in enumerate(self.members):
            if not _alive(m.pid, self.dir):
                self.start_member(i, wait=False)
        self._save()
        self.wait_ready(timeout=timeout)
        return self.endpoints

    def start_member(self, i: int, *, wait: bool = True, timeout: float = 30.0) -> None:
        m = self.members[i]
        log = open(self.dir / f"{m.name}.log", "ab")
        try:
            p = subprocess.Popen(self._command(m), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 start_new_session=True)
        finally:
            log.close()
        m.pid = p.pid
        self._procs[m.name] = p
        self._save()
        if wait:
            self.wait_ready(timeout=timeout, members=[i])

    def wait_ready(self, *, timeout: float = 30.0, members: list[int] | None = None) -> None:
        """Every (given) member answers a linearizable read, i.e. is connected to a leader."""
        deadline = time.monotonic() + timeout
        idx = list(range(len(self.members))) if members is None else members
        for i in idx:
            m = self.members[i]
            if m.netns:
                self._wait_ready_in_netns(m, deadline, timeout)
                continue
            c = EtcdClient([m.endpoint], timeout=1.0)
            try:
                while True:
                    p = self._procs.get(m.name)
                    if p is not None and p.poll() is not None:
                        raise ClusterError(f"etcd member {m.name} exited with {p.returncode}; see "
                                           f"{self.dir / (m.name + '.log')}")
                    try:
                        c.range(b"mizzen-health", timeout=1.0)
                        break
                    except EtcdUnavailable as e:
                        if time.monotonic() > deadline:
                            raise ClusterError(f"etcd member {m.name} ({m.endpoint}) not ready after {timeout:.0f} s: "
                                               f"{e}; see {self.dir / (m.name + '.log')}") from None
                        time.sleep(0.1)
            finally:
                c.close()

    def _wait_ready_in_netns(self, m: Member, deadline: float, timeout: float) -> None:
        """A member in a namespace of its own is asked from inside it (its /health: a leader, no alarm)."""
        while True:
            p = self._procs.get(m.name)
            if p is not None and p.poll() is not None:
                raise ClusterError(f"etcd member {m.name} exited with {p.returncode}; see "
                                   f"{self.dir / (m.name + '.log')}")
            out = subprocess.run(["ip", "netns", "exec", str(m.netns), "curl", "-s", "-m", "1",
                                  f"{m.client_url}/health"], capture_output=True, text=True)
            if '"health":"true"' in out.stdout.replace(" ", ""):
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"etcd member {m.name} ({m.endpoint} in {m.netns}) not ready after "
                                   f"{timeout:.0f} s: {out.stdout or out.stderr}; see {self.dir / (m.name + '.log')}")
            time.sleep(0.2)

    def leader(self) -> int | None:
        """Index of the current leader, or None if no running member knows one."""
        c = EtcdClient(self.endpoints, timeout=1.0)
        try:
            ids: dict[int, int] = {}
            leader = 0
            for i, m in enumerate(self.members):
                if not _alive(m.pid, self.dir):
                    continue
                try:
                    st = c.status(i, timeout=1.0)
                except EtcdUnavailable:
                    continue
                ids[int(st.header.member_id)] = i
                leader = leader or int(st.leader)
            return ids.get(leader)
        finally:
            c.close()

    def stop_member(self, i: int, *, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        m = self.members[i]
        if not _alive(m.pid, self.dir):
            return
        try:
            os.kill(m.pid, sig)
        except ProcessLookupError:
            return
        self._wait_gone(m, timeout)

    def _wait_gone(self, m: Member, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        p = self._procs.get(m.name)
        while _alive(m.pid, self.dir):
            if p is not None:
                try:
                    p.wait(timeout=0.1)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.1)
            if time.monotonic() > deadline:
                os.kill(m.pid, signal.SIGKILL)
                deadline = time.monotonic() + 5
        self._procs.pop(m.name, None)

    def down(self, *, purge: bool = False, grace: float = 10.0) -> None:
        """Stop every member: SIGTERM (SIGKILL after `grace`); with `purge` the data goes too, so there is
        nothing to shut down cleanly: SIGKILL at once."""
        for m in self.members:
            if _alive(m.pid, self.dir):
                try:
                    os.kill(m.pid, signal.SIGKILL if purge else signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for m in self.members:
            self._wait_gone(m, grace)
            m.pid = 0
        if purge:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.members = []
        elif self.members:
            self._save()

    def status(self) -> list[dict[str, Any]]:
        return [{"name": m.name, "endpoint": m.endpoint, "pid": m.pid, "running": _alive(m.pid, self.dir)}
                for m in self.members]
