"""Goal 5 of issue 15 (scale): S services with E endpoints in all, P proxies (half scoped by a Sidecar), then
registration churn at R changes/s for T s; p99 push latency of the timed changes (one a second), the control
plane's memory, and what was dropped (failed registrations, streams that never got a timed change).

    python -m mizzen.bench.scale 10000 100000 2000     # the goal's size; smaller sizes to find what fits
"""
from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

from .table import Row, table
from .xds_load import BenchOptions, BenchResult, percentile, run_bench


@dataclass
class ScaleResult:
    services: int
    endpoints: int
    proxies: int
    result: BenchResult | None = None
    error: str = ""  # why the run did not finish (then the figures are absent)
    wall_s: float = 0.0

    def rows(self):
        size = f"{self.services} services, {self.endpoints} endpoints, {self.proxies} proxies (half scoped)"
        r = self.result
        if r is None:
            return [Row(f"5. scale, {size}: did not finish ({self.error})", "finish", [], [], note="")]
        o = r.options
        return [
            Row(f"5. scale, {size}: initial sync, s", "-", [r.initial_sync_s], [], ".1f"),
            Row(f"5. … churn {o.churn_rate}/s for {o.churn_seconds:g} s: changes sent / failed", "0 failed",
                [float(r.churn_sent)], [], ".0f", note=f"{r.churn_failed} failed"),
            Row(f"5. … push latency of a change under churn → all {self.proxies} proxies, p99 ms", "-",
                [percentile(r.churn_latencies_ms, 99)], [percentile(r.latencies_ms, 99)], ".0f",
                note="the same change without churn, same run"),
            Row("5. … streams that missed a timed change (dropped)", "0", [float(r.churn_missing)], [], ".0f", 0.0),
            Row("5. … control-plane peak RSS, MB", "-", [r.cp_peak_rss_mb], [r.cp_rss_before_mb], ".0f",
                note="the same process before any proxy connected"),
        ]


def run(services: int, endpoints: int, proxies: int, rate: int = 100, seconds: float = 60.0,
        timeout: float = 1500, log=print) -> ScaleResult:
    out = ScaleResult(services, endpoints, proxies)
    t = time.monotonic()
    o = BenchOptions(proxies=proxies, services=services, instances=max(1, endpoints // services), scoped=True,
                     changes=3, workers=2, churn_rate=rate, churn_seconds=seconds, timeout=timeout)
    try:
        out.result = asyncio.run(run_bench(o, log=log))
    except (asyncio.TimeoutError, TimeoutError):
        out.error = f"not within {timeout:.0f} s"
    except Exception as e:  # noqa: BLE001 - reported in the table, with what stopped it
        out.error = repr(e).splitlines()[0][:200]
    out.wall_s = time.monotonic() - t
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("services", type=int)
    ap.add_argument("endpoints", type=int)
    ap.add_argument("proxies", type=int)
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--timeout", type=float, default=1500)
    a = ap.parse_args(argv)
    r = run(a.services, a.endpoints, a.proxies, a.rate, a.seconds, a.timeout,
            log=lambda s: print(time.strftime("%H:%M:%S"), s, flush=True))
    print(table(r.rows()))
    if r.result is not None:
        print(r.result.row())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
