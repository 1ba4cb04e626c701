"""`mizzen bench ...` commands. `bench` is a click group; the CLI adds it as a plugin."""
from __future__ import annotations

import asyncio
import datetime
import os
import shlex
import sys

import click


@click.group("bench")
def bench() -> None:
    """Benchmarks against real processes (results are reported, never pass/fail)."""


@bench.command("xds")
@click.option("--proxies", "-n", default=100, show_default=True, help="ADS streams (simulated Envoys).")
@click.option("--services", "-m", default=50, show_default=True, help="Kubernetes Services (2 instances each).")
@click.option("--sotw", is_flag=True, help="State-of-the-world ADS instead of Delta.")
@click.option("--changes", "-k", default=5, show_default=True, help="Endpoint changes to time.")
@click.option("--workers", "-w", default=1, show_default=True,
              help="Client processes sharing the streams (use more if one process saturates a core).")
@click.option("--debounce-ms", default=None, type=int, help="Control plane quiet period (default: its own).")
@click.option("--debounce-leading", is_flag=True,
              help="The control plane pushes a change after a quiet period at once (--debounce-leading).")
@click.option("--timeout", default=300.0, show_default=True, help="Give up (and tear down) after this many seconds.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Append the result (markdown) to this file.")
@click.option("--keep-state", is_flag=True, help="Keep the temp state dir (control-plane log) for inspection.")
@click.option("--cp-log-level", default="warning", show_default=True, help="Control-plane log level (log in the state dir).")
@click.option("--quiet", "-q", is_flag=True, help="Only print the result row.")
@click.option("--floor", is_flag=True,
              help="Then run the same load against a bare gRPC server writing the same bytes (the baseline).")
@click.option("--route-changes", default=0, show_default=True,
              help="Then K VirtualService changes of svc-0's routes: time until every proxy has each.")
@click.option("--scoped", is_flag=True, help="Half the proxies scoped by a Sidecar allowing a few hosts.")
@click.option("--workloads", default=1, show_default=True,
              help="Spread the proxies over K workloads (labels app=bench-<i>): K distinct views.")
@click.option("--restart", is_flag=True,
              help="Then SIGTERM and restart the control plane: SIGTERM -> ready, ready -> every proxy has a change.")
@click.option("--profile", "profile_dir", type=click.Path(file_okay=False),
              help="Sample the control plane with py-spy: DIR/sync.txt and DIR/changes.txt, top entries printed.")
@click.option("--client", type=click.Choice(["auto", "native", "python"]), default="auto", show_default=True,
              help="The load client: native (build/mizzen-xdsload, `make native`: less of the 2 cores spent "
                   "simulating Envoys), python (the reference), auto: native when built.")
def xds(proxies: int, services: int, sotw: bool, changes: int, workers: int, debounce_ms: int | None, timeout: float,
        output: str | None, keep_state: bool, cp_log_level: str, quiet: bool, profile_dir: str | None,
        floor: bool, route_changes: int, scoped: bool, workloads: int, restart: bool, client: str,
        debounce_leading: bool) -> None:
    """EDS push latency and control-plane cost with N ADS streams and M services."""
    from .xds_load import TABLE_HEADER, BenchOptions, run_bench
    from .xds_native import resolve

    def log(msg: str) -> None:
        if not quiet:
            click.echo(msg, err=True)

    try:
        client, why = resolve(client)
    except RuntimeError as e:
        raise click.ClickException(str(e))
    log(f"load client: {client}" + (f" ({why})" if why else ""))
    opts = BenchOptions(proxies=proxies, services=services, delta=not sotw, changes=changes, workers=workers,
                        timeout=timeout, debounce_ms=debounce_ms, keep_state=keep_state,
                        cp_log_level=cp_log_level, profile_dir=profile_dir, floor=floor,
                        route_changes=route_changes, scoped=scoped, workloads=workloads, restart=restart,
                        client=client, debounce_leading=debounce_leading)

    try:
        res = asyncio.run(run_bench(opts, log))
    except (asyncio.TimeoutError, TimeoutError):
        raise click.ClickException(f"benchmark did not finish within {timeout:.0f} s (everything was stopped)")
    except RuntimeError as e:
        raise click.ClickException(str(e))
    row = res.row()
    if res.floor is not None:
        row += "\n" + res.floor.row(" (floor)")
    if res.route_latencies_ms:
        from .xds_load import percentile

        lat = res.route_latencies_ms
        click.echo(f"route changes: p50 {percentile(lat, 50):.1f} ms, p99 {percentile(lat, 99):.1f} ms, "
                   f"max {max(lat):.1f} ms, {res.route_missing} missing (EDS p99 {res.pct(99):.1f} ms); "
                   f"control-plane CPU {res.cp_cpu_routes_s / max(1, route_changes):.3f} s "
                   "per route change")
        fl = res.floor.route_latencies_ms if res.floor is not None else []
        if fl:
            click.echo(f"floor route changes (the same RDS bytes, bare gRPC): p50 {percentile(fl, 50):.1f} ms, "
                       f"p99 {percentile(fl, 99):.1f} ms, max {max(fl):.1f} ms, {res.floor.route_missing} missing; "
                       f"server CPU {res.floor.cp_cpu_routes_s / max(1, route_changes):.3f} s per route change")
    if res.profiles:
        from .profile import top_entries

        for phase, path in res.profiles.items():
            click.echo(f"\ncontrol-plane profile, {phase} ({path}):\n"
                       + top_entries(path, 15, skip=("asyncio/", "click/", "runpy", "cli/main.py", "cli/options.py",
                                                     "server/commands.py")) + "\n")
    if restart:
        click.echo(f"restart: SIGTERM -> ready {res.restart_ready_s:.2f} s; ready -> every proxy has the next change "
                   f"{res.restart_push_s:.2f} s ({res.restart_missing} missing)")
    click.echo(TABLE_HEADER)
    click.echo(row)
    if res.connected not in (proxies, -1):
        click.echo(f"warning: control plane lists {res.connected} connected proxies, expected {proxies}", err=True)
    if output:
        cmd = "mizzen bench " + " ".join(shlex.quote(a) for a in sys.argv[sys.argv.index("xds"):]) \
            if "xds" in sys.argv else f"mizzen bench xds --proxies {proxies} --services {services}"
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        with open(output, "a", encoding="utf-8") as f:
            if f.tell() > 0:
                f.write("\n")
            f.write(f"`{cmd}` ({when}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]})\n\n")
            f.write(TABLE_HEADER + "\n" + row + "\n")
        log(f"appended to {output}")
