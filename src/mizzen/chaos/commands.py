"""`mizzen chaos kill | network | partition | stress | list | stop | run`: failure drills on a running mesh."""
from __future__ import annotations

import datetime as dt
import json
import signal
import sys
import time
from typing import Any, Callable

import click

from ..cli.options import state_dir_option
from ..cli.render import print_table
from .actions import ChaosError
from .engine import Chaos
from .spec import (KILL_TARGETS, Fault, NetworkParams, Selection, SpecError, format_duration, parse_duration,
                   parse_percent, parse_rate, parse_signal)


def _fail(e: Exception) -> None:
    raise click.ClickException(str(e)) from None


def _dur(value: str | None, what: str) -> float | None:
    return None if value is None else parse_duration(value, what)


def _selection(pods: tuple[str, ...], workload: str | None, app: str | None, namespace: str | None,
               count: int | None, percent: str | None, exclude: tuple[str, ...] = (),
               replica: int | None = None) -> Selection:
    if count is not None and percent is not None:
        raise SpecError("give either --count or --percent, not both")
    return Selection(pods=tuple(p for arg in pods for p in arg.split(",") if p), workload=workload, app=app,
                     namespace=namespace, count=count,
                     percent=parse_percent(percent, "--percent") if percent is not None else None,
                     exclude=tuple(p for arg in exclude for p in arg.split(",") if p), replica=replica)


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%H:%M:%S") if ts else "-"


def fault_line(f: Fault) -> str:
    line = f"{f.id}: {f.describe()} on {f.where()}"
    if f.duration:
        line += f" for {format_duration(f.duration)}"
    line += f" (seed {f.seed})"
    if f.state == "active" and f.expires:
        line += f"; expires {_when(f.expires)}; `mizzen chaos stop {f.id}` undoes it now"
    elif f.state not in ("active",):
        line += f"; {f.state}"
    return line


def _hold(ch: Chaos, f: Fault) -> None:
    """--wait: stay until the fault ends; Ctrl-C (or SIGTERM) undoes it first."""
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            rec = ch.store.load(f.id)
            if rec is None or rec.final:
                click.echo(f"{f.id} {rec.state if rec else 'gone'}")
                return
            time.sleep(0.2)
    except KeyboardInterrupt:
        for r in ch.stop([f.id], reason="interrupt"):
            click.echo(f"{r.id} {r.state} (interrupted)")
        sys.exit(130)


def _run(fn: Callable[[], Fault], output: str, wait: bool, state_dir: str, ch: Chaos) -> None:
    try:
        f = fn()
    except (SpecError, ChaosError) as e:
        _fail(e)
    if output == "json":
        click.echo(json.dumps(f.to_dict(), indent=1))
    else:
        click.echo(fault_line(f))
    if wait and not f.final:
        _hold(ch, f)


def _pod_options(f: Callable) -> Callable:
    for opt in reversed([
        click.option("--pod", "pods", multiple=True, metavar="POD", help="a pod (repeatable, or comma-separated)"),
        click.option("--workload", default=None, help="the pods of this workload"),
        click.option("--app", default=None, help="the pods labelled app=APP"),
        click.option("-n", "--namespace", default=None, help="only pods of this namespace"),
        click.option("--count", type=int, default=None, help="pick this many of the matching pods at random"),
        click.option("--percent", default=None, help="pick this share of the matching pods at random (e.g. 50%)"),
        click.option("--exclude", multiple=True, metavar="POD", help="never pick these pods"),
        click.option("--seed", type=int, default=None, help="seed of the random choice (default: a new one, "
                                                           "recorded)"),
        click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True),
    ]):
        f = opt(f)
    return f


@click.group()
@state_dir_option
@click.pass_context
def chaos(ctx: click.Context, state_dir: str) -> None:
    """Failure drills on a running mesh: kill processes, degrade or cut the network, hog CPU, run scenarios.
    Every fault is recorded (`mizzen chaos list`) and undone on expiry, `mizzen chaos stop` and `mizzen down`."""
    ctx.obj = {"state_dir": state_dir} if ctx.get_parameter_source("state_dir") not in (
        click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP) else {}


def _sd(state_dir: str) -> str:
    """A subcommand's --state-dir, else the group's (`mizzen chaos --state-dir D kill ...`)."""
    ctx = click.get_current_context()
    parent = ctx.parent.obj if ctx.parent is not None and isinstance(ctx.parent.obj, dict) else {}
    if parent.get("state_dir") and ctx.get_parameter_source("state_dir") in (
            click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP):
        return str(parent["state_dir"])
    return state_dir


