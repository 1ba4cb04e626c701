"""Scoped configuration: what a Sidecar resource saves per proxy in a large mesh.

A real control plane with M services (2 instances each) and two real Envoys: one whose workload is
selected by a Sidecar allowing a few hosts, one with no Sidecar. Reports, per proxy, the config the
control plane sends (serialized bytes of its clusters, endpoints, listeners and routes, and resource
counts) and the Envoy's RSS once it has applied it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass

import yaml
from google.protobuf import json_format

from ..agent.bootstrap import build_bootstrap
from ..agent.config import AgentConfig
from ..envoybin import find_envoy
from ..local.procs import free_ports
from ..client import ApiClient, ClientError, EnvoyAdmin
from ..translate import renderer as _renderer  # noqa: F401 - registers every extension's descriptor
from ..translate.patches import MESSAGE

ALLOWED = 5


@dataclass
class ProxyCost:
    name: str
    resources: dict[str, int]
    bytes: int
    rss_mb: float            # VmRSS: private memory + the pages of Envoy's binary it has touched (shared)
    private_mb: float = 0.0  # RssAnon: what this Envoy alone costs the machine (the binary's pages are shared)
    allocated_mb: float = 0.0  # tcmalloc's allocated bytes (admin /memory)
    stats: int = 0             # stats Envoy holds (admin /stats)


def _api(state_dir: str, method: str, path: str, body: dict | None = None) -> dict:
    """The control plane's REST API on STATE/api.sock, as the admin (STATE/admin.token)."""
    return dict(ApiClient(state_dir, replicas=1, timeout=120).request(method, path, body))


def _status_mb(pid: int, key: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _rss_mb(pid: int) -> float:
    return _status_mb(pid, "VmRSS")


def _memory(name: str, pid: int, admin: EnvoyAdmin, resources: dict[str, int], size: int) -> ProxyCost:
    stats = sum(1 for s in admin.get_json("/stats?format=json")["stats"] if "name" in s)
    alloc = int(admin.get_json("/memory").get("allocated", 0)) / 2**20
    return ProxyCost(name, resources, size, _rss_mb(pid), _status_mb(pid, "RssAnon"), alloc, stats)


def _start_envoy(d: str, bootstrap: dict, procs: list) -> tuple[subprocess.Popen, EnvoyAdmin]:
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "envoy.yaml"), "w") as f:
        f.write(yaml.safe_dump(bootstrap, sort_keys=False))
    envoy = subprocess.Popen([find_envoy(), "-c", os.path.join(d, "envoy.yaml"), "--concurrency", "1",
                              "--log-level", "error", "--disable-hot-restart"],
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "envoy.log"), "wb"))
    procs.append(envoy)
    return envoy, EnvoyAdmin(os.path.join(d, "admin.sock"))


def static_bootstrap(admin_socket: str, services: int) -> dict:
    """The baseline: a bare Envoy with a minimal static config of the same clusters as a full view (one STATIC
    cluster per service with its 2 endpoints, Envoy's defaults for everything else, no listeners)."""
    clusters = [{"name": f"outbound|8080||svc-{i}.default.svc.cluster.local", "type": "STATIC",
                 "connect_timeout": "10s",
                 "load_assignment": {"cluster_name": f"svc-{i}", "endpoints": [{"lb_endpoints": [
                     {"endpoint": {"address": {"socket_address": {"address": _instance_ip(i, j), "port_value": 8080}}}}
                     for j in range(2)]}]}} for i in range(services)]
    return {"admin": {"address": {"pipe": {"path": admin_socket}}}, "static_resources": {"clusters": clusters}}


def _instance_ip(i: int, j: int) -> str:
    return f"127.1.{i // 250}.{i % 250 + j}"


def _settle(admin: EnvoyAdmin, name: str, timeout: float, dynamic: bool) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            st = {s["name"]: s.get("value", 0) for s in admin.get_json("/stats?format=json")["stats"]
                  if "name" in s}
            if not dynamic and "server.live" in st:
                break
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


