"""Benchmarks of the mesh's edges (never pass/fail; `make bench` appends the tables to docs/benchmarks.md).

1. SDK overhead per call: N sequential GETs over keep-alive with a plain `httpx.Client` to the backend's
   address vs `httpx.Client(transport=mesh.httpx_transport())` to `http://echo:8080/` (a real control plane
   process, a VirtualService and DestinationRule in force), same backend process, same run; plus the cost of
   the rules alone (plan + destination + endpoint choice) in process.
2. Proxyless vs sidecar gRPC latency (root: a `mizzen up` mesh in network namespaces): N sequential unary
   calls to `echo` (one replica with a sidecar) from a pod without a sidecar straight to the pod IP
   (baseline), from the same pod as a proxyless `xds:///` client, and from a pod with a sidecar (captured).
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from ..local.procs import free_ports

BACKEND = r"""
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def log_message(self, *a): pass
    def do_GET(self):
        b = b"ok\n"
        self.send_response(200); self.send_header("content-length", str(len(b))); self.end_headers()
        self.wfile.write(b)
s = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
s.serve_forever()
"""

GRPC_LATENCY = r"""
import json, sys, time, grpc
target, n = sys.argv[1], min(int(sys.argv[2]), 20000)
with grpc.insecure_channel(target) as ch:
    call = ch.unary_unary("/mizzen.Who/Call")
    for _ in range(50):
        call(b"", timeout=10)
    lat, errors = [], 0
    for _ in range(n):
        t = time.perf_counter()
        try:
            call(b"", timeout=10)
            lat.append(time.perf_counter() - t)
        except grpc.RpcError:
            errors += 1
print(json.dumps({"lat": lat, "errors": errors}))
"""


def _stats(lat: list[float]) -> dict[str, float]:
    lat = sorted(lat)
    return {"n": len(lat), "p50": lat[len(lat) // 2] * 1e3, "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3,
            "mean": statistics.fmean(lat) * 1e3}


def _cli(state: Path, *args: str, input: str | None = None) -> str:
    p = subprocess.run([sys.executable, "-m", "mizzen.cli.main", args[0], "--state-dir", str(state), *args[1:]],
                       capture_output=True, text=True, timeout=120, input=input)
    if p.returncode != 0:
        raise RuntimeError(f"mizzen {' '.join(args)} failed: {p.stdout}{p.stderr}")
    return p.stdout


SDK_CONFIG = """\
apiVersion: v1
kind: Service
metadata: {name: echo}
spec: {selector: {app: echo}, ports: [{port: 8080, name: http}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo
  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 5}}
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [echo]
  http:
  - match: [{headers: {x-canary: {exact: "yes"}}}]
    route: [{destination: {host: echo, subset: v1}}]
  - retries: {attempts: 2, retryOn: 5xx}
    route: [{destination: {host: echo, subset: v1}, weight: 100}]