@chaos.command("kill")
@click.argument("target", type=click.Choice(KILL_TARGETS))
@_pod_options
@click.option("--replica", type=int, default=None, help="controlplane: this replica (default: one at random)")
@click.option("--signal", "sig", default="KILL", show_default=True, help="KILL or TERM")
@click.option("--every", default=None, help="kill again at this interval (a crash loop), for --duration")
@click.option("--duration", default=None, help="with --every: how long to keep killing")
@state_dir_option
def kill_cmd(target: str, pods: tuple[str, ...], workload: str | None, app: str | None, namespace: str | None,
             count: int | None, percent: str | None, exclude: tuple[str, ...], seed: int | None, output: str,
             replica: int | None, sig: str, every: str | None, duration: str | None, state_dir: str) -> None:
    """SIGKILL (or SIGTERM) a pod's app, Envoy, agent, all of them (`pod`), or a control-plane replica. Without
    --pod/--workload/--app every pod matches; --count/--percent pick at random with --seed."""
    ch = Chaos(_sd(state_dir))

    def go() -> Fault:
        sel = _selection(pods, workload, app, namespace, count, percent, exclude, replica)
        return ch.kill(target, sel, seed=seed, sig=parse_signal(sig), every=_dur(every, "--every"),
                       duration=_dur(duration, "--duration"))

    _run(go, output, False, state_dir, ch)


@chaos.command("network")
@_pod_options
@click.option("--latency", default=None, help="added to every packet the pod sends, e.g. 100ms")
@click.option("--jitter", default=None, help="± this much on the latency, uniform, e.g. 20ms")
@click.option("--loss", default=None, help="share of packets dropped, each direction, e.g. 30%")
@click.option("--bandwidth", default=None, help="rate limit, each direction, e.g. 1mbit")
@click.option("--duration", required=True, help="removed after this long, e.g. 20s")
@click.option("--wait", is_flag=True, help="stay until it expires (Ctrl-C undoes it)")
@state_dir_option
def network_cmd(pods: tuple[str, ...], workload: str | None, app: str | None, namespace: str | None,
                count: int | None, percent: str | None, exclude: tuple[str, ...], seed: int | None, output: str,
                latency: str | None, jitter: str | None, loss: str | None, bandwidth: str | None, duration: str,
                wait: bool, state_dir: str) -> None:
    """Slow, lossy or narrow network for pods, for --duration (returns at once; the fault expires on its own)."""
    ch = Chaos(_sd(state_dir))

    def go() -> Fault:
        sel = _selection(pods, workload, app, namespace, count, percent, exclude)
        p = NetworkParams(latency=_dur(latency, "--latency") or 0.0, jitter=_dur(jitter, "--jitter") or 0.0,
                          loss=parse_percent(loss, "--loss") if loss else 0.0,
                          bandwidth=parse_rate(bandwidth, "--bandwidth") if bandwidth else None)
        return ch.network(sel, p, parse_duration(duration, "--duration"), seed=seed)

    _run(go, output, wait, state_dir, ch)


@chaos.command("partition")
@_pod_options
@click.option("--controlplane", is_flag=True, help="side A is the control plane (every replica, or --replica)")
@click.option("--replica", type=int, default=None, help="with --controlplane: only this replica")
@click.option("--peer", "peers", multiple=True, metavar="POD", help="side B: a pod (repeatable)")
@click.option("--peer-workload", default=None, help="side B: the pods of this workload")
@click.option("--peer-app", default=None, help="side B: the pods labelled app=APP")
@click.option("--duration", required=True, help="healed after this long, e.g. 60s")
@click.option("--wait", is_flag=True, help="stay until it heals (Ctrl-C heals it)")
@state_dir_option
def partition_cmd(pods: tuple[str, ...], workload: str | None, app: str | None, namespace: str | None,
                  count: int | None, percent: str | None, exclude: tuple[str, ...], seed: int | None, output: str,
                  controlplane: bool, replica: int | None, peers: tuple[str, ...], peer_workload: str | None,
                  peer_app: str | None, duration: str, wait: bool, state_dir: str) -> None:
    """Cut two sets of pods apart (side A: --pod/--workload/--app; side B: --peer/--peer-workload/--peer-app),
    or the control plane from every sidecar (--controlplane), for --duration."""
    ch = Chaos(_sd(state_dir))

    def go() -> Fault:
        d = parse_duration(duration, "--duration")
        if controlplane:
            if pods or workload or app or peers or peer_workload or peer_app:
                raise SpecError("--controlplane partitions the control plane from every sidecar: give no pods "
                                "(a partition from some pods only is not supported, see docs/chaos.md)")
            return ch.partition(Selection(replica=replica), "controlplane", d, seed=seed)
        a = _selection(pods, workload, app, namespace, count, percent, exclude)
        b = _selection(peers, peer_workload, peer_app, namespace, None, None, exclude)
        if a == Selection() or b == Selection():
            raise SpecError("name both sides: --pod/--workload/--app and --peer/--peer-workload/--peer-app")
        return ch.partition(a, b, d, seed=seed)

    _run(go, output, wait, state_dir, ch)


