"""The native and the Python xDS load clients side by side, against the same control plane build and the floor:
how much of `mizzen bench xds`'s figures is the load client itself (issue 15, goals 2–4).

    python -m mizzen.bench.xds_clients --proxies 200,1000 --repeat 2      # prints markdown

Per size and repeat, alternating: Mizzen + floor with the native client, then Mizzen + floor with the Python
client (each `run_bench(..., floor=True)`: Mizzen's run, the floor right after), so drift hits both clients.
Load average (1 min) is sampled before each run.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import time

from .xds_load import BenchOptions, BenchResult, percentile, run_bench

HEADER = ("| run | client | server | proxies | initial sync s | EDS p50 ms | EDS p99 ms | CP CPU ms per change per "
          "proxy | CP CPU s (sync) | client CPU s (sync) | client CPU s (changes) | missed | reconnects | load avg |\n"
          + "|---" * 14 + "|")


def row(k: int, client: str, server: str, r: BenchResult, load: float) -> str:
    o = r.options
    cpu = r.cp_cpu_changes_s / max(1, o.changes) / o.proxies * 1000
    return (f"| {k} | {client} | {server} | {o.proxies} | {r.initial_sync_s:.2f} | "
            f"{percentile(r.latencies_ms, 50):.0f} | {percentile(r.latencies_ms, 99):.0f} | {cpu:.3f} | {r.cp_cpu_sync_s:.2f} | {r.client_cpu_sync_s:.1f} | "
            f"{r.client_cpu_s - r.client_cpu_sync_s:.1f} | {r.missing} | {r.reconnects} | {load:.1f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--proxies", default="200,1000")
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--changes", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--clients", default="native,python")
    ap.add_argument("--no-floor", action="store_true")
    a = ap.parse_args(argv)
    print(HEADER, flush=True)
    k = 0
    for n in (int(x) for x in a.proxies.split(",") if x):
        for _ in range(a.repeat):
            for client in a.clients.split(","):
                k += 1
                load = os.getloadavg()[0]
                t = time.monotonic()
                r = asyncio.run(run_bench(BenchOptions(proxies=n, services=a.services, changes=a.changes,
                                                       workers=a.workers, floor=not a.no_floor, timeout=900,
                                                       client=client)))
                print(row(k, client, "mizzen", r, load), flush=True)
                if r.floor is not None:
                    print(row(k, client, "floor", r.floor, load), flush=True)
                print(f"<!-- run {k}: {time.monotonic() - t:.0f} s -->", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
