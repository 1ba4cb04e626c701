"""Two-hop latency through the mesh vs direct, on the same run (wrk inside the pods, bounded in time).

client --(its sidecar)--(echo's sidecar)--> echo   vs   client-direct --> echo-direct (pod IP, no sidecars)
"""
from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

MESH = Path(__file__).resolve().parents[3] / "examples" / "bench" / "mesh.yaml"
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    requests: int


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> WrkResult:
    lat = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    errs = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errs += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errs += int(m.group(1))
    return WrkResult(rps, _ms(lat["50"]), _ms(lat["90"]), _ms(lat["99"]), errs, reqs)


def mizzen(state: Path | str, *args: str, timeout: float = 300, input: str | None = None) -> subprocess.CompletedProcess:
    """`mizzen ARGS[0] --state-dir STATE ARGS[1:]` (this interpreter's); a failure raises with its output. The
    benchmarks' one way to drive their mesh (`functools.partial(mizzen, state)`)."""
    p = subprocess.run([sys.executable, "-m", "mizzen.cli.main", args[0], "--state-dir", str(state), *args[1:]],
                       capture_output=True, text=True, timeout=timeout, input=input)
    if p.returncode != 0:
        raise RuntimeError(f"mizzen {args[0]} failed: {p.stdout}\n{p.stderr}")
    return p


def run(seconds: int = 10, connections: int = 8, rate_note: str = "") -> dict:
    state = Path(tempfile.mkdtemp(prefix="mizzen-bench-")) / ".mizzen"
    base = [sys.executable, "-m", "mizzen.cli.main"]

    cli = functools.partial(mizzen, state)

    def wrk(pod: str, url: str) -> WrkResult:
        out = cli("exec", pod, "--", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url,
                  timeout=seconds + 60).stdout
        return parse_wrk(out)

    try:
        cli("up", str(MESH), "--detach")
        status = json.loads(cli("status", "-o", "json").stdout)
        direct_ip = next(p["ip"] for p in status["pods"] if p["workload"] == "echo-direct")
        wrk("client", "http://echo:8080/")  # warm-up: connections, Envoy's first requests
        mesh = wrk("client", "http://echo:8080/")
        direct = wrk("client-direct", f"http://{direct_ip}:8080/")
    finally:
        subprocess.run([*base, "down", "--state-dir", str(state)], capture_output=True, timeout=120)
    return {"seconds": seconds, "connections": connections, "mesh": mesh.__dict__, "direct": direct.__dict__}


def markdown(r: dict) -> str:
    rows = ["| path | requests/s | p50 ms | p90 ms | p99 ms | errors |", "|---|---|---|---|---|---|"]
    for name, key in (("two hops (client → sidecar → sidecar → echo)", "mesh"), ("direct (pod IP)", "direct")):
        w = r[key]
        rows.append(f"| {name} | {w['rps']:.0f} | {w['p50_ms']:.2f} | {w['p90_ms']:.2f} | {w['p99_ms']:.2f} | "
                    f"{w['errors']} |")
    added = r["mesh"]["p50_ms"] - r["direct"]["p50_ms"]
    rows.append("")
    rows.append(f"Added p50 latency of two sidecar hops: {added:.2f} ms "
                f"(wrk -t1 -c{r['connections']} -d{r['seconds']}s, Envoy --concurrency 1).")
    return "\n".join(rows)