"""


def run_sdk(calls: int = 2000) -> dict:
    import httpx

    from ..client import ApiClient
    from ..model.types import Instance
    from ..sdk import Mesh
    from ..sdk import rules as R

    home = Path(tempfile.mkdtemp(prefix="mz-bench-sdk-"))
    state = home / "state"
    state.mkdir()
    port = free_ports(1)[0]
    procs = [subprocess.Popen([sys.executable, "-c", BACKEND, str(port)]),
             subprocess.Popen([sys.executable, "-m", "mizzen.cli.main", "controlplane", "--state-dir", str(state)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    mesh = None
    try:
        api = ApiClient(str(state), timeout=2)
        deadline = time.monotonic() + 60
        while True:
            try:
                if api.healthz().get("ready"):
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("control plane not ready in 60 s")
            time.sleep(0.1)
        _cli(state, "apply", "-f", "-", input=SDK_CONFIG)
        api.put_instance(Instance(id="default.echo-0", namespace="default", workload="echo", address="127.0.0.1",
                                  ports=(8080,), labels=(("app", "echo"), ("version", "v1")), sidecar=False,
                                  source="static", port_map=((8080, port),)))
        mesh = Mesh(state_dir=str(state), workload="bench", labels={"app": "bench"}).start()
        out: dict = {}
        cases = (("plain httpx", f"http://127.0.0.1:{port}/", None),
                 ("mizzen.sdk transport", "http://echo:8080/", mesh.httpx_transport()))
        clients = {name: (httpx.Client(transport=t), url) for name, url, t in cases}
        lat: dict[str, list[float]] = {name: [] for name in clients}
        try:
            for c, url in clients.values():
                for _ in range(100):
                    c.get(url)
            rounds = 10  # interleaved, so both clients see the same machine load
            for i in range(rounds):
                order = list(clients) if i % 2 == 0 else list(reversed(list(clients)))
                for name in order:
                    c, url = clients[name]
                    for _ in range(calls // rounds):
                        t = time.perf_counter()
                        r = c.get(url)
                        lat[name].append(time.perf_counter() - t)
                        if r.status_code != 200:
                            raise RuntimeError(f"{name}: {r.status_code}")
        finally:
            for c, _ in clients.values():
                c.close()
        out.update({name: _stats(v) for name, v in lat.items()})
        call = R.Call("echo", 8080, "/", headers={})
        n = 20000
        t = time.perf_counter()
        for _ in range(n):
            plan = mesh.plan(call)
            assert plan is not None
            R.choose_destination(plan, 0.5)
        out["rules"] = {"plan_us": (time.perf_counter() - t) / n * 1e6}
        return out
    finally:
        if mesh is not None:
            mesh.close()
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(home, ignore_errors=True)


def sdk_markdown(r: dict, calls: int = 2000) -> str:
    base = r["plain httpx"]
    lines = ["| client | calls | p50 ms | p99 ms | mean ms | mean vs plain |", "|---|---|---|---|---|---|"]
    for name in ("plain httpx", "mizzen.sdk transport"):
        s = r[name]
        lines.append(f"| {name} | {s['n']} | {s['p50']:.3f} | {s['p99']:.3f} | {s['mean']:.3f} | "
                     f"{s['mean'] / base['mean']:.2f} |")
    over = r["mizzen.sdk transport"]["mean"] - base["mean"]
    lines.append("")
    lines.append(f"SDK overhead per call: {over * 1000:.0f} µs mean ({calls} sequential keep-alive GETs each, in 10 "
                 f"interleaved rounds, one backend process, same run); the rules alone (plan + weighted choice, in process): "
                 f"{r['rules']['plan_us']:.1f} µs per call.")
    return "\n".join(lines)


def _proxyless_mesh(app_py: str) -> str:
    def echo(v: str) -> str:
        return textwrap.dedent(f"""\
            ---
            apiVersion: mizzen.dev/v1
            kind: Workload
            metadata: {{name: echo-{v}, labels: {{app: echo, version: {v}}}}}
            spec: {{command: [{sys.executable}, {app_py}], ports: [{{containerPort: 50051}}]}}
            """)

    return textwrap.dedent("""\
        apiVersion: v1
        kind: Service
        metadata: {name: echo}
        spec: {selector: {app: echo}, ports: [{port: 50051, name: grpc}]}
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: echo}
        spec: {host: echo, subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]}
        ---
        apiVersion: mizzen.dev/v1
        kind: Workload
        metadata: {name: plain, labels: {app: plain}, annotations: {mizzen.dev/proxyless: "true"}}
        spec: {sidecar: false, command: [sleep, "86400"]}
        ---
        apiVersion: mizzen.dev/v1
        kind: Workload
        metadata: {name: meshed, labels: {app: meshed}}
        spec: {command: [sleep, "86400"]}
        """) + echo("v1") + echo("v2") + "---\n" + _to("v1")


def _to(subset: str) -> str:
    return textwrap.dedent(f"""\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {{name: echo}}
        spec: {{hosts: [echo], http: [{{route: [{{destination: {{host: echo, subset: {subset}}}}}]}}]}}
        """)


FOLLOW = r"""
import json, sys, time, grpc
target, seconds = sys.argv[1], min(float(sys.argv[2]), 120)
last = None
end = time.monotonic() + seconds
with grpc.insecure_channel(target) as ch:
    call = ch.unary_unary("/mizzen.Who/Call")
    while time.monotonic() < end:
        try:
            by = call(b"", timeout=2).decode()
        except grpc.RpcError as e:
            by = "error:" + e.code().name
        if by != last:
            print(json.dumps({"t": time.time(), "by": by}), flush=True)
            last = by
        time.sleep(0.002)
"""


def _follow(state: Path, boot: Path, flips: int = 6) -> list[float]:
    """Seconds from a VirtualService apply (committed) until a proxyless client's calls go to the new subset."""
    import threading

    from ..client import ApiClient

    argv = [sys.executable, "-m", "mizzen.cli.main", "exec", "--state-dir", str(state), "plain-0", "--", "env",
            f"GRPC_XDS_BOOTSTRAP={boot}", sys.executable, "-c", FOLLOW, "xds:///echo:50051", str(20 + flips * 6)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen: list[dict] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                seen.append(json.loads(line))
            except ValueError:
                pass

    threading.Thread(target=read, daemon=True).start()
    api = ApiClient(str(state), timeout=30)
    out: list[float] = []
    try:
        deadline = time.monotonic() + 20
        while not any(x["by"].startswith("echo-v1") for x in seen):
            if time.monotonic() > deadline:
                raise RuntimeError(f"proxyless client never reached echo-v1: {seen[-3:]}")
            time.sleep(0.05)
        for i in range(flips):
            to = "v2" if i % 2 == 0 else "v1"
            n = len(seen)
            api.apply([("vs.yaml", _to(to))])
            t0 = time.time()
            deadline = time.monotonic() + 10
            while True:
                hit = [x for x in seen[n:] if x["by"].startswith(f"echo-{to}")]
                if hit:
                    out.append(max(0.0, hit[0]["t"] - t0))
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"change to {to} not followed in 10 s")
                time.sleep(0.01)
            time.sleep(1.0)
    finally:
        proc.terminate()
        proc.wait(10)
    return out


