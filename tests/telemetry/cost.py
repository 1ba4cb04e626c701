"""What telemetry costs on the data path: two-hop p50/p99 at a fixed rate with it off and on, same run.

    .venv/bin/python -m tests.telemetry.cost [--rps 1000] [--seconds 15] [--rounds 3]

Variants (each a fresh rig of real Envoys; rounds interleave the variants so drift hits all alike):
  off        no telemetry config at all
  stats      Envoy's own stats only (what option (a) of docs/observability.md would add: nothing on the path)
  als        the access-log stream to the agents' receivers (option (b)), 1 s batches
  als+trace  the same plus OpenTelemetry tracing at 1 % sampling to an OTLP receiver
Load: `hey` (Debian), `-c 10 -q rps/10`, keep-alive, bounded by -z. Not a pass/fail test: ratios are printed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from tests.telemetry.rig import INSTANCES, SERVICES, Options, Rig, free_port


def hey(url: str, rps: int, seconds: int) -> dict:
    conc = 10
    out = subprocess.run(["hey", "-z", f"{seconds}s", "-c", str(conc), "-q", str(max(rps // conc, 1)),
                          "-host", "reviews:9080", url], capture_output=True, text=True, timeout=seconds + 60).stdout
    lat = {k: float(v) * 1000 for k, v in re.findall(r"\s+(\d+)%% in ([\d.]+) secs".replace("%%", "%"), out)}
    rps_done = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", out))
    return {"p50": lat.get("50"), "p90": lat.get("90"), "p99": lat.get("99"), "rps": rps_done, "codes": codes}


class Receivers:
    def __init__(self, work: str, admin: dict | None = None, top_sampling_seconds: float = 120.0) -> None:
        self.work = work
        self.socks = (os.path.join(work, "a-als.sock"), os.path.join(work, "b-als.sock"))
        self.ports = (free_port(), free_port())
        cfg = {"instances": INSTANCES, "services": SERVICES, "topSamplingSeconds": top_sampling_seconds, "sidecars": [
            {"socket": self.socks[0], "httpPort": self.ports[0], "workload": "productpage-v1",
             "namespace": "default", "labels": {"app": "productpage", "version": "v1"}},
            {"socket": self.socks[1], "httpPort": self.ports[1], "workload": "reviews-v1", "namespace": "default",
             "labels": {"app": "reviews", "version": "v1"}, "portServices": {"9080": "reviews.default.svc.cluster.local"}},
        ]}
        if admin:  # each receiver merges its Envoy's stats into its scrape (and renames Envoy-native metrics)
            for sc, who in zip(cfg["sidecars"], ("a", "b")):
                sc["envoyAdmin"] = admin[who]
        path = os.path.join(work, "agents.json")
        json.dump(cfg, open(path, "w"))
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.telemetry.agentproc", path], stdout=subprocess.PIPE,
                                     stderr=open(os.path.join(work, "agents.log"), "wb"), text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.stop()
            raise RuntimeError("receivers did not start: " + open(os.path.join(work, "agents.log")).read())

    def metrics(self, i: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[i]}/stats/prometheus", timeout=5) as r:
            return r.read().decode()

    def top(self, i: int) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[i]}/telemetry/top", timeout=5) as r:
            return json.loads(r.read().decode())

    def window(self, i: int) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[i]}/telemetry/window", timeout=5) as r:
            return json.loads(r.read().decode())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its waited-for children), from /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def run_variant(name: str, rps: int, seconds: int) -> dict:
    work = tempfile.mkdtemp(prefix="mizzen-telemetry-cost-")
    recv = otlp = None
    try:
        opts = Options()
        if name.startswith("als"):
            recv = Receivers(work)
            opts.metrics = True
            opts.telemetry_sockets = recv.socks
        if name == "als+trace":
            otlp_sock = os.path.join(work, "otlp.sock")
            otlp = subprocess.Popen([sys.executable, "-m", "mizzen.telemetry.otlp_server", "--unix", otlp_sock],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            otlp.stdout.readline()
            opts.tracing, opts.sampling = "otel", 1.0
            opts.traces_address = {"pipe": {"path": otlp_sock}}
        with Rig(opts, work=work) as rig:
            hey(rig.url, rps, 2)  # warm-up: connections, first requests
            envoys = [rig.by_name["a"].pid, rig.by_name["b"].pid]
            others = [x.pid for x in (recv.proc if recv else None, otlp) if x is not None]
            c0 = [cpu_seconds(p) for p in envoys], [cpu_seconds(p) for p in others]
            r = hey(rig.url, rps, seconds)
            c1 = [cpu_seconds(p) for p in envoys], [cpu_seconds(p) for p in others]
            done = r["rps"] * seconds / 1000.0
            r["sidecar_cpu_ms_per_1k"] = round(sum(b - a for a, b in zip(c0[0], c1[0])) * 1000 / done, 1)
            r["agent_cpu_ms_per_1k"] = round(sum(b - a for a, b in zip(c0[1], c1[1])) * 1000 / done, 1)
            if recv is not None:
                time.sleep(1.5)
                text = recv.metrics(1)
                m = re.search(r'istio_requests_total\{[^}]*reporter="destination"[^}]*\} (\d+)', text)
                r["istio_requests_total(destination)"] = int(m.group(1)) if m else 0
        return r
    finally:
        if recv is not None:
            recv.stop()
        if otlp is not None:
            otlp.terminate()
            otlp.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rps", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default="off,als,als+trace")
    a = ap.parse_args()
    variants = a.variants.split(",")
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for rnd in range(a.rounds):
        for v in variants:
            r = run_variant(v, a.rps, a.seconds)
            results[v].append(r)
            print(json.dumps({"round": rnd, "variant": v, **r}), flush=True)
    base = results[variants[0]]
    print("\n| variant | p50 ms | p99 ms | p50 ratio | p99 ratio | sidecars' CPU ms / 1000 req | agents' CPU ms / 1000 req |")
    print("|---|---|---|---|---|---|---|")
    b50 = statistics.median(x["p50"] for x in base)
    b99 = statistics.median(x["p99"] for x in base)
    for v in variants:
        p50 = statistics.median(x["p50"] for x in results[v])
        p99 = statistics.median(x["p99"] for x in results[v])
        cpu = statistics.median(x["sidecar_cpu_ms_per_1k"] for x in results[v])
        acpu = statistics.median(x["agent_cpu_ms_per_1k"] for x in results[v])
        print(f"| {v} | {p50:.2f} | {p99:.2f} | {p50 / b50:.3f} | {p99 / b99:.3f} | {cpu:.1f} | {acpu:.1f} |")


if __name__ == "__main__":
    main()
