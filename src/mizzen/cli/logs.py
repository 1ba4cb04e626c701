"""`mizzen logs enable|disable WORKLOAD` and `mizzen logs WORKLOAD`: per-workload access logs at runtime.

Enabling applies an Istio Telemetry resource (`mizzen-logs-<workload>`, selecting the workload's labels,
accessLogging on); the control plane pushes listeners with an access log to that workload's proxies
only — nothing restarts. Envoy writes the log to its stdout, which the agent keeps in the pod's
`access.log`; showing reads those files.
"""
from __future__ import annotations

import json
import os
import time

import click
import yaml

from ..client import HttpError, PodDir, StateLayout
from .options import api_client, api_options, fail


def _telemetry(name: str, namespace: str, labels: dict[str, str]) -> str:
    return yaml.safe_dump({
        "apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
        "metadata": {"name": f"mizzen-logs-{name}", "namespace": namespace},
        "spec": {"selector": {"matchLabels": labels}, "accessLogging": [{"providers": [{"name": "envoy"}]}]},
    }, sort_keys=False)


def _pod_dirs(state_dir: str, workload: str, namespace: str) -> list[str]:
    layout = StateLayout(state_dir)
    try:
        with open(layout.status_file) as f:
            pods = json.load(f).get("pods") or []
    except (OSError, ValueError):
        pods = []
    dirs = [p.get("dir") or layout.pod(p["name"]).path for p in pods
            if p.get("workload") == workload and p.get("namespace", "default") == namespace]
    return sorted(d for d in dirs if d)


@click.command("logs")
@click.argument("args", nargs=-1, required=True, metavar="[enable|disable] WORKLOAD")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--tail", "tail", default=50, show_default=True, help="lines per replica (0: all)")
@click.option("-f", "--follow", is_flag=True, help="keep printing new lines (Ctrl-C to stop)")
@api_options
def logs(args: tuple[str, ...], namespace: str, tail: int, follow: bool, state_dir: str) -> None:
    """Switch a workload's access logs on or off at runtime, or show them."""
    action, workload = (args[0], args[1]) if len(args) == 2 and args[0] in ("enable", "disable") else \
        ("show", args[0]) if len(args) == 1 else (None, None)
    if action is None:
        fail("usage: mizzen logs [enable|disable] WORKLOAD")
    api = api_client(state_dir)
    if action in ("enable", "disable"):
        try:
            wl = api.get_resource("Workload", namespace, workload)
        except HttpError:
            fail(f'workload "{workload}" not found in namespace {namespace}')
        labels = (wl.get("metadata") or {}).get("labels") or {}
        if not labels:
            fail(f"workload {namespace}/{workload} has no labels to select its proxies by")
        text = _telemetry(workload, namespace, labels)
        if action == "enable":
            api.apply([("<mizzen logs enable>", text)], namespace)
            click.echo(f"access logs enabled for {namespace}/{workload}")
        else:
            try:
                api.delete_resource("Telemetry", namespace, f"mizzen-logs-{workload}")
            except HttpError:
                pass
            click.echo(f"access logs disabled for {namespace}/{workload}")
        return
    dirs = _pod_dirs(state_dir, workload, namespace)
    if not dirs:
        fail(f"no replicas of {namespace}/{workload} in {state_dir}")
    files = {os.path.basename(d): PodDir(d).access_log for d in dirs}
    offsets: dict[str, int] = {}
    for pod, path in files.items():
        try:
            with open(path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
                offsets[pod] = f.tell()
        except OSError:
            lines, offsets[pod] = [], 0
        for line in (lines[-tail:] if tail else lines):
            click.echo(f"[{pod}] {line}")
    while follow:
        time.sleep(0.5)
        for pod, path in files.items():
            try:
                with open(path, "rb") as f:
                    f.seek(offsets[pod])
                    chunk = f.read()
                    offsets[pod] = f.tell()
            except OSError:
                continue
            for line in chunk.decode("utf-8", "replace").splitlines():
                click.echo(f"[{pod}] {line}")
