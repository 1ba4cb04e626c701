"""The goals of issue 15 in one table: each goal, Mizzen's figure, and the same (or the nearest) figure of a
baseline measured in the same run, the ratio, and whether the goal is met.

Baselines, named in each row:
- the bare gRPC floor (`xds_floor.py`): the same load client, the same resources and bytes, served by a Python
  gRPC server with no control-plane logic, started right after Mizzen's run (control-plane rows);
- Mizzen's own steady-state figure of the same run where the floor cannot do the thing (a restart), and for a
  route change both: Mizzen's endpoint change (what the event costs over an endpoint change) and the floor
  writing the same whole RouteConfiguration to every stream (what its bytes cost on the wire);
- for Envoy memory (goal 6, `sidecar.py`): an Envoy with an empty bootstrap, and a bare Envoy with a minimal
  static config of the same clusters, both started in the same run.

    python -m mizzen.bench.goals --proxies 1000,2000 --repeat 2      # prints markdown
"""
from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field

from .table import Row, table
from .xds_load import BenchOptions, BenchResult, percentile, run_bench

DEBOUNCE_MS = 100  # the control plane's default quiet period, included in its push figures (not the floor's)
RESTART_STALL_S = 5.0  # "a few seconds"


@dataclass
class Results:
    runs: dict[int, list[BenchResult]] = field(default_factory=dict)  # proxies -> runs (unscoped)
    scoped: list[BenchResult] = field(default_factory=list)  # half the proxies scoped by a Sidecar
    sidecar: list = field(default_factory=list)  # sidecar.ProxyCost of one run
    scale: object | None = None  # scale.ScaleResult
    services: int = 1000
    client: str = "python"  # the load client of the xDS runs (xds_native.resolve)


def _figures(r: BenchResult) -> dict[str, float]:
    o = r.options
    return {
        "sync": r.initial_sync_s,
        "p50": percentile(r.latencies_ms, 50),
        "p99": percentile(r.latencies_ms, 99),
        "cpu": r.cp_cpu_changes_s / max(1, o.changes) / o.proxies * 1000,  # ms per change per proxy
        "rss": r.cp_peak_rss_mb / o.proxies,
        "rss_marginal": max(0.0, r.cp_peak_rss_mb - r.cp_rss_before_mb) / o.proxies,
        "route_p99": percentile(r.route_latencies_ms, 99),
        "restart_push": r.restart_push_s,
        "restart_ready": r.restart_ready_s,
        "restart_serve": r.restart_serve_max_s,
        "restart_last_open": r.restart_last_open_s,
        "all_mean_s": (sum(r.all_ms) / len(r.all_ms) / 1000) if r.all_ms else float("nan"),
    }


def run(proxies: list[int], services: int = 1000, repeat: int = 2, changes: int = 5, workers: int = 2,
        scoped: bool = True, sidecar_memory: bool = True, route_changes: int = 3, log=print,
        client: str = "auto") -> Results:
    from .xds_native import resolve

    client, why = resolve(client)
    log(f"load client: {client}" + (f" ({why})" if why else ""))
    out = Results(services=services, client=client)
    last = max(proxies) if proxies else 0
    for n in proxies:
        for i in range(repeat if n <= 1000 else 1):
            restart = n == last and i == 0
            log(f"$ mizzen bench xds --proxies {n} --services {services} --workers {workers} --changes {changes} --floor"
                f" --route-changes {route_changes} --client {client}{' --restart' if restart else ''}  (run {i + 1})")
            r = asyncio.run(run_bench(BenchOptions(proxies=n, services=services, changes=changes, workers=workers,
                                                   floor=True, timeout=900, route_changes=route_changes,
                                                   restart=restart, client=client)))
            out.runs.setdefault(n, []).append(r)
            log(r.row())
            if r.floor is not None:
                log(r.floor.row(" (floor)"))
    if scoped and proxies:
        n = min(proxies)
        log(f"$ mizzen bench xds --proxies {n} --services {services} --workers {workers} --scoped --floor "
            f"--client {client}")
        r = asyncio.run(run_bench(BenchOptions(proxies=n, services=services, changes=3, workers=workers,
                                               floor=True, timeout=900, scoped=True, client=client)))
        out.scoped.append(r)
        log(r.row(" (half scoped)"))
    if sidecar_memory:
        from . import sidecar

        log(f"$ python -m mizzen.bench.sidecar  ({services} services, real Envoys)")
        out.sidecar = sidecar.run(services=services)
    return out


