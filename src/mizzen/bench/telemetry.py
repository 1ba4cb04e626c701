"""What telemetry costs (docs/observability.md), in `make bench`; never pass/fail.

1. The data path, on a real mesh (`mizzen up`, netns): client -> its sidecar -> echo's sidecar -> echo, at a
   fixed rate (`hey -c 10 -q rps/10`, keep-alive, bounded by -z) from inside the client pod. Telemetry is
   switched at runtime by a mesh-wide Telemetry between runs of the same mesh, rounds interleaving the
   variants so drift hits all alike; medians reported, ratios against `off` of the same run:
     off              no access-log stream, no tracer (the tap filter, inert, stays in both)
     on               the default: metrics on both sides (1 s batches) + tracing at 1 %
     metrics only     the access-log stream, no tracer
     server side only metrics from the callee's sidecar only (a Telemetry override), tracing at 1 %
     5 s batches      the default with `reportingInterval: 5s`
   plus CPU per 1000 requests of the two sidecar Envoys, their agents, and the control plane (spans).
2. The control plane's CPU to serve `mizzen stat` (GET /api/v1/telemetry/windows) for 100 workloads: a real
   control plane process; 100 agents' control sockets answered by one stand-in process (realistic windows).

    python -m mizzen.bench.telemetry [--rps 1000] [--seconds 10] [--rounds 3] [--workloads 100]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..client import ApiClient, StateLayout

MESH = Path(__file__).resolve().parents[3] / "examples" / "bench" / "telemetry.yaml"

_TEL = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: mesh-default, namespace: istio-system}}\n" \
       "spec: {spec}\n"
VARIANTS = {
    "off": "{tracing: [{disableSpanReporting: true}], metrics: [{overrides: [{disabled: true}]}]}",
    "on": None,  # the mesh default
    "metrics only": "{tracing: [{disableSpanReporting: true}]}",
    "server side only": "{metrics: [{overrides: [{match: {mode: CLIENT}, disabled: true}]}]}",
    "5 s batches": "{metrics: [{reportingInterval: 5s}]}",
}


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:13]) / os.sysconf("SC_CLK_TCK")


def parse_hey(out: str) -> dict:
    lat = {k: float(v) * 1000 for k, v in re.findall(r"\s+(\d+)% in ([\d.]+) secs", out)}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    codes = {k: int(v) for k, v in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    return {"p50": lat.get("50"), "p99": lat.get("99"), "rps": float(m.group(1)) if m else 0.0, "codes": codes}


class BenchMesh:
    def __init__(self) -> None:
        self.state = Path(tempfile.mkdtemp(prefix="mizzen-bench-tel-")) / ".mizzen"
        self.base = [sys.executable, "-m", "mizzen.cli.main"]

    def cli(self, *args: str, timeout: float = 300, stdin: str | None = None) -> subprocess.CompletedProcess:
        p = subprocess.run([*self.base, args[0], "--state-dir", str(self.state), *args[1:]], capture_output=True,
                           text=True, timeout=timeout, input=stdin)
        if p.returncode != 0:
            raise RuntimeError(f"mizzen {args[0]} failed: {p.stdout}\n{p.stderr}")
        return p

    def pids(self, pod: str) -> tuple[int, int]:
        st = json.loads(Path(StateLayout(str(self.state)).pod(pod).agent_state).read_text())
        return int(st["envoyPid"]), int(st["agentPid"])

    def cp_pid(self) -> int:
        return int(Path(StateLayout(str(self.state)).controlplane_pid(0)).read_text())

    def synced(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = json.loads(self.cli("proxy-status", "-o", "json").stdout)["items"]
            if items and all(t.get("state") in ("SYNCED", "NOT_SENT") for p in items for t in p["types"].values()):
                return
            time.sleep(0.5)
        raise RuntimeError("proxies did not sync")

    def set_variant(self, name: str) -> None:
        spec = VARIANTS[name]
        if spec is None:
            subprocess.run([*self.base, "delete", "--state-dir", str(self.state), "telemetry", "mesh-default", "-n",
                            "istio-system"], capture_output=True, timeout=60)
        else:
            self.cli("apply", "-f", "-", stdin=_TEL.format(spec=spec))
        self.synced()

    def hey(self, rps: int, seconds: int) -> dict:
        conc = 10
        out = self.cli("exec", "client", "--", "hey", "-z", f"{seconds}s", "-c", str(conc), "-q",
                       str(max(rps // conc, 1)), "http://echo:8080/", timeout=seconds + 120).stdout
        return parse_hey(out)


def data_path(rps: int = 1000, seconds: int = 10, rounds: int = 3, variants: list[str] | None = None,
              log=print) -> dict:
    variants = variants or list(VARIANTS)
    m = BenchMesh()
    results: dict[str, list[dict]] = {v: [] for v in variants}
    try:
        m.cli("up", str(MESH), "--detach")
        m.synced()
        for rnd in range(rounds):
            for v in variants:
                m.set_variant(v)
                m.hey(rps, 2)  # warm-up: connections, first requests after the change
                procs = {"sidecars": [m.pids("client-0")[0], m.pids("echo-0")[0]],
                         "agents": [m.pids("client-0")[1], m.pids("echo-0")[1]], "controlplane": [m.cp_pid()]}
                c0 = {k: sum(cpu_seconds(p) for p in ps) for k, ps in procs.items()}
                r = m.hey(rps, seconds)
                time.sleep(1.5 if v != "5 s batches" else 5.5)  # the last batch of entries reaches the agents
                c1 = {k: sum(cpu_seconds(p) for p in ps) for k, ps in procs.items()}
                done = max(r["rps"] * seconds, 1) / 1000.0
                for k in procs:
                    r[f"{k}_cpu_ms_per_1k"] = round((c1[k] - c0[k]) * 1000 / done, 1)
                results[v].append(r)
                log(json.dumps({"round": rnd, "variant": v, **r}))
    finally:
        subprocess.run([*m.base, "down", "--state-dir", str(m.state)], capture_output=True, timeout=180)
    return {"rps": rps, "seconds": seconds, "rounds": rounds, "results": results,
            "load": os.getloadavg()[0]}


def data_path_markdown(r: dict) -> str:
    res = r["results"]
    base = res["off"]

    def med(rows: list[dict], k: str) -> float:
        vals = [x[k] for x in rows if x.get(k) is not None]
        return statistics.median(vals) if vals else float("nan")
    b50, b99 = med(base, "p50"), med(base, "p99")
    out = ["| variant | achieved rps | p50 ms | p99 ms | p50 ratio | p99 ratio | sidecars' CPU ms / 1000 req | "
           "agents' CPU ms / 1000 req | control plane CPU ms / 1000 req | non-200 |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for v, rows in res.items():
        p50, p99 = med(rows, "p50"), med(rows, "p99")
        bad = sum(n for x in rows for c, n in x["codes"].items() if c != "200")
        out.append(f"| {v} | {med(rows, 'rps'):.0f} | {p50:.2f} | {p99:.2f} | {p50 / b50:.3f} | {p99 / b99:.3f} | "
                   f"{med(rows, 'sidecars_cpu_ms_per_1k'):.1f} | {med(rows, 'agents_cpu_ms_per_1k'):.1f} | "
                   f"{med(rows, 'controlplane_cpu_ms_per_1k'):.1f} | {bad} |")
    out.append("")
    out.append(f"Two hops (client → sidecar → sidecar → echo) in one mesh, `hey -c 10 -q {r['rps'] // 10}` for "
               f"{r['seconds']} s per run inside the client pod, {r['rounds']} rounds interleaving the variants "
               f"(switched at runtime by a mesh-wide Telemetry), medians; load average {r['load']:.1f} at the end.")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- mizzen stat

def _window(i: int, n: int, now: float) -> dict:
    """A realistic window of workload i: called by its neighbour, calling the next (two edges, both sides)."""
    from ..telemetry.istio import DURATION_BUCKETS_MS

    def row(reporter: str, src: int, dst: int) -> dict:
        counts = [0] * (len(DURATION_BUCKETS_MS) + 1)
        counts[2], counts[3], counts[4] = 500, 80, 20
        return {"reporter": reporter, "source_workload": f"wl-{src}", "source_workload_namespace": "default",
                "destination_workload": f"wl-{dst}", "destination_workload_namespace": "default",
                "destination_service": f"svc-{dst}.default.svc.cluster.local", "destination_version": "v1",
                "requests": 600, "success": 597, "durationCounts": counts, "durationSum": 3100.0}
    return {"seconds": 60.0, "buckets": list(DURATION_BUCKETS_MS), "workload": f"wl-{i}", "namespace": "default",
            "version": "v1", "rows": [row("destination", (i - 1) % n, i), row("source", i, (i + 1) % n)]}


def fake_agents_main(state: str, n: int) -> None:
    """One process answering `GET /telemetry/window` on the control sockets of n pods (prints "ready")."""
    from aiohttp import web

    from ..unixpath import serve_app

    async def run() -> None:
        layout = StateLayout(state)
        runners = []
        for i in range(n):
            pod = layout.pod(f"wl-{i}-0")
            os.makedirs(pod.path, exist_ok=True)
            doc = _window(i, n, time.time())

            async def window(request: web.Request, doc=doc) -> web.Response:
                return web.json_response(doc)
            app = web.Application()
            app.router.add_get("/telemetry/window", window)
            runners.append(await serve_app(app, pod.agent_socket))
        print("ready", flush=True)
        await asyncio.Event().wait()
    asyncio.run(run())


def stat_cost(workloads: int = 100, calls: int = 20, log=print) -> dict:
    state = tempfile.mkdtemp(prefix="mizzen-bench-stat-")
    cp = subprocess.Popen([sys.executable, "-m", "mizzen.cli.main", "controlplane", "--state-dir", state,
                           "--monitoring-port", "off", "--console-port", "off", "--log-level", "warning"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agents = subprocess.Popen([sys.executable, "-m", "mizzen.bench.telemetry", "--fake-agents", state,
                               "--workloads", str(workloads)], stdout=subprocess.PIPE, text=True)
    try:
        assert agents.stdout is not None and agents.stdout.readline().strip() == "ready"
        api = ApiClient(state, timeout=30)
        deadline = time.monotonic() + 90
        while True:
            try:
                if api.healthz().get("ready"):
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if time.monotonic() > deadline or cp.poll() is not None:
                raise RuntimeError("control plane did not start")
            time.sleep(0.2)
        from ..model.types import Instance
        for i in range(workloads):
            api.put_instance(Instance(id=f"default.wl-{i}-0", namespace="default", workload=f"wl-{i}",
                                      address=f"10.1.{i // 250}.{i % 250 + 1}", ports=(8080,),
                                      labels=(("app", f"wl-{i}"), ("version", "v1"))))
        api.telemetry_windows()  # warm-up
        c0, t0 = cpu_seconds(cp.pid), time.perf_counter()
        walls = []
        for _ in range(calls):
            t = time.perf_counter()
            got = api.telemetry_windows()
            walls.append((time.perf_counter() - t) * 1000)
        cpu = (cpu_seconds(cp.pid) - c0) * 1000 / calls
        from ..telemetry.golden import stat
        t = time.perf_counter()
        rows = stat(got["items"])
        stat_ms = (time.perf_counter() - t) * 1000
        r = {"workloads": workloads, "calls": calls, "windows": len(got["items"]), "errors": len(got["errors"]),
             "cp_cpu_ms_per_call": round(cpu, 1), "wall_p50_ms": round(statistics.median(walls), 1),
             "wall_max_ms": round(max(walls), 1), "client_stat_ms": round(stat_ms, 1), "rows": len(rows),
             "total_s": round(time.perf_counter() - t0, 1)}
        log(json.dumps(r))
        return r
    finally:
        for p in (agents, cp):
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        import shutil
        shutil.rmtree(state, ignore_errors=True)


def stat_markdown(r: dict) -> str:
    return ("| workloads | windows fetched | control-plane CPU ms per `mizzen stat` | wall p50 ms | wall max ms | "
            "client-side merge ms |\n|---|---|---|---|---|---|\n"
            f"| {r['workloads']} | {r['windows']} | {r['cp_cpu_ms_per_call']} | {r['wall_p50_ms']} | "
            f"{r['wall_max_ms']} | {r['client_stat_ms']} |\n\n"
            f"{r['calls']} calls of `GET /api/v1/telemetry/windows` (what `mizzen stat` asks) on a real control plane "
            f"whose {r['workloads']} sidecars' agent sockets are answered by one stand-in process (two edges per "
            "workload, both sides); CPU of the control-plane process from /proc.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rps", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--workloads", type=int, default=100)
    ap.add_argument("--skip-data-path", action="store_true")
    ap.add_argument("--output", help="append the results (markdown) to this file")
    ap.add_argument("--fake-agents", metavar="STATE_DIR", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.fake_agents:
        fake_agents_main(a.fake_agents, a.workloads)
        return 0
    md = ""
    if not a.skip_data_path:
        if os.geteuid() != 0:
            md += "### Telemetry on the data path\n\nskipped: needs root (network namespaces)\n\n"
        else:
            r = data_path(a.rps, a.seconds, a.rounds, a.variants.split(","))
            md += "### Telemetry on the data path\n\n" + data_path_markdown(r) + "\n\n"
    md += "### Control-plane CPU to serve `mizzen stat`\n\n" + stat_markdown(stat_cost(a.workloads)) + "\n"
    print(md)
    if a.output:
        with open(a.output, "a") as f:
            f.write("\n" + md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