@chaos.command("stress")
@_pod_options
@click.option("--cpus", type=int, default=1, show_default=True, help="busy loops sharing the pod's CPU")
@click.option("--duration", required=True, help="stopped after this long, e.g. 30s")
@click.option("--wait", is_flag=True, help="stay until it ends (Ctrl-C ends it)")
@state_dir_option
def stress_cmd(pods: tuple[str, ...], workload: str | None, app: str | None, namespace: str | None,
               count: int | None, percent: str | None, exclude: tuple[str, ...], seed: int | None, output: str,
               cpus: int, duration: str, wait: bool, state_dir: str) -> None:
    """CPU hog in pods: busy loops in the pod's namespace pinned to one CPU with its app and Envoy."""
    ch = Chaos(_sd(state_dir))

    def go() -> Fault:
        sel = _selection(pods, workload, app, namespace, count, percent, exclude)
        return ch.stress(sel, cpus, parse_duration(duration, "--duration"), seed=seed)

    _run(go, output, wait, state_dir, ch)


@chaos.command("list")
@click.option("--all", "include_all", is_flag=True, help="also faults of earlier runs of this state dir")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@state_dir_option
def list_cmd(include_all: bool, output: str, state_dir: str) -> None:
    """Every fault of this mesh run: active ones first, then what happened (with seeds, to replay)."""
    faults = Chaos(_sd(state_dir)).list(include_all)
    faults.sort(key=lambda f: (f.final, f.created))
    if output == "json":
        click.echo(json.dumps({"items": [f.to_dict() for f in faults]}, indent=1))
        return
    rows = [[f.id, f.state, f.describe(), f.where(), _when(f.started or f.created),
             format_duration(f.duration) if f.duration else "-",
             _when(f.expires) if f.state == "active" else (_when(f.ended) if f.ended else "-"), f.seed, f.source]
            for f in faults]
    print_table(["ID", "STATE", "WHAT", "WHERE", "STARTED", "FOR", "ENDS/ENDED", "SEED", "SOURCE"], rows,
                empty="No faults.")


@chaos.command("stop")
@click.argument("ids", nargs=-1)
@state_dir_option
def stop_cmd(ids: tuple[str, ...], state_dir: str) -> None:
    """Undo active faults now: these IDS, or every one."""
    try:
        out = Chaos(_sd(state_dir)).stop(list(ids) or None)
    except (SpecError, ChaosError) as e:
        _fail(e)
    if not out:
        click.echo("no active fault")
    for f in out:
        click.echo(f"{f.id} {f.state}: {f.describe()} on {f.where()}" + (f" ({f.error})" if f.error else ""))


@chaos.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--seed", type=int, default=None, help="overrides the scenario's spec.seed")
@state_dir_option
def run_cmd(file: str, output: str, seed: int | None, state_dir: str) -> None:
    """Run a ChaosScenario (mizzen.dev/v1) on the running mesh: its load, its faults on schedule, then the
    steady-state checks. Prints the timeline and a verdict with the numbers; exits 1 on FAIL (130 if
    interrupted: every fault of the run is undone first). `-o json` for CI."""
    from .run import ScenarioRun
    from .scenario import ScenarioError, parse
    from .verdict import render

    try:
        with open(file) as fh:
            text = fh.read()
    except OSError as e:
        raise click.ClickException(f"{file}: {e.strerror}") from None
    try:
        scenario = parse(text, file)
    except ScenarioError as e:
        for p in e.problems:
            click.echo(p, err=True)
        sys.exit(1)
    if seed is not None:
        import dataclasses
        scenario = dataclasses.replace(scenario, seed=seed)
    echo = (lambda line: click.echo(line, err=True)) if output == "text" else None  # progress; the result: stdout
    if echo:
        click.echo(f"scenario {scenario.name}: {len(scenario.steps)} step(s) over {scenario.load.duration:g}s of load",
                   err=True)
    try:
        result = ScenarioRun(scenario, _sd(state_dir), echo=echo).run()
    except (SpecError, ChaosError) as e:
        _fail(e)
    if output == "json":
        click.echo(json.dumps(result, indent=1))
    else:
        click.echo(render(result))
    if result.get("error", "") and str(result.get("error")).startswith("interrupted"):
        sys.exit(130)
    sys.exit(0 if result["pass"] else 1)


__all__ = ["chaos"]
