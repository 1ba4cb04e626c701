"""`make bench`: the benchmark suite. Never pass/fail: results are appended to docs/benchmarks.md.

0. Issue 15's goals at 1000 and 2000 proxies × 1000 services, each figure beside a baseline measured in the
   same run (bench/goals.py: the bare gRPC floor, bench/xds_floor.py; bare Envoys for memory, bench/sidecar.py);
   the table is written after step 3, so that goal 1's rows (the data path vs bare Envoys) are in it too.
1. xDS push at scale: `mizzen bench xds` for N proxies × M services (N, M ∈ {100, 1000}).
2. Config bytes and Envoy RSS per proxy with and without a Sidecar in a 1000-service mesh.
3. Two-hop latency through the mesh vs direct, on the same run; and issue 15 goal 1, the data path: the mesh vs two
   bare Envoys with the same iptables capture, paced and at saturation, plaintext and mTLS, alternated pairs
   (bench/datapath.py), what each per-request HCM feature costs one Envoy (bench/filtercost.py), and with
   valgrind a real sidecar hop vs a bare Envoy in instructions, its two large items taken out (bench/sidecarcost.py).
4. Registration throughput and apply latency on SQLite vs a 3-member etcd; Consul blocking-query wake-up.
5. The rate-limit service: decisions/s per core, p50/p99, in-memory and Redis, server variants
   (server/ratelimit_bench.py); the added latency of a global limit on a two-hop request at 1000 rps
   (bench/ratelimit_mesh.py).
6. Mesh mTLS: two hops with mTLS from SDS vs two bare Envoys with static mTLS at 1000 rps paced, and the TLS
   handshake cost per new connection (bench/mtls.py).
7. Telemetry: two-hop p50/p99 at 1000 rps with metrics and tracing (1 %) on vs off on one mesh, and the control
   plane's CPU to serve `mizzen stat` for 100 workloads (bench/telemetry.py).
8. The chaos soak: 30 minutes of random kills under 200 rps, control-plane and sidecar memory/fds each minute
   (chaos/bench.py).
9. The edges (bench/edges.py): mizzen.sdk's overhead per call vs plain httpx; proxyless gRPC vs a sidecar vs
   direct calls.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import shutil
import sys
from pathlib import Path

from . import datapath, distributed, edges, filtercost, gateway, goals, latency, mtls, sidecar, sidecarcost, telemetry


def _xds(n: int, m: int, output: Path, extra: list[str]) -> int:
    cmd = [sys.executable, "-m", "mizzen.cli.main", "bench", "xds", "--proxies", str(n), "--services", str(m),
           "--output", str(output), *extra]
    print("$", " ".join(cmd[2:]), flush=True)
    return subprocess.run(cmd, timeout=1800).returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--output", default="docs/benchmarks.md")
    ap.add_argument("--sizes", default="100x100,100x1000,1000x100",
                    help="comma-separated PROXIESxSERVICES")
    ap.add_argument("--workers", default="2")
    ap.add_argument("--goal-proxies", default="1000,2000", help="proxies for the goals table ('' to skip)")
    ap.add_argument("--goal-repeat", type=int, default=2, help="runs per size of the goals table (2000: one)")
    ap.add_argument("--goal-scale", default="2000x20000x400",
                    help="goal 5 in the goals table: SERVICESxENDPOINTSxPROXIES ('' to skip; the goal's "
                         "10000x100000x2000 does not finish on 2 cores: docs/benchmarks.md)")
    ap.add_argument("--latency-seconds", type=int, default=10)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-datapath", action="store_true", help="skip the mesh vs bare Envoys with the same capture")
    ap.add_argument("--skip-distributed", action="store_true", help="skip SQLite vs etcd and the Consul API")
    ap.add_argument("--skip-mtls", action="store_true", help="skip mesh mTLS vs bare Envoys with static mTLS")
    ap.add_argument("--skip-telemetry", action="store_true", help="skip the telemetry cost")
    ap.add_argument("--chaos-minutes", type=float, default=30.0, help="length of the chaos soak (0: skip it)")
    ap.add_argument("--skip-gateway", action="store_true", help="skip the ingress gateway vs a bare Envoy")
    ap.add_argument("--skip-edges", action="store_true", help="skip the SDK overhead and proxyless gRPC latency")
    a = ap.parse_args(argv)
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists():
        out.write_text("# Mizzen benchmarks\n\nAppended by `make bench`; never pass/fail. Newest last.\n")
    with out.open("a") as f:
        f.write(f"\n## {dt.datetime.now().isoformat(timespec='seconds')} — {platform.node()}, "
                f"{os.cpu_count()} cores, Python {platform.python_version()}\n\n")
        f.write(f"Command: `make bench` (`python -m mizzen.bench.run --sizes {a.sizes}`)\n\n")
    failures = 0
    goal1: list = []  # goal 1's rows, when the data-path step runs
    if a.goal_proxies:
        sizes = [int(x) for x in a.goal_proxies.split(",")]
        goal_results = goals.run(sizes, repeat=a.goal_repeat)
        if a.goal_scale:
            from . import scale

            goal_results.scale = scale.run(*(int(x) for x in a.goal_scale.lower().split("x")))
    with out.open("a") as f:
        f.write("### xDS push\n\n")
    for size in filter(None, a.sizes.split(",")):
        n, m = (int(x) for x in size.lower().split("x"))
        failures += _xds(n, m, out, ["--workers", a.workers, "--quiet"]) != 0
    print("$ Sidecar scoping (two real Envoys, 1000 services)", flush=True)
    md = sidecar.markdown(1000, goal_results.sidecar if a.goal_proxies else sidecar.run(services=1000))
    print(md)
    with out.open("a") as f:
        f.write("\n### Config and Envoy memory per proxy, with and without a Sidecar\n\n" + md + "\n")
    if not a.skip_latency:
        if os.geteuid() != 0:
            with out.open("a") as f:
                f.write("\n### Two-hop latency\n\nskipped: needs root (network namespaces)\n")
        else:
            print("$ two-hop latency (wrk in pods)", flush=True)
            r = latency.run(seconds=a.latency_seconds)
            md = latency.markdown(r)
            print(md)
            with out.open("a") as f:
                f.write("\n### Two-hop latency through the mesh vs direct\n\n" + md + "\n")
            if not a.skip_datapath:
                print("$ data path: mesh vs two bare Envoys with the same capture (python -m mizzen.bench.datapath)",
                      flush=True)
                dp = datapath.run(seconds=a.latency_seconds)
                goal1 = datapath.goal_rows(dp)
                md = datapath.markdown(dp)
                print(md)
                with out.open("a") as f:
                    f.write("\n### Data path: two hops through the mesh vs two bare Envoys with the same capture\n\n"
                            + md + "\n")
                print("$ data path: what each per-request HCM feature costs one Envoy (python -m mizzen.bench.filtercost)",
                      flush=True)
                md = filtercost.markdown(filtercost.run())
                print(md)
                with out.open("a") as f:
                    f.write("\n### Data path: what each per-request feature of a sidecar HCM costs one Envoy\n\n"
                            + md + "\n")
                if shutil.which("valgrind"):  # the same, counted in instructions (deterministic on a shared machine)
                    print("$ python -m mizzen.bench.filtercost --instructions 2000", flush=True)
                    md = filtercost.instructions_markdown(filtercost.instructions(2000))
                    print(md)
                    with out.open("a") as f:
                        f.write("\n### Data path: the same features in instructions per request (callgrind)\n\n"
                                + md + "\n")
                    # the real sidecar hop (dumped configs) vs the bare pair, with its two large items taken out;
                    # `python -m mizzen.bench.sidecarcost` alone bisects every piece
                    variants = ["bare", "mesh", "no-tracing", "no-tracing+no-stats-logger", "stripped"]
                    print(f"$ python -m mizzen.bench.sidecarcost --requests 1000 --variants {','.join(variants)}",
                          flush=True)
                    md = sidecarcost.markdown(sidecarcost.run(1000, variants=variants))
                    print(md)
                    with out.open("a") as f:
                        f.write("\n### Data path: a real sidecar hop vs a bare Envoy in instructions per request "
                                "(callgrind)\n\n" + md + "\n")
    if a.goal_proxies:  # one table: goals 2-6 (measured first) and goal 1 (the data-path step above)
        md = goals.markdown(goal_results, goal1)
        print(md)
        with out.open("a") as f:
            f.write("\n### Issue 15 goals: Mizzen vs a baseline of the same run\n\n"
                    f"`python -m mizzen.bench.goals --proxies {a.goal_proxies} --repeat {a.goal_repeat}"
                    f"{' --scale ' + a.goal_scale if a.goal_scale else ''}` and the data-path step\n\n" + md + "\n")
    if not a.skip_distributed:
        print("$ store/registry on SQLite vs etcd, Consul API blocking queries", flush=True)
        md = distributed.run()
        print(md)
        with out.open("a") as f:
            f.write("\n### Store and registry: SQLite vs etcd; Consul API wake-up\n\n" + md + "\n")
    print("$ rate-limit service (mizzen ratelimit)", flush=True)
    from ..server import ratelimit_bench

    md = ratelimit_bench.markdown(ratelimit_bench.run())
    print(md)
    with out.open("a") as f:
        f.write("\n### Rate-limit service (mizzen ratelimit)\n\n" + md + "\n")
    if not a.skip_mtls and os.geteuid() == 0:
        print("$ mesh mTLS vs two bare Envoys with static mTLS (hey in pods, paced)", flush=True)
        md = mtls.markdown(mtls.run())
        print(md)
        with out.open("a") as f:
            f.write("\n### Two hops with mTLS: the mesh (SDS) vs two bare Envoys with static mTLS\n\n" + md + "\n")
    if not a.skip_gateway and os.geteuid() == 0:
        print("$ ingress gateway vs a bare Envoy with a static config (hey from the host, paced)", flush=True)
        md = gateway.markdown(gateway.run())
        print(md)
        with out.open("a") as f:
            f.write("\n### Ingress gateway vs a bare Envoy with a static config\n\n" + md + "\n")
    if not a.skip_telemetry:
        print("$ telemetry cost (python -m mizzen.bench.telemetry)", flush=True)
        failures += telemetry.main(["--output", str(out)]) != 0
    if os.geteuid() == 0 and not a.skip_latency:
        from . import ratelimit_mesh

        print("$ global limit on a two-hop request at 1000 rps (hey in a pod)", flush=True)
        md = ratelimit_mesh.markdown(ratelimit_mesh.run(seconds=a.latency_seconds))
        print(md)
        with out.open("a") as f:
            f.write("\n### Global rate limit on a two-hop request, 1000 rps\n\n" + md + "\n")
    if a.chaos_minutes > 0:
        from ..chaos import bench as chaos_bench

        print(f"$ chaos soak ({a.chaos_minutes:g} minutes)", flush=True)
        md = chaos_bench.markdown(chaos_bench.run(a.chaos_minutes)) if os.geteuid() == 0 else \
            "skipped: needs root (network namespaces)\n"
        print(md)
        with out.open("a") as f:
            f.write("\n### Chaos soak\n\n" + md)
    if not a.skip_edges:
        print("$ mizzen.sdk overhead vs plain httpx; proxyless gRPC vs sidecar", flush=True)
        md = "\n### mizzen.sdk: overhead per call vs plain httpx\n\n" + edges.sdk_markdown(edges.run_sdk()) + "\n"
        md += "\n### Proxyless gRPC vs a sidecar vs direct\n\n" + edges.proxyless_markdown(edges.run_proxyless()) + "\n"
        print(md)
        with out.open("a") as f:
            f.write(md)
    print(f"results appended to {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