def rows(res: Results) -> list[Row]:
    out: list[Row] = []
    services = res.services
    for n, runs in sorted(res.runs.items()):
        mz = [_figures(r) for r in runs]
        fl = [_figures(r.floor) for r in runs if r.floor is not None]
        p99_goal = 200 if n <= 1000 else 400
        floor = "bare gRPC floor"
        out.append(Row(f"2. one endpoint change → all {n} proxies, p99 ms (Mizzen incl. {DEBOUNCE_MS} ms debounce)",
                       f"< {p99_goal}", [m["p99"] for m in mz], [f["p99"] for f in fl], ".0f", p99_goal, floor))
        out.append(Row(f"2. … p50 ms, {n} proxies", "-", [m["p50"] for m in mz], [f["p50"] for f in fl], ".0f", None,
                       floor))
        with_route = [m for m in mz if m["route_p99"] == m["route_p99"]]
        if with_route:
            out.append(Row(f"2. a VirtualService change of one service's routes → all {n} proxies, p99 ms",
                           f"< {p99_goal}", [m["route_p99"] for m in with_route], [m["p99"] for m in with_route],
                           ".0f", p99_goal, "Mizzen's endpoint change p99, same run"))
            pairs = [(m["route_p99"], f["route_p99"]) for m, f in zip(mz, fl) if f["route_p99"] == f["route_p99"]]
            if pairs:  # the floor writes the same whole RouteConfiguration to every stream (no VHDS)
                out.append(Row(f"2. … the same route change, vs the floor sending its bytes, p99 ms ({n} proxies)",
                               "-", [a for a, _ in pairs], [b for _, b in pairs], ".0f", None,
                               "bare gRPC floor, the same RDS bytes to every stream"))
        out.append(Row(f"3. control-plane CPU per change per proxy, ms ({n} proxies)", "≤ 0.05",
                       [m["cpu"] for m in mz], [f["cpu"] for f in fl], ".3f", 0.05, floor))
        out.append(Row(f"3. control-plane peak RSS per proxy, MB ({n} × {services} services, no Sidecar)", "< 0.3",
                       [m["rss"] for m in mz], [f["rss"] for f in fl], ".2f", 0.3, floor))
        out.append(Row(f"3. … marginal: (peak − RSS before any proxy) per proxy, MB ({n}, no Sidecar)", "< 0.3",
                       [m["rss_marginal"] for m in mz], [f["rss_marginal"] for f in fl], ".3f", 0.3, floor))
        out.append(Row(f"4. initial sync, {n} proxies × {services} services fully ACKed, s",
                       "< 2" if n <= 1000 else "-", [m["sync"] for m in mz], [f["sync"] for f in fl], ".2f",
                       2.0 if n <= 1000 else None, floor))
        rs = [m for m in mz if m["restart_ready"] > 0]
        if rs:
            out.append(Row(f"4. control-plane restart, {n} proxies reconnecting: ready → every proxy has the next "
                           "change, s", f"≤ {RESTART_STALL_S:g}", [m["restart_push"] for m in rs],
                           [m["all_mean_s"] for m in rs], ".2f", RESTART_STALL_S,
                           "Mizzen's endpoint change to all, steady state, same run"))
            out.append(Row(f"4. … SIGTERM → the new control plane ready ({services} services), s", "-",
                           [m["restart_ready"] for m in rs], [], ".2f", None, ""))
            out.append(Row("4. … the server's part: longest (a stream reopened → it has the change), s", "-",
                           [m.get("restart_serve", float("nan")) for m in rs], [], ".2f", None, ""))
            out.append(Row("4. … the clients' retry back-off: ready → the last stream reopened, s", "-",
                           [m.get("restart_last_open", float("nan")) for m in rs], [], ".2f", None, ""))
    if res.scoped:
        sc = [_figures(r) for r in res.scoped]
        fl = [_figures(r.floor) for r in res.scoped if r.floor is not None]
        n = res.scoped[0].options.proxies
        out.append(Row(f"3. control-plane marginal RSS per proxy, MB ({n} proxies, half scoped by a Sidecar)",
                       "< 0.05", [m["rss_marginal"] for m in sc], [f["rss_marginal"] for f in fl], ".3f", 0.05,
                       "bare gRPC floor (serves proxy 0's full view to all)"))
        out.append(Row(f"3. … whole-process peak RSS per proxy, MB ({n}, half scoped)", "-", [m["rss"] for m in sc],
                       [f["rss"] for f in fl], ".2f", None, "bare gRPC floor"))
    if res.sidecar:
        from . import sidecar

        by = {c.name: c for c in res.sidecar}
        sc, empty = by["scoped"], by["empty bootstrap (baseline)"]
        out.append(Row(f"6. Envoy RSS of a Sidecar-scoped proxy, {services}-service mesh, MB", "≤ 40", [sc.rss_mb],
                       [empty.rss_mb], ".0f", 40, "Envoy with an empty bootstrap"))
        out.append(Row("6. … its private memory (RssAnon: RSS without the binary's shared pages), MB", "≤ 40",
                       [sc.private_mb], [empty.private_mb], ".1f", 40, "Envoy with an empty bootstrap"))
        if "everything" in by and "bare static, same clusters (baseline)" in by:
            out.append(Row("6. a full view (no Sidecar): Envoy private MB per 1000 services", "reduce",
                           [sidecar.full_view_per_1000(res.sidecar)], [sidecar.static_per_1000(res.sidecar)], ".0f",
                           None, "bare Envoy, static config of the same clusters"))
        if "everything-eager" in by:
            out.append(Row("6. … a full view's private MB, now vs before (bootstrap without deferred stats)",
                           "reduce", [by["everything"].private_mb], [by["everything-eager"].private_mb], ".0f", None,
                           "the same view, eager stats, same run"))
    if res.scale is not None:
        out += res.scale.rows()
    return out