def run(services: int = 1000, timeout: float = 300) -> list[ProxyCost]:
    work = tempfile.mkdtemp(prefix="mizzen-bench-sidecar-")
    os.chmod(work, 0o755)
    (xds, outbound, inbound), api = free_ports(3), work
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
                    "id": iid, "namespace": "default", "workload": f"svc-{i}", "address": _instance_ip(i, j),
                    "ports": [8080], "labels": {"app": f"svc-{i}"}})
        out = []
        # "everything-eager": the full view with the bootstrap as it was before deferred stat creation, so the
        # saving is a ratio within one run
        for name in ("scoped", "everything", "everything-eager"):
            d = os.path.join(work, name)
            os.makedirs(d)
            cfg = AgentConfig.from_dict({
                "pod": f"{name}-0", "workload": name, "labels": {"app": name}, "ip": "127.0.0.1",
                "interception": "netns", "outboundPort": outbound, "inboundPort": inbound,
                "xdsAddress": f"127.0.0.1:{xds}", "workDir": d, "adminSocket": os.path.join(d, "admin.sock"),
                "register": False}, base_dir=d)
            boot = build_bootstrap(cfg)
            if name.endswith("-eager"):
                boot.pop("deferred_stat_options", None)
            envoy, admin = _start_envoy(d, boot, procs)
            _settle(admin, name, timeout, dynamic=True)
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
            out.append(_memory(name, envoy.pid, admin, counts, size))
        # the baselines, same run: an Envoy with an empty bootstrap (admin only), and a bare Envoy with a
        # minimal static config of the same clusters as the full view
        for name, boot in (("empty bootstrap (baseline)", None), ("bare static, same clusters (baseline)", services)):
            d = os.path.join(work, "baseline-" + ("empty" if boot is None else "static"))
            sock = os.path.join(d, "admin.sock")
            b = static_bootstrap(sock, boot) if boot else {"admin": {"address": {"pipe": {"path": sock}}}}
            envoy, admin = _start_envoy(d, b, procs)
            _settle(admin, name, timeout, dynamic=False)
            out.append(_memory(name, envoy.pid, admin, {"CDS": boot or 0, "EDS": 0, "LDS": 0, "RDS": 0}, 0))
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


def full_view_per_1000(costs: list[ProxyCost], name: str = "everything") -> float:
    """Private MB a full view costs per 1000 services: (full − scoped) / (their cluster difference) × 1000."""
    by = {c.name: c for c in costs}
    full, scoped = by[name], by["scoped"]
    extra = full.resources["CDS"] - scoped.resources["CDS"]
    return (full.private_mb - scoped.private_mb) / extra * 1000 if extra > 0 else 0.0


def static_per_1000(costs: list[ProxyCost]) -> float:
    """The same for the bare static baseline: (static − empty) per 1000 clusters."""
    by = {c.name: c for c in costs}
    static, empty = by["bare static, same clusters (baseline)"], by["empty bootstrap (baseline)"]
    n = static.resources["CDS"]
    return (static.private_mb - empty.private_mb) / n * 1000 if n else 0.0


def markdown(services: int, costs: list[ProxyCost]) -> str:
    rows = [f"{services} services × 2 instances; one Envoy selected by a Sidecar allowing {ALLOWED} hosts, one "
            "with no Sidecar, one with no Sidecar and the bootstrap without deferred stat creation (`-eager`, as "
            "before), and two baselines: an Envoy with an empty bootstrap (admin only) and a bare Envoy with a "
            "minimal static config of the same clusters (config = serialized protobuf bytes of what the control "
            "plane sent it; RSS = VmRSS, private = RssAnon: the rest of RSS is Envoy's binary, mapped from the "
            "page cache and shared by every Envoy on the machine).", "",
            "| proxy | clusters | endpoints | listeners | routes | config sent (KB) | Envoy RSS MB | private MB | "
            "allocated MB | stats |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for c in costs:
        r = c.resources
        rows.append(f"| {c.name} | {r['CDS']} | {r['EDS']} | {r['LDS']} | {r['RDS']} | {c.bytes / 1024:.0f} | "
                    f"{c.rss_mb:.0f} | {c.private_mb:.1f} | {c.allocated_mb:.1f} | {c.stats} |")
    if any(c.name == "everything" for c in costs) and any(c.name.startswith("bare static") for c in costs):
        rows += ["", f"A full view costs {full_view_per_1000(costs):.0f} MB of private memory per 1000 services "
                 f"({full_view_per_1000(costs, 'everything-eager'):.0f} MB with eager stats); a bare Envoy's "
                 f"static clusters {static_per_1000(costs):.0f} MB per 1000."]
    return "\n".join(rows)


__all__ = ["run", "markdown"]
