"""Shared by the chaos e2e tests: the mesh, reading records, and "nothing of chaos is left"."""
from __future__ import annotations

import json
import subprocess
import time
from typing import Any, Callable

from tests.e2e.mesh import Mesh


def chaos(m: Mesh, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return m.cli("chaos", *args, check=check, timeout=timeout)


def records(m: Mesh) -> dict[str, dict[str, Any]]:
    return {f["id"]: f for f in json.loads(chaos(m, "list", "--all", "-o", "json").stdout)["items"]}


def fault_id(p: subprocess.CompletedProcess) -> str:
    return p.stdout.split(":", 1)[0].strip()


def iptables_rules(netns: str, table: str = "filter") -> str:
    return subprocess.run(["ip", "netns", "exec", netns, "iptables", "-t", table, "-S"], capture_output=True,
                          text=True).stdout


def qdisc(netns: str, dev: str = "eth0") -> str:
    return subprocess.run(["tc", "-n", netns, "qdisc", "show", "dev", dev, "root"], capture_output=True,
                          text=True).stdout


def chaos_processes(state_dir: str) -> list[str]:
    """Keepers, relays (their ready files are in the state dir) and CPU hogs still running."""
    out = subprocess.run(["pgrep", "-af", "mizzen.chaos|while :; do :; done"], capture_output=True,
                         text=True).stdout.splitlines()
    return [ln for ln in out if str(state_dir) in ln or "while :; do :; done" in ln]


def pod(m: Mesh, name: str) -> dict[str, Any]:
    return next(p for p in m.status()["pods"] if p["name"] == name)


def pids(m: Mesh, pod_name: str) -> dict[str, int]:
    return {c["kind"]: c["pid"] for c in m.status()["components"] if c.get("pod") == pod_name}


def wait_for(pred: Callable[[], Any], timeout: float, what: str, every: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except (AssertionError, OSError, ValueError, KeyError, StopIteration) as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}: {str(last)[:2000]}")


def curl_ms(m: Mesh, src: str, url: str, timeout: float = 5) -> float | None:
    """One request from a pod (through its sidecar): milliseconds, or None if it failed."""
    p = m.exec(src, "curl", "-s", "-o", "/dev/null", "-m", str(timeout), "-w", "%{http_code} %{time_total}", url,
               timeout=timeout + 30)
    parts = p.stdout.split()
    if p.returncode != 0 or len(parts) != 2 or parts[0] != "200":
        return None
    return float(parts[1]) * 1000.0