def markdown(res: Results, extra: list[Row] | None = None) -> str:
    """The goals table; `extra`: rows measured elsewhere in the same run (goal 1: `datapath.goal_rows`)."""
    runs = {n: len(v) for n, v in res.runs.items()}
    return (table(rows(res) + list(extra or ())) + "\n\nMedian (min–max) over " +
            ", ".join(f"{k} run(s) at {n} proxies" for n, k in runs.items()) +
            "; each xDS run is Mizzen, then the floor right after, so the ratio is taken within one run. Delta "
            "ADS, 2 load-client processes (" + ("native, build/mizzen-xdsload" if res.client == "native" else
            "Python, the reference client") + "), client and server sharing the machine's cores with whatever else "
            "runs. "
            "RSS per proxy: the whole process's peak RSS / proxies (it includes the loaded store and snapshot); "
            "marginal: (peak − RSS once the mesh is loaded, before any proxy connected) / proxies. Goal 1 (data "
            "path vs two bare Envoys with the same capture): " + ("its rows come from the data-path step of the "
            "same run (pairs of alternated runs; its section has every run)" if extra else "not measured in this "
            "run (the data-path step needs root and runs after the latency step)") + ".\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--proxies", default="1000,2000")
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-scoped", action="store_true", help="skip the half-scoped run")
    ap.add_argument("--no-sidecar-memory", action="store_true", help="skip the Envoy memory rows (goal 6)")
    ap.add_argument("--scale", default="", help="goal 5: SERVICESxENDPOINTSxPROXIES, e.g. 10000x100000x2000")
    ap.add_argument("--client", choices=("auto", "native", "python"), default="auto",
                    help="the xDS load client (auto: native when build/mizzen-xdsload is built)")
    a = ap.parse_args(argv)
    res = run([int(x) for x in a.proxies.split(",") if x], a.services, a.repeat, scoped=not a.no_scoped,
              sidecar_memory=not a.no_sidecar_memory, client=a.client)
    if a.scale:
        from . import scale

        res.scale = scale.run(*(int(x) for x in a.scale.lower().split("x")))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
