"""Seeing the mesh from the command line (docs/observability.md), all answered by the sidecars themselves
through the control plane (no Prometheus needed):

    mizzen stat [workload|service] [NAME] [-n NS] [--by version|caller] [-o table|json]
    mizzen top WORKLOAD [-n NS] [--interval S] [--seconds S | --iterations N]     live, bounded
    mizzen tap WORKLOAD [-n NS] [--path P] [--method M] [--max N] [--seconds S]    bounded in count and time
    mizzen traces [TRACE_ID] [--service S] [--limit N] [-o table|json]
    mizzen dashboard [--no-browser]        prints the console's URL (with its token) and returns
    mizzen prometheus-config [-o FILE]     a Prometheus config whose targets the control plane keeps current
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click
import yaml

from ..client import ApiClient, MeshUnavailable, StateLayout
from ..telemetry.golden import stat as golden_stat
from ..telemetry.golden import table as golden_table
from .options import fail, state_dir_option
from .render import print_table

KINDS = {"workload": "workload", "workloads": "workload", "wl": "workload", "deploy": "workload",
         "service": "service", "services": "service", "svc": "service"}


def _json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


@click.command()
@click.argument("target", required=False, metavar="[workload|service]")
@click.argument("name", required=False)
@click.option("-n", "--namespace", default=None, help="only this namespace (default: every namespace)")
@click.option("--by", type=click.Choice(["version", "caller"]), default=None, help="split rows by version or caller")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@state_dir_option
def stat(target: str | None, name: str | None, namespace: str | None, by: str | None, output: str,
         state_dir: str) -> None:
    """Golden metrics of the last minute: request rate, success rate, p50/p95/p99 latency, per workload (what
    its sidecars served) or per service (what callers got)."""
    kind = "workload"
    if target is not None:
        if target.lower() in KINDS:
            kind = KINDS[target.lower()]
        elif name is None:
            name = target  # `mizzen stat reviews-v1`
        else:
            fail(f"unknown target {target!r}: give workload or service, then a name (or a workload name alone)")
    data = ApiClient(state_dir).telemetry_windows()
    for e in data.get("errors", ()):
        click.echo(f"warning: sidecar not counted: {e}", err=True)
    rows = golden_stat(data.get("items", ()), kind=kind, by=by, namespace=namespace, name=name)
    if output == "json":
        return _json(rows)
    cells = golden_table(rows, by)
    print_table(cells[0], cells[1:], empty=f"No traffic seen in the last minute"
                f"{' for ' + kind + ' ' + name if name else ''}.")


def _top_rows(snap: dict[str, Any], prev: dict[tuple, int] | None, dt: float) -> list[list[str]]:
    rows = []
    for p in snap.get("paths", ()):
        key = (p["direction"], p["peer"], p["method"], p["path"])
        rate = "-" if prev is None or dt <= 0 else f"{max(p['count'] - prev.get(key, 0), 0) / dt:.1f}"
        sr = "-" if p.get("successRate") is None else f"{p['successRate'] * 100:.1f}%"
        rows.append([p["direction"], p["peer"], p["method"], p["path"][:80], str(p["count"]), rate, sr,
                     f"{p['lastMs']:.1f}ms", f"{p['maxMs']:.1f}ms"])
    return rows


TOP_HEAD = ["DIRECTION", "PEER", "METHOD", "PATH", "COUNT", "RPS", "SUCCESS", "LAST", "MAX"]


@click.command()
@click.argument("workload")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--count", "-c", "n", default=20, show_default=True, type=click.IntRange(1, 200), help="paths shown")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(0.5, 60), help="seconds")
@click.option("--seconds", default=300.0, show_default=True, type=click.FloatRange(0, 3600),
              help="stop after this long")
@click.option("--iterations", default=0, type=click.IntRange(0, 10000), help="stop after N refreshes (0: none)")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@state_dir_option
def top(workload: str, namespace: str, n: int, interval: float, seconds: float, iterations: int, output: str,
        state_dir: str) -> None:
    """The workload's busiest paths (both directions, every replica), refreshed live; bounded in time."""
    api = ApiClient(state_dir)
    deadline = time.monotonic() + seconds
    prev: dict[tuple, int] | None = None
    last = time.monotonic()
    k = 0
    live = None
    if output == "table" and sys.stdout.isatty():
        from rich.live import Live
        live = Live(auto_refresh=False)
        live.start()
    try:
        while True:
            snap = api.telemetry_top(workload, namespace, n)
            now = time.monotonic()
            k += 1
            if output == "json":
                click.echo(json.dumps(snap, sort_keys=True))
            else:
                rows = _top_rows(snap, prev, now - last)
                since = ("sampled since the first top read (metrics counted in Envoy)" if snap.get("sampled")
                         else "since their start")
                title = (f"{namespace}/{workload}: {snap.get('replicas')} replica(s), {snap.get('total')} requests "
                         f"{since} — {time.strftime('%H:%M:%S')}")
                if live is not None:
                    from rich.table import Table
                    t = Table(title=title, box=None, header_style="bold")
                    for h in TOP_HEAD:
                        t.add_column(h, no_wrap=True)
                    for r in rows:
                        t.add_row(*r)
                    live.update(t, refresh=True)
                else:
                    click.echo(title)
                    print_table(TOP_HEAD, rows, empty="(no requests yet: the paths of requests made from now on "
                                "show here)" if snap.get("sampled") else "(no requests yet)")
                    click.echo("")
            prev = {(p["direction"], p["peer"], p["method"], p["path"]): p["count"] for p in snap.get("paths", ())}
            last = now
            if (iterations and k >= iterations) or time.monotonic() + interval > deadline:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return
    finally:
        if live is not None:
            live.stop()


