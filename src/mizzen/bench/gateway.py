"""The ingress gateway vs a bare Envoy with a static config, same run, paced load from the host (`hey -q`).

    hey (host) -> 127.0.0.1:18480 -> gateway pod's Envoy (xDS, Gateway + VirtualService) --mTLS--> echo's sidecar -> echo
    hey (host) -> 127.0.0.1:18481 -> bare Envoy (static config, in a sidecar-less pod) --plaintext--> echo's sidecar -> echo

Both Envoys run with --concurrency 1 in a pod's network namespace and bind their host port in the host's
namespace (`network_namespace_filepath`), so both paths cross the same veth/bridge and the same echo sidecar.
The gateway's extra cost is its routing config and mesh mTLS to the backend. Bounded: every run is
`hey -z <seconds>`; everything is torn down at the end. Never pass/fail.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ..envoybin import find_envoy
from .latency import mizzen
from .mtls import HeyResult, _cluster, _hcm, parse_hey

MESH = Path(__file__).resolve().parents[3] / "examples" / "bench" / "gateway-mesh.yaml"
GATEWAY_PORT, BARE_PORT = 18480, 18481
HOST = "bench.example.test"


def bare_config(echo_ip: str) -> dict:
    return {"static_resources": {
        "listeners": [{"name": "in", "address": {"socket_address": {
            "address": "127.0.0.1", "port_value": BARE_PORT,
            "network_namespace_filepath": f"/proc/{os.getpid()}/ns/net"}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": _hcm("bare", "echo")}]}]}],
        "clusters": [_cluster("echo", echo_ip, 8080)]}}


def run(seconds: int = 10, rate: int = 500) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="mizzen-bench-gateway-"))
    state = tmp / ".mizzen"
    base = [sys.executable, "-m", "mizzen.cli.main"]
    bare: subprocess.Popen | None = None

    cli = functools.partial(mizzen, state)

    def hey(port: int) -> HeyResult:
        workers = max(1, rate // 100)
        p = subprocess.run(["hey", "-z", f"{seconds}s", "-c", str(workers), "-q", str(rate // workers),
                            "-host", HOST, f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
                           timeout=seconds + 60)
        return parse_hey(p.stdout)

    try:
        cli("up", str(MESH), "--detach")
        pods = {p["workload"]: p for p in json.loads(cli("status", "-o", "json").stdout)["pods"]}
        path = tmp / "bare.yaml"
        path.write_text(yaml.safe_dump(bare_config(pods["echo"]["ip"])))
        bare = subprocess.Popen(["ip", "netns", "exec", pods["bare"]["netns"], find_envoy(None), "-c", str(path),
                                 "--concurrency", "1", "--disable-hot-restart", "--log-level", "warning"],
                                stdout=open(tmp / "bare.log", "w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the gateway's listener comes over xDS; the bare one at start
            ok = [subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Host: {HOST}",
                                  f"http://127.0.0.1:{p}/"], capture_output=True, text=True).stdout == "200"
                  for p in (GATEWAY_PORT, BARE_PORT)]
            if all(ok):
                break
            time.sleep(0.5)
        hey(GATEWAY_PORT)  # warm-up
        hey(BARE_PORT)
        gw, bare_r = hey(GATEWAY_PORT), hey(BARE_PORT)
        gw2, bare2 = hey(GATEWAY_PORT), hey(BARE_PORT)  # interleaved twice
    finally:
        if bare is not None:
            bare.terminate()
            try:
                bare.wait(10)
            except subprocess.TimeoutExpired:
                bare.kill()
        subprocess.run([*base, "down", "--state-dir", str(state)], capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)
    best = lambda a, b: a if a.p50_ms <= b.p50_ms else b  # noqa: E731  (the less disturbed of two runs)
    return {"seconds": seconds, "rate": rate, "gateway": best(gw, gw2).__dict__, "bare": best(bare_r, bare2).__dict__}


def markdown(r: dict) -> str:
    rows = ["| path | requests/s | p50 ms | p99 ms | 200s | errors |", "|---|---|---|---|---|---|"]
    for name, key in (("ingress gateway (xDS; Gateway + VirtualService; mTLS to the backend)", "gateway"),
                      ("bare Envoy, static config, plaintext to the backend's sidecar", "bare")):
        w = r[key]
        rows.append(f"| {name} | {w['rps']:.0f} | {w['p50_ms']:.2f} | {w['p99_ms']:.2f} | {w['ok']} | {w['errors']} |")
    g, b = r["gateway"], r["bare"]
    rows += ["", f"Gateway / bare Envoy: p50 {g['p50_ms'] / b['p50_ms']:.2f}×, p99 {g['p99_ms'] / b['p99_ms']:.2f}× "
                 f"(`hey -z {r['seconds']}s` from the host paced at {r['rate']} rps, the better of two interleaved "
                 f"runs each)."]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown(run()))
