"""Added latency of a global rate limit on a two-hop request at a fixed rate (part of `make bench`).

A real mesh (examples/bench/mesh.yaml, netns mode, the rate-limit service started by `mizzen up`) and one
RateLimit (host echo, mode global, path /limited, a limit far above the load so every request is admitted):
the client's sidecar asks the rate-limit service for every /limited request. `hey` at a fixed rate inside the
client pod, /free and /limited alternately (each twice, the first a warm-up), same mesh, same run.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MESH = Path(__file__).resolve().parents[3] / "examples" / "bench" / "mesh.yaml"
LIMIT = """apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: bench}
spec:
  host: echo
  mode: global
  limits: [{name: bench, match: {uri: {prefix: /limited}}, requestsPerUnit: 1000000, unit: second}]
"""


def parse_hey(out: str) -> dict[str, float]:
    r: dict[str, float] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    for p in ("50", "90", "99"):
        m = re.search(rf"^\s+{p}% in ([\d.]+) secs", out, re.M)
        r[f"p{p}"] = float(m.group(1)) * 1000 if m else float("nan")
    codes = dict(re.findall(r"\[(\d{3})\]\s+(\d+) responses", out))
    r["ok"] = float(codes.get("200", 0))
    r["other"] = float(sum(int(v) for k, v in codes.items() if k != "200"))
    m = re.search(r"Error distribution:(.*)", out, re.S)
    r["errors"] = float(sum(int(x) for x in re.findall(r"\[(\d+)\]", m.group(1)))) if m else 0.0
    return r


def run(seconds: int = 10, rate: int = 1000, workers: int = 10) -> dict:
    state = Path(tempfile.mkdtemp(prefix="mizzen-bench-rl-")) / ".mizzen"
    base = [sys.executable, "-m", "mizzen.cli.main"]

    def cli(*args: str, timeout: float = 300, input: str | None = None) -> subprocess.CompletedProcess:
        p = subprocess.run([*base, args[0], "--state-dir", str(state), *args[1:]], capture_output=True,
                           text=True, timeout=timeout, input=input)
        if p.returncode != 0:
            raise RuntimeError(f"mizzen {args[0]} failed: {p.stdout}\n{p.stderr}")
        return p

    def hey(path: str) -> dict[str, float]:
        out = cli("exec", "client", "--", "hey", "-z", f"{seconds}s", "-c", str(workers), "-q",
                  str(rate // workers), f"http://echo:8080{path}", timeout=seconds + 60).stdout
        return parse_hey(out)

    try:
        cli("up", str(MESH), "--detach")
        cli("apply", "-f", "-", input=LIMIT)
        for _ in range(60):  # every proxy has it
            items = json.loads(cli("proxy-status", "-o", "json").stdout)["items"]
            if items and all(t.get("state") in ("SYNCED", "NOT_SENT") for p in items for t in p["types"].values()):
                break
        # which engine the mesh's rate-limit service runs (`--engine auto`: the native binary when it is built)
        engine = "native" if subprocess.run(["pgrep", "-f", "mizzen-rls "], capture_output=True).returncode == 0 \
            else "python"
        out = {}
        for path in ("/free", "/limited", "/free", "/limited"):
            out[path] = hey(path)  # the second run of each is kept (the first warms connections up)
    finally:
        subprocess.run([*base, "down", "--state-dir", str(state)], capture_output=True, timeout=120)
        shutil.rmtree(state.parent, ignore_errors=True)
    return {"seconds": seconds, "rate": rate, "workers": workers, "engine": engine, **out}


def markdown(r: dict) -> str:
    rows = ["| path | requests/s | p50 ms | p90 ms | p99 ms | non-200 | errors |", "|---|---|---|---|---|---|---|"]
    for name, key in (("two hops, no limit", "/free"), ("two hops, global limit (RLS call at the caller)", "/limited")):
        w = r[key]
        rows.append(f"| {name} | {w['rps']:.0f} | {w['p50']:.2f} | {w['p90']:.2f} | {w['p99']:.2f} | "
                    f"{w['other']:.0f} | {w['errors']:.0f} |")
    rows += ["", f"Added by the global limit: p50 {r['/limited']['p50'] - r['/free']['p50']:+.2f} ms, p99 "
             f"{r['/limited']['p99'] - r['/free']['p99']:+.2f} ms (hey -q {r['rate'] // r['workers']} -c "
             f"{r['workers']}: {r['rate']} requests/s for {r['seconds']} s; in-memory rate-limit service on "
             f"STATE/ratelimit.sock, {r.get('engine', 'python')} engine; Envoy --concurrency 1)."]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown(run()))
