"""Scoped configuration: what a Sidecar resource saves per proxy in a large mesh.

A real control plane with M services (2 instances each) and two real Envoys: one whose workload is
selected by a Sidecar allowing a few hosts, one with no Sidecar. Reports, per proxy, the config the
control plane sends (serialized bytes of its clusters, endpoints, listeners and routes, and resource
counts) and the Envoy's RSS once it has applied it.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass

from google.protobuf import json_format

from ..agent.bootstrap import render_bootstrap
from ..agent.config import AgentConfig
from ..envoybin import find_envoy
from ..client import ApiClient, ClientError, EnvoyAdmin
from ..translate.patches import MESSAGE

ALLOWED = 5


@dataclass
class ProxyCost:
    name: str
    resources: dict[str, int]
    bytes: int
    rss_mb: float


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(state_dir: str, method: str, path: str, body: dict | None = None) -> dict:
    """The control plane's REST API on STATE/api.sock, as the admin (STATE/admin.token)."""
    return dict(ApiClient(state_dir, replicas=1, timeout=120).request(method, path, body))


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run(services: int = 1000, timeout: float = 300) -> list[ProxyCost]:
    work = tempfile.mkdtemp(prefix="mizzen-bench-sidecar-")
    os.chmod(work, 0o755)
    xds, api = _free_port(), work
    procs: list[subprocess.Popen] = []
    try:
        cp = subprocess.Popen([sys.executable, "-m", "mizzen.cli.main", "controlplane", "--state-dir", work,
                               "--xds-port", str(xds), "--log-level", "warning"],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "cp.log"), "wb"))
        procs.append(cp)
        deadline = time.monotonic() + 60
        while True:
            try:
                if _api(api, "GET", "/healthz").get("ready"):
                    break
            except (OSError, ClientError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("control plane did not start")
            time.sleep(0.1)
        docs = [f"apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}}}\nspec:\n  ports: [{{port: 8080, "
                f"name: http}}]\n  selector: {{app: svc-{i}}}\n" for i in range(services)]
        hosts = ", ".join(f'"./svc-{i}.default.svc.cluster.local"' for i in range(ALLOWED))
        docs.append("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: scoped}\nspec:\n"
                    f"  workloadSelector: {{labels: {{app: scoped}}}}\n  egress: [{{hosts: [{hosts}]}}]\n")
        _api(api, "POST", "/api/v1/apply", {"files": [{"name": "bench.yaml", "text": "---\n".join(docs)}]})
        for i in range(services):
            for j in range(2):
                iid = f"default.svc-{i}-{j}"
                _api(api, "PUT", f"/api/v1/instances/{iid}", {
                    "id": iid, "namespace": "default", "workload": f"svc-{i}", "address": f"127.1.{i // 250}.{i % 250 + j}",
                    "ports": [8080], "labels": {"app": f"svc-{i}"}})
        out = []
        for name in ("scoped", "everything"):
            d = os.path.join(work, name)
            os.makedirs(d)
            cfg = AgentConfig.from_dict({
                "pod": f"{name}-0", "workload": name, "labels": {"app": name}, "ip": "127.0.0.1",
                "interception": "netns", "outboundPort": _free_port(), "inboundPort": _free_port(),
                "xdsAddress": f"127.0.0.1:{xds}", "workDir": d, "adminSocket": os.path.join(d, "admin.sock"),
                "register": False}, base_dir=d)
            with open(os.path.join(d, "envoy.yaml"), "w") as f:
                f.write(render_bootstrap(cfg))
            envoy = subprocess.Popen([find_envoy(), "-c", os.path.join(d, "envoy.yaml"), "--concurrency", "1",
                                      "--log-level", "error", "--use-dynamic-base-id"],
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "envoy.log"), "wb"))
            procs.append(envoy)
            admin = EnvoyAdmin(os.path.join(d, "admin.sock"))
            deadline = time.monotonic() + timeout
            while True:
                try:
                    st = {s["name"]: s.get("value", 0) for s in admin.get_json("/stats?format=json")["stats"]
                          if "name" in s}
                    if st.get("cluster_manager.cds.update_success", 0) and \
                            st.get("listener_manager.lds.update_success", 0) and \
                            st.get("cluster_manager.warming_clusters", 1) == 0:
                        break
                except Exception:  # noqa: BLE001 - admin not up yet
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name}: Envoy did not get its config in {timeout}s")
                time.sleep(0.2)
            time.sleep(1.0)
            proxy = next(p for p in _api(api, "GET", "/api/v1/proxies")["items"] if p["workload"] == name)
            counts, size = {}, 0
            for short in ("CDS", "EDS", "LDS", "RDS"):
                sent = _api(api, "GET", f"/api/v1/proxies/{urllib.request.quote(proxy['id'], safe='')}/resources"
                                        f"?type={short}")
                items = sent.get("resources") or []
                counts[short] = len(items)
                cls = MESSAGE[sent["typeUrl"]]
                size += sum(json_format.ParseDict(i["resource"], cls(), ignore_unknown_fields=True).ByteSize()
                            for i in items if "resource" in i)
            out.append(ProxyCost(name, counts, size, _rss_mb(envoy.pid)))
        return out
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)


def markdown(services: int, costs: list[ProxyCost]) -> str:
    rows = [f"{services} services × 2 instances; one Envoy selected by a Sidecar allowing {ALLOWED} hosts, one "
            "with no Sidecar (config = serialized protobuf bytes of what the control plane sent it).", "",
            "| proxy | clusters | endpoints | listeners | routes | config sent (KB) | Envoy RSS MB |",
            "|---|---|---|---|---|---|---|"]
    for c in costs:
        r = c.resources
        rows.append(f"| {c.name} | {r['CDS']} | {r['EDS']} | {r['LDS']} | {r['RDS']} | {c.bytes / 1024:.0f} | "
                    f"{c.rss_mb:.0f} |")
    return "\n".join(rows)


__all__ = ["run", "markdown"]