@click.command()
@click.argument("workload")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--path", default="", help="only requests whose path starts with this")
@click.option("--method", default="", help="only requests with this method")
@click.option("--max", "max_events", default=100, show_default=True, type=click.IntRange(1, 10000),
              help="stop after this many requests")
@click.option("--seconds", default=60.0, show_default=True, type=click.FloatRange(0.1, 600), help="stop after this long")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@state_dir_option
def tap(workload: str, namespace: str, path: str, method: str, max_events: int, seconds: float, output: str,
        state_dir: str) -> None:
    """Live requests through the workload's sidecars (method, path, authority, status, latency, source,
    destination), as they pass; nothing is tapped once it returns."""
    body = {"workload": workload, "namespace": namespace, "path": path, "method": method, "max": max_events,
            "seconds": seconds}
    head = output == "table"
    for row in ApiClient(state_dir).telemetry_tap(body):
        if head:
            click.echo(f"{'POD':<22} {'METHOD':<7} {'STATUS':>6} {'LATENCY':>9}  {'SOURCE':<28} "
                       f"{'DESTINATION':<28} AUTHORITY PATH")
            head = False
        if row.get("event") == "end":
            for e in row.get("errors", ()):
                click.echo(f"warning: {e}", err=True)
            click.echo(f"# {row.get('rows', 0)} request(s); stopped by {row.get('reason') or 'time'}"
                       + (f"; {row['dropped']} dropped (reading too slowly)" if row.get("dropped") else ""), err=True)
            return
        if output == "json":
            click.echo(json.dumps(row, sort_keys=True))
            continue
        lat = "-" if row.get("latencyMs") is None else f"{row['latencyMs']:.1f}ms"
        click.echo(f"{row.get('pod', ''):<22} {row.get('method', ''):<7} {row.get('status', 0):>6} {lat:>9}  "
                   f"{row.get('source') or '-':<28} {row.get('destination') or '-':<28} "
                   f"{row.get('authority', '')} {row.get('path', '')}")


