"""Helpers of the xDS load test shared by its driver (xds_load.py) and its extra scenarios (xds_extra.py)."""
from __future__ import annotations

import math
import os
import resource
import socket
from typing import Any

NAMESPACE = "default"


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def proc_peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def services_yaml(m: int) -> str:
    docs = [
        f"apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\n  namespace: {NAMESPACE}\n"
        f"spec:\n  selector:\n    app: svc-{i}\n  ports:\n  - name: http\n    port: 8080\n"
        for i in range(m)
    ]
    return "---\n".join(docs)


def instance_dict(i: int, j: int, address: str) -> dict[str, Any]:
    from mizzen.model.types import Instance

    return Instance(id=f"{NAMESPACE}.svc-{i}-{j}", namespace=NAMESPACE, workload=f"svc-{i}", address=address,
                    ports=(8080,), labels=(("app", f"svc-{i}"),), source="static").to_dict()


def _addr(n: int) -> str:
    """The n-th instance address: 127.0.0.1, ... 127.0.0.250, 127.0.1.1, ... (loopback; nothing connects)."""
    return f"127.{n // 62500}.{n // 250 % 250}.{n % 250 + 1}"


def _profile(o, pid: int, phase: str, log):
    if not o.profile_dir:
        return None
    from .profile import Sampler

    s = Sampler.start(pid, os.path.join(o.profile_dir, f"{phase}.txt"))
    if s is None:
        log("py-spy is not installed (pip install py-spy): no profile")
    return s
