"""Issue 15 goal 1, the data path: two hops through the mesh vs two bare Envoys with a minimal static config and
the same iptables capture, same app, same run, runs alternated so drift hits both; paced (1000 rps, `hey -q`)
and at saturation (`wrk -t1 -c4`); plaintext (the defaults — Istio's metrics counted inside Envoy —, the metrics
counted from the access-log stream instead, the telemetry features off) and mTLS (the defaults). Never pass/fail.

    client --capture--> sidecar --(pod IP)--> capture --> sidecar --> app            mesh (xDS, generated config)
    client-direct --capture--> Envoy A --(pod IP)--> capture --> Envoy B --> app     bare (static, one route)

The bare pods are the mesh's sidecar-less pods with the sidecar capture added (`netns.capture_rules`, the
rules of a sidecar pod: outbound REDIRECT to 15001, inbound to 15006, Envoy's uid 1337 exempt), and Envoy A/B
run as uid 1337 with `--concurrency 1` like the sidecars. The app on both sides is an Envoy answering every
request with 200 and a 1 KiB body (direct_response), so the app is not the bottleneck and costs the same on
both paths. Besides latency, each run records the CPU time of the two proxies (client side and server side)
per request, from /proc: on a 2-core machine that is steadier than latency and says which side costs.

Every load is bounded (`-z`/`-d` seconds); the capture rules added to the bare pods are removed (their nat
table restored) and everything is torn down at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from ..api.uids import ENVOY_UID
from ..envoybin import find_envoy
from ..local import netns
from .latency import mizzen, parse_wrk
from .telemetry import cpu_seconds
from .mtls import _certs, _cluster, _hcm, _tls, parse_hey
from .table import Row

BODY_BYTES = 1024
TELEMETRY_OFF = "plaintext-telemetry-off"
STREAM, MTLS_STREAM = "plaintext-access-log-stream", "mtls-access-log-stream"
MODES = ("plaintext", STREAM, TELEMETRY_OFF, "mtls")
PLAINTEXT_DR = ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: echo}\nspec:\n"
                "  host: echo\n  trafficPolicy:\n    tls: {mode: DISABLE}\n")
MODE_TEXT = {"plaintext": "the mesh's defaults (Istio's metrics counted inside Envoy, tracing at 1 %) with plaintext "
                          "between the sidecars (a DestinationRule `tls: DISABLE`) vs a plaintext bare pair",
             TELEMETRY_OFF: "the same with a mesh-wide Telemetry switching metrics and span reporting off, i.e. "
                            "what the generated config costs without the telemetry features",
             STREAM: "the mesh's defaults with Istio's metrics counted by the agent from a per-request access-log "
                     "stream (a mesh-wide Telemetry naming the `access-log-stream` metrics provider), plaintext",
             "mtls": "the mesh's defaults (auto mTLS from SDS) vs a bare pair with static mTLS files",
             MTLS_STREAM: "the same with the metrics counted from the access-log stream"}
# a mesh-wide Telemetry switching off the two telemetry features that cost per request: the metrics (both
# sidecars) and span reporting (tracing at 1 %)
NO_TELEMETRY = ("apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: mesh-default, namespace: "
                "istio-system}\nspec: {tracing: [{disableSpanReporting: true}], metrics: [{overrides: "
                "[{disabled: true}]}]}\n")
STREAM_METRICS = ("apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: mesh-default, namespace: "
                  "istio-system}\nspec: {metrics: [{providers: [{name: access-log-stream}]}]}\n")
TELEMETRY = {TELEMETRY_OFF: NO_TELEMETRY, STREAM: STREAM_METRICS, MTLS_STREAM: STREAM_METRICS}


def mesh_yaml(envoy: str, app_config: Path) -> str:
    app = [envoy, "-c", str(app_config), "--concurrency", "1", "--disable-hot-restart", "--log-level", "error"]
    idle = ["sh", "-c", "while true; do sleep 3600; done"]
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
         "spec": {"ports": [{"port": 8080, "name": "http"}], "selector": {"app": "echo"}}}]
    for name, command, sidecar in (("echo", app, True), ("echo-direct", app, False), ("client", idle, True),
                                   ("client-direct", idle, False)):
        spec: dict[str, Any] = {"command": command}
        if command is app:
            spec["ports"] = [{"containerPort": 8080}]
        if not sidecar:
            spec["sidecar"] = False
        docs.append({"apiVersion": "mizzen.dev/v1", "kind": "Workload",
                     "metadata": {"name": name, "labels": {"app": name}}, "spec": spec})
    return yaml.safe_dump_all(docs, sort_keys=False)


def app_config() -> dict:
    """The app: 200 with a 1 KiB body on 0.0.0.0:8080, nothing else."""
    hcm = _hcm("app", "none")
    hcm["route_config"]["virtual_hosts"][0]["routes"] = [
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "x" * BODY_BYTES}}}]
    return {"static_resources": {"listeners": [{
        "name": "app", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 8080}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}]}]}}


def bare_configs(server_ip: str, files: dict[str, Path] | None) -> tuple[dict, dict]:
    """Envoy A (captured outbound on 15001 -> the server pod's IP:8080) and B (captured inbound on 15006 -> the app
    on 127.0.0.1:8080); with `files`, mTLS between them (ECDSA P-256, SPIFFE SAN checks, as the mesh does)."""
    up_tls = None if files is None else _tls(files, "client", {"exact": "spiffe://cluster.local/ns/default/sa/echo"},
                                             ["istio-http/1.1"])
    a = {"static_resources": {
        "listeners": [{"name": "out", "address": {"socket_address": {"address": "0.0.0.0",
                                                                       "port_value": netns.OUTBOUND_PORT}},
                       "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                       "typed_config": _hcm("out", "server")}]}]}],
        "clusters": [_cluster("server", server_ip, 8080, up_tls)]}}
    chain: dict[str, Any] = {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                          "typed_config": _hcm("in", "app", xfcc=files is not None)}]}
    if files is not None:
        chain["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": _tls(files, "server", {"prefix": "spiffe://cluster.local/"}, ["h2", "http/1.1"]),
            "require_client_certificate": True}}
    b = {"static_resources": {
        "listeners": [{"name": "in", "address": {"socket_address": {"address": "0.0.0.0",
                                                                      "port_value": netns.INBOUND_PORT}},
                       "filter_chains": [chain]}],
        "clusters": [_cluster("app", "127.0.0.1", 8080)]}}
    return a, b


@dataclass
class Run:
    path: str        # mesh | bare
    load: str        # paced | saturation
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_client_us: float  # CPU time of the client-side proxy per request
    cpu_server_us: float  # the same, server side


def _envoy_in(ns: str) -> int:
    """The pid of the uid-1337 Envoy in a network namespace (the sidecar or the bare Envoy, not the app)."""
    for pid in netns.namespace_pids(ns):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "envoy" and os.stat(f"/proc/{pid}").st_uid == ENVOY_UID:
                return pid
        except OSError:
            continue
    raise RuntimeError(f"no Envoy of uid {ENVOY_UID} in netns {ns}")


class Bench:
    def __init__(self, tmp: Path, seconds: int):
        self.tmp, self.seconds = tmp, seconds
        self.state = tmp / ".mizzen"
        self.envoy = find_envoy(None)
        self.bare: list[subprocess.Popen] = []
        self.saved_nat: dict[str, str] = {}
        self.pods: dict[str, dict] = {}

    def cli(self, *args: str, timeout: float = 300, input: str | None = None) -> subprocess.CompletedProcess:
        return mizzen(self.state, *args, timeout=timeout, input=input)

    def up(self) -> None:
        app = self.tmp / "app.yaml"
        app.write_text(yaml.safe_dump(app_config()))
        mesh = self.tmp / "mesh.yaml"
        mesh.write_text(mesh_yaml(self.envoy, app))
        self.cli("up", str(mesh), "--detach")
        self.pods = {p["workload"]: p for p in json.loads(self.cli("status", "-o", "json").stdout)["pods"]}
        for pod in ("client-direct", "echo-direct"):  # the same capture as a sidecar pod's, added to its rules
            ns = self.pods[pod]["netns"]
            self.saved_nat[ns] = subprocess.run(["ip", "netns", "exec", ns, "iptables-save", "-t", "nat"],
                                                capture_output=True, text=True, check=True).stdout
            subprocess.run(["ip", "netns", "exec", ns, "iptables-restore", "--noflush"], input=netns.capture_rules(),
                           text=True, check=True, capture_output=True)

    def start_bare(self, tls: bool) -> None:
        self.stop_bare()
        files = _certs(self.tmp) if tls else None
        cfg_a, cfg_b = bare_configs(self.pods["echo-direct"]["ip"], files)
        for name, cfg, pod in (("a", cfg_a, "client-direct"), ("b", cfg_b, "echo-direct")):
            path = self.tmp / f"envoy-{name}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            log = open(self.tmp / f"envoy-{name}.log", "w")
            self.bare.append(subprocess.Popen(
                ["ip", "netns", "exec", self.pods[pod]["netns"], "setpriv", f"--reuid={ENVOY_UID}",
                 f"--regid={ENVOY_UID}", "--clear-groups", self.envoy, "-c", str(path), "--concurrency", "1",
                 "--disable-hot-restart", "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT))
        time.sleep(1.5)

    def stop_bare(self) -> None:
        for e in self.bare:
            e.terminate()
        for e in self.bare:
            try:
                e.wait(10)
            except subprocess.TimeoutExpired:
                e.kill()
        self.bare = []

    def down(self) -> None:
        self.stop_bare()
        for ns, saved in self.saved_nat.items():
            subprocess.run(["ip", "netns", "exec", ns, "iptables-restore", "-T", "nat"], input=saved, text=True,
                           capture_output=True)
        subprocess.run([sys.executable, "-m", "mizzen.cli.main", "down", "--state-dir", str(self.state)],
                       capture_output=True, timeout=180)

    def proxies(self, path: str) -> tuple[int, int]:
        client, server = ("client", "echo") if path == "mesh" else ("client-direct", "echo-direct")
        return _envoy_in(self.pods[client]["netns"]), _envoy_in(self.pods[server]["netns"])

    def url(self, path: str) -> tuple[str, str]:
        return ("client", "http://echo:8080/") if path == "mesh" else \
            ("client-direct", f"http://{self.pods['echo-direct']['ip']}:8080/")

    def one(self, path: str, load: str, rate: int) -> Run:
        pod, url = self.url(path)
        pids = self.proxies(path)
        before = [cpu_seconds(p) for p in pids]
        if load == "paced":
            workers = max(1, rate // 100)  # hey -q is per worker
            out = self.cli("exec", pod, "--", "hey", "-z", f"{self.seconds}s", "-c", str(workers), "-q",
                           str(rate // workers), url, timeout=self.seconds + 60).stdout
            h = parse_hey(out)
            rps, p50, p99, n, errors = h.rps, h.p50_ms, h.p99_ms, h.ok + h.errors, h.errors
        else:
            out = self.cli("exec", pod, "--", "wrk", "-t1", "-c4", f"-d{self.seconds}s", "--latency", url,
                           timeout=self.seconds + 60).stdout
            w = parse_wrk(out)
            rps, p50, p99, n, errors = w.rps, w.p50_ms, w.p99_ms, w.requests, w.errors
        after = [cpu_seconds(p) for p in pids]
        per = [(a - b) * 1e6 / max(n, 1) for a, b in zip(after, before)]
        if n > 100 and per[0] < 1:
            raise RuntimeError(f"{path}: the client-side proxy used no CPU for {n} requests: the capture is not in "
                               f"effect in pod {pod} (iptables nat table)")
        return Run(path, load, rps, p50, p99, n, errors, per[0], per[1])


def run(seconds: int = 10, rate: int = 1000, pairs: int = 3, modes: tuple[str, ...] = MODES) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="mizzen-bench-datapath-"))
    os.chmod(tmp, 0o755)  # the pods' app users run the app Envoy from its config here
    b = Bench(tmp, seconds)
    runs: dict[str, list[dict]] = {}
    started = time.time()
    try:
        b.up()
        dr = False
        tel: str | None = None  # the mesh-wide Telemetry applied
        for mode in modes:
            tls = mode.startswith("mtls")
            if not tls and not dr:  # the mesh's default is auto mTLS: plaintext is a DestinationRule away
                b.cli("apply", "-f", "-", input=PLAINTEXT_DR)
                dr = True
            elif tls and dr:
                b.cli("delete", "destinationrule", "echo")
                dr = False
            want = TELEMETRY.get(mode)  # TELEMETRY_OFF: what the generated config costs apart from telemetry
            if want is not None and want != tel:
                b.cli("apply", "-f", "-", input=want)
            elif want is None and tel is not None:
                b.cli("delete", "telemetry", "mesh-default", "-n", "istio-system")
            tel = want
            time.sleep(3)  # debounce + push
            b.start_bare(tls)
            for path in ("mesh", "bare"):  # warm-up: connections, certificates, first requests
                b.one(path, "paced", rate)
            out: list[Run] = []
            for load in ("paced", "saturation"):
                for i in range(pairs):
                    order = ("bare", "mesh") if i % 2 == 0 else ("mesh", "bare")
                    for path in order:
                        out.append(b.one(path, load, rate))
            runs[mode] = [asdict(r) for r in out]
    finally:
        b.down()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"seconds": seconds, "rate": rate, "pairs": pairs, "runs": runs, "wall_s": round(time.time() - started)}


def goal_rows(r: dict) -> list[Row]:
    """Issue 15 goal 1 as rows of the goals table (bench/table.py): per mode, mesh vs bare of the same pairs."""
    out: list[Row] = []
    for mode, rs in r["runs"].items():
        def side(load: str, key: str, path: str) -> list[float]:
            return [x[key] for x in rs if x["load"] == load and x["path"] == path]
        base = "two bare Envoys, same capture"
        for load, key, what, fmt, lo, hi in (
                ("paced", "p50_ms", "p50 ms at 1000 rps paced", ".2f", None, 1.05),
                ("paced", "p99_ms", "p99 ms at 1000 rps paced", ".2f", None, 1.05),
                ("saturation", "rps", "throughput at saturation, requests/s", ".0f", 0.95, None),
                ("saturation", "p99_ms", "p99 ms at saturation", ".2f", None, 1.10)):
            target = f"≥ {lo:.2f}×" if lo is not None else f"≤ {hi:.2f}×"
            out.append(Row(f"1. data path ({mode}): {what}", target, side(load, key, "mesh"), side(load, key, "bare"),
                           fmt, note=base, max_ratio=hi, min_ratio=lo))
    return out


def _pairs(rs: list[dict], load: str, key: str) -> list[float]:
    mesh = [r[key] for r in rs if r["load"] == load and r["path"] == "mesh"]
    bare = [r[key] for r in rs if r["load"] == load and r["path"] == "bare"]
    return [m / b for m, b in zip(mesh, bare) if b]


def _med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f}× ({min(xs):.2f}–{max(xs):.2f})" if xs else "-"


def markdown(r: dict) -> str:
    lines = []
    for mode, rs in r["runs"].items():
        lines += [f"**{mode}**: {MODE_TEXT.get(mode, mode)} (runs in order; CPU µs/request of the client-side and "
                  "server-side proxy):", "",
                  "| path | load | requests/s | p50 ms | p99 ms | requests | errors | CPU client µs/req | "
                  "CPU server µs/req |", "|---|---|---|---|---|---|---|---|---|"]
        for x in rs:
            lines.append(f"| {x['path']} | {x['load']} | {x['rps']:.0f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} | "
                         f"{x['requests']} | {x['errors']} | {x['cpu_client_us']:.0f} | {x['cpu_server_us']:.0f} |")
        lines += ["", "| mesh / bare, median of pairs (min–max) | paced | saturation | goal |", "|---|---|---|---|",
                  f"| p50 | {_med(_pairs(rs, 'paced', 'p50_ms'))} | {_med(_pairs(rs, 'saturation', 'p50_ms'))} | "
                  "≤ 1.05× paced |",
                  f"| p99 | {_med(_pairs(rs, 'paced', 'p99_ms'))} | {_med(_pairs(rs, 'saturation', 'p99_ms'))} | "
                  "≤ 1.05× paced, ≤ 1.10× saturation |",
                  f"| throughput | - | {_med(_pairs(rs, 'saturation', 'rps'))} | ≥ 0.95× saturation |",
                  f"| CPU client-side proxy per request | {_med(_pairs(rs, 'paced', 'cpu_client_us'))} | "
                  f"{_med(_pairs(rs, 'saturation', 'cpu_client_us'))} | |",
                  f"| CPU server-side proxy per request | {_med(_pairs(rs, 'paced', 'cpu_server_us'))} | "
                  f"{_med(_pairs(rs, 'saturation', 'cpu_server_us'))} | |", ""]
    lines.append(f"{r['pairs']} alternated pairs per load (bare first, then mesh first, ...), `hey -z {r['seconds']}s` "
                 f"paced at {r['rate']} rps and `wrk -t1 -c4 -d{r['seconds']}s` for saturation, from the client pod; "
                 f"the app is an Envoy answering 200 with a {BODY_BYTES} B body; {r['wall_s']} s in all.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--modes", default=",".join(MODES), help="plaintext (the mesh's defaults with a DestinationRule "
                    f"tls DISABLE), {STREAM} (metrics counted from the access-log stream), {TELEMETRY_OFF} (metrics "
                    f"and span reporting off), mtls, {MTLS_STREAM}")
    ap.add_argument("--output", default=None, help="append the markdown to this file")
    a = ap.parse_args(argv)
    md = markdown(run(a.seconds, a.rate, a.pairs, tuple(a.modes.split(","))))
    print(md)
    if a.output:
        with open(a.output, "a") as f:
            f.write("\n### Data path: two hops through the mesh vs two bare Envoys with the same capture\n\n" + md + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