@click.command()
@click.argument("trace_id", required=False)
@click.option("--service", default="", help="traces that involve this service (span service name)")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@state_dir_option
def traces(trace_id: str | None, service: str, limit: int, output: str, state_dir: str) -> None:
    """Recent traces from the embedded collector, or one trace's spans as a waterfall."""
    api = ApiClient(state_dir)
    if trace_id:
        t = api.trace(trace_id)
        if output == "json":
            return _json(t)
        s = t["summary"]
        click.echo(f"trace {s['traceId']}: {s['spans']} spans, {s['durationMs']:.1f}ms, services "
                   f"{', '.join(s['services'])}")
        rows = [["  " * r["depth"] + r["name"], r["service"], r["kind"], f"+{r['offsetMs']:.1f}ms",
                 f"{r['durationMs']:.1f}ms", "error" if r["error"] else "", r["spanId"], r["parentId"] or "-"]
                for r in t["spans"]]
        return print_table(["SPAN", "SERVICE", "KIND", "START", "DURATION", "", "ID", "PARENT"], rows)
    items = api.traces(limit, service)
    if output == "json":
        return _json(items)
    rows = [[i["traceId"], i["rootService"], i["root"][:60], str(i["spans"]), f"{i['durationMs']:.1f}ms",
             "error" if i["error"] else "", ",".join(i["services"])] for i in items]
    print_table(["TRACE", "ROOT SERVICE", "ROOT", "SPANS", "DURATION", "", "SERVICES"], rows,
                empty="No traces yet (sampling is 1% by default: a Telemetry resource sets it).")


def _endpoints(state_dir: str) -> dict[str, Any]:
    layout = StateLayout(state_dir)
    try:
        with open(layout.controlplane_endpoints(0)) as f:
            return dict(json.load(f))
    except FileNotFoundError:
        raise MeshUnavailable(state_dir, [layout.controlplane_endpoints(0)]) from None
    except (OSError, ValueError) as e:
        fail(f"cannot read {layout.controlplane_endpoints(0)}: {e}")


def _has_display() -> bool:
    if sys.platform == "darwin" or os.name == "nt":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@click.command()
@click.option("--no-browser", is_flag=True, help="only print the URL")
@state_dir_option
def dashboard(no_browser: bool, state_dir: str) -> None:
    """Print the web console's URL (with its access token) and open it in a browser when there is a display."""
    ApiClient(state_dir).healthz()  # a running mesh, or "no mesh running in DIR"
    console = _endpoints(state_dir).get("console")
    if not console:
        fail("this control plane serves no console (started with --console-port off)")
    layout = StateLayout(state_dir)
    try:
        with open(layout.console_token) as f:
            token = f.read().strip()
    except OSError as e:
        fail(f"cannot read the console's token {layout.console_token}: {e} (run as the mesh's owner)")
    url = f"{console.rstrip('/')}/topology?token={token}"
    click.echo(url)
    if not no_browser and _has_display():
        import webbrowser
        try:
            webbrowser.open(url, new=2)
        except Exception as e:  # noqa: BLE001 - the URL is printed already
            click.echo(f"could not open a browser: {e}", err=True)


def prometheus_yaml(state_dir: str, scrape_interval: str) -> str:
    layout = StateLayout(state_dir)
    cfg = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {"job_name": "mizzen-controlplane",
             "file_sd_configs": [{"files": [os.path.join(layout.prometheus_dir, "controlplane*.json")],
                                  "refresh_interval": "5s"}]},
            {"job_name": "mizzen-sidecars", "honor_labels": False,
             "file_sd_configs": [{"files": [layout.prometheus_sidecar_targets], "refresh_interval": "5s"}]},
        ],
    }
    head = ("# Prometheus scrape config for the Mizzen mesh in " + layout.root + "\n"
            "# Targets are kept current by the control plane (file-based service discovery): every sidecar's\n"
            "# merged scrape (Envoy + Istio metrics + agent + app), relayed by the control plane's monitoring\n"
            "# port, and each control-plane replica's own /metrics.\n")
    return head + yaml.safe_dump(cfg, sort_keys=False)


@click.command("prometheus-config")
@click.option("-o", "--output", "out", default="-", show_default=True, metavar="FILE", help="where to write it")
@click.option("--scrape-interval", default="5s", show_default=True)
@state_dir_option
def prometheus_config(out: str, scrape_interval: str, state_dir: str) -> None:
    """Write a Prometheus config that scrapes every sidecar and the control plane of this mesh."""
    if not os.path.isdir(StateLayout(state_dir).prometheus_dir):
        click.echo(f"warning: {StateLayout(state_dir).prometheus_dir} does not exist yet: start the mesh "
                   "(mizzen up) and the control plane fills it", err=True)
    text = prometheus_yaml(state_dir, scrape_interval)
    if out == "-":
        click.echo(text, nl=False)
    else:
        with open(out, "w") as f:
            f.write(text)
        click.echo(f"wrote {out}", err=True)
