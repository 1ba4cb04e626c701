"""`mizzen analyze -f FILE`: analyze files, together with the running mesh's config when there is one."""
from __future__ import annotations

import json
import sys

import click

from ..api import InvalidConfig, from_dict, load_sources
from ..cli.options import state_dir_option
from ..client import ApiClient, MeshUnavailable
from ..manifests import read_inputs
from .analyzers import ERROR, Message, analyze as run_analyzers


@click.command("analyze")
@click.option("-f", "--filename", "files", multiple=True, metavar="FILE",
              help="a manifest, a directory of *.yaml/*.yml, or - for stdin (repeatable)")
@click.option("-n", "--namespace", default="default", show_default=True, help="namespace for documents without one")
@click.option("--mesh/--no-mesh", "use_mesh", default=True, show_default=True,
              help="also analyze the config of the mesh in --state-dir, if one runs (files win on conflicts)")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@state_dir_option
def analyze(files: tuple[str, ...], namespace: str, use_mesh: bool, output: str, state_dir: str) -> None:
    """Report config that is valid but will not do what its author meant (Istio-style codes, fix hints)."""
    messages: list[Message] = []
    resources = {}
    if use_mesh:
        try:
            for kind in ("VirtualService", "DestinationRule", "ServiceEntry", "Sidecar", "Gateway", "Service",
                         "Workload", "RateLimit"):
                for d in ApiClient(state_dir).list_resources(kind):
                    r = from_dict(d)
                    resources[r.key] = r
        except MeshUnavailable:
            pass
    try:
        for r in load_sources(read_inputs(files), default_namespace=namespace).resources:
            resources[r.key] = r
    except InvalidConfig as e:
        for i in e.issues:
            res = f"{i.kind or '?'} {i.namespace or namespace}/{i.name or '?'}" if i.kind else i.file
            messages.append(Message("IST0106", ERROR, res, f"schema validation error: {i.message} ({i.file})",
                                    "fix the field as described", i.path or ""))
    messages += run_analyzers(resources.values())
    if output == "json":
        click.echo(json.dumps({"messages": [m.to_dict() for m in messages]}, indent=2))
    elif not messages:
        click.echo("✔ No validation issues found when analyzing the given config.")
    else:
        for m in messages:
            click.echo(str(m))
    sys.exit(1 if any(m.level == ERROR for m in messages) else 0)