WHO_SERVER = r"""
import os
from concurrent import futures
import grpc
pod = os.environ.get("POD_NAME", "echo")
s = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("mizzen.Who", {
    "Call": grpc.unary_unary_rpc_method_handler(lambda req, ctx: pod.encode())}),))
s.add_insecure_port("0.0.0.0:" + os.environ.get("PORT_50051", "50051"))
s.start()
s.wait_for_termination()
"""


def run_proxyless(calls: int = 2000) -> dict:
    if os.geteuid() != 0:
        return {"skipped": "needs root (network namespaces)"}
    home = Path(tempfile.mkdtemp(prefix="mizzen-bench-pl-"))
    state = home / ".mizzen"
    app = home / "who_server.py"
    app.write_text(WHO_SERVER)
    mesh_file = home / "mesh.yaml"
    mesh_file.write_text(_proxyless_mesh(str(app)))
    out: dict = {}
    try:
        _cli(state, "up", str(mesh_file), "--detach")
        boot = home / "plain.bootstrap.json"
        _cli(state, "proxyless-bootstrap", "plain", "-o", str(boot))
        echo_ip = None
        from ..client import ApiClient
        for inst in ApiClient(str(state)).instances():
            if inst.get("workload") == "echo-v1":
                echo_ip = inst["address"]
        if echo_ip is None:
            raise RuntimeError("echo has no instance")
        cases = (("direct to the pod IP (no sidecar, baseline)", "plain-0", f"{echo_ip}:50051", {}),
                 ("proxyless xds:/// (no sidecar)", "plain-0", "xds:///echo:50051", {"GRPC_XDS_BOOTSTRAP": str(boot)}),
                 ("through the caller's sidecar", "meshed-0", "echo:50051", {}))
        time.sleep(2)
        for name, pod, target, env in cases:
            argv = [sys.executable, "-m", "mizzen.cli.main", "exec", "--state-dir", str(state), pod, "--", "env",
                    *[f"{k}={v}" for k, v in env.items()], sys.executable, "-c", GRPC_LATENCY, target, str(calls)]
            p = subprocess.run(argv, capture_output=True, text=True, timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"{name}: {p.stderr[-2000:]}")
            r = json.loads(p.stdout.strip().splitlines()[-1])
            out[name] = {**_stats(r["lat"]), "errors": r["errors"]}
        out["follow"] = _follow(state, boot)
        return out
    finally:
        subprocess.run([sys.executable, "-m", "mizzen.cli.main", "down", "--state-dir", str(state)],
                       capture_output=True, timeout=180)
        shutil.rmtree(home, ignore_errors=True)


def proxyless_markdown(r: dict, calls: int = 2000) -> str:
    if "skipped" in r:
        return f"skipped: {r['skipped']}"
    names = [n for n in r if n != "follow"]
    base = r[names[0]]
    lines = ["| caller | calls | p50 ms | p99 ms | mean ms | p50 vs baseline | errors |", "|---|---|---|---|---|---|---|"]
    for name in names:
        s = r[name]
        lines.append(f"| {name} | {s['n']} | {s['p50']:.3f} | {s['p99']:.3f} | {s['mean']:.3f} | "
                     f"{s['p50'] / base['p50']:.2f} | {s['errors']} |")
    lines.append("")
    lines.append(f"{calls} sequential unary calls per caller on one channel (after 50 warm-up calls), grpcio "
                 "clients in pods, `echo` = one replica with its sidecar (inbound capture) in every case.")
    if r.get("follow"):
        f = sorted(r["follow"])
        lines.append("")
        lines.append(f"A proxyless client follows a VirtualService change (all traffic to the other subset) in "
                     f"{', '.join(f'{x:.2f}' for x in r['follow'])} s (median {f[len(f) // 2]:.2f} s, max "
                     f"{f[-1]:.2f} s; from the apply's commit to the first call answered by the new subset; "
                     f"control plane debounce 0.1 s).")
    return "\n".join(lines)


__all__ = ["proxyless_markdown", "run_proxyless", "run_sdk", "sdk_markdown"]
