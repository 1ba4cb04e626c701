"""The control-plane goals of issue 15 in one table: each goal, Mizzen's figure, and the same figure of a
baseline measured in the same run — the bare gRPC floor (`xds_floor.py`): the same load client, the same
resources and bytes, served by a Python gRPC server with no control-plane logic.  The ratio Mizzen/floor is
what Mizzen's own logic costs on top of what Python gRPC costs on this machine at that moment.

    python -m mizzen.bench.goals --proxies 1000,2000 --repeat 2      # prints markdown
"""
from __future__ import annotations

import argparse
import asyncio
import statistics

from .xds_load import BenchOptions, BenchResult, percentile, run_bench

DEBOUNCE_MS = 100  # the control plane's default quiet period, included in its push figures (not the floor's)


def _figures(r: BenchResult) -> dict[str, float]:
    o = r.options
    return {
        "sync": r.initial_sync_s,
        "p50": percentile(r.latencies_ms, 50),
        "p99": percentile(r.latencies_ms, 99),
        "cpu": r.cp_cpu_changes_s / max(1, o.changes) / o.proxies * 1000,  # ms per change per proxy
        "rss": r.cp_peak_rss_mb / o.proxies,
        "rss_total": r.cp_peak_rss_mb,
    }


def run(proxies: list[int], services: int = 1000, repeat: int = 2, changes: int = 5, workers: int = 2,
        log=print) -> list[tuple[int, list[dict[str, float]], list[dict[str, float]]]]:
    out = []
    for n in proxies:
        mz, fl = [], []
        for i in range(repeat if n <= 1000 else 1):
            log(f"$ mizzen bench xds --proxies {n} --services {services} --workers {workers} --changes {changes} --floor"
                f"  (run {i + 1})")
            r = asyncio.run(run_bench(BenchOptions(proxies=n, services=services, changes=changes, workers=workers,
                                                   floor=True, timeout=900)))
            mz.append(_figures(r))
            if r.floor is not None:
                fl.append(_figures(r.floor))
            log(r.row())
            if r.floor is not None:
                log(r.floor.row(" (floor)"))
        out.append((n, mz, fl))
    return out


def _spread(xs: list[float], fmt: str) -> str:
    if not xs:
        return "-"
    if len(xs) == 1:
        return format(xs[0], fmt)
    return f"{format(statistics.median(xs), fmt)} ({format(min(xs), fmt)}–{format(max(xs), fmt)})"


def markdown(results, services: int = 1000) -> str:
    rows = ["| goal | target | Mizzen | floor (same run) | ratio Mizzen/floor | met |", "|---|---|---|---|---|---|"]
    for n, mz, fl in results:
        def line(goal: str, target: str, key: str, fmt: str, limit: float | None) -> None:
            a = [m[key] for m in mz]
            b = [f[key] for f in fl]
            ratios = [x / y for x, y in zip(a, b) if y]
            met = "-" if limit is None or not a else ("yes" if statistics.median(a) < limit else "no")
            rows.append(f"| {goal} | {target} | {_spread(a, fmt)} | {_spread(b, fmt)} | {_spread(ratios, '.2f')} | {met} |")

        p99_goal = 200 if n <= 1000 else 400
        line(f"one endpoint change → all {n} proxies, p99 ms (Mizzen incl. {DEBOUNCE_MS} ms debounce)",
             f"< {p99_goal}", "p99", ".0f", p99_goal)
        line(f"… p50 ms, {n} proxies", "-", "p50", ".0f", None)
        line(f"control-plane CPU per change per proxy, ms ({n} proxies)", "≤ 0.05", "cpu", ".3f", 0.05)
        line(f"control-plane peak RSS per proxy, MB ({n} proxies × {services} services, no Sidecar)", "< 0.3",
             "rss", ".2f", 0.3)
        line(f"initial sync, {n} proxies × {services} services fully ACKed, s", "< 2" if n <= 1000 else "-",
             "sync", ".2f", 2.0 if n <= 1000 else None)
    runs = {n: len(mz) for n, mz, _ in results}
    return ("\n".join(rows) + "\n\nMedian (min–max) over " + ", ".join(f"{k} run(s) at {n} proxies" for n, k in runs.items())
            + "; each run is Mizzen, then the floor right after, so the ratio is taken within one run. "
            "Delta ADS, 2 load-client processes, client and server sharing the machine's 2 cores with whatever "
            "else runs. RSS per proxy is the whole process's peak RSS divided by the proxies (it includes the "
            "loaded store and snapshot). Data-path goals (1, 6) and scale goal 5 are not in this table.\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--proxies", default="1000,2000")
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args(argv)
    res = run([int(x) for x in a.proxies.split(",")], a.services, a.repeat)
    print(markdown(res, a.services))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
