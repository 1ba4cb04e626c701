"""`mizzen analyze -f FILE`: analyze files, together with the running mesh's config when there is one.

Output and exit status as `istioctl analyze`: text lines `Level [CODE] (Kind ns/name ...) message`, or `-o json`
/ `-o yaml` lists of {code, level, message, origin, reference, documentationUrl}; exit status 79 when a
message is at least as severe as `--failure-threshold` (default Error), 0 otherwise.
"""
from __future__ import annotations

import json
import sys

import click
import yaml

from ..api import KINDS, from_dict
from ..cli.options import state_dir_option
from ..client import ApiClient, MeshUnavailable
from ..manifests import read_inputs
from .analyzers import analyze as run_analyzers
from .base import LEVELS, sort_messages
from .inputs import read_for_analysis

EXIT_FOUND_ISSUES = 79  # istioctl's ExitAnalyzerFoundIssues
LEVEL_NAMES = {"error": "Error", "warning": "Warning", "info": "Info"}


@click.command("analyze")
@click.option("-f", "--filename", "files", multiple=True, metavar="FILE",
              help="a manifest, a directory of *.yaml/*.yml, or - for stdin (repeatable)")
@click.option("-n", "--namespace", default="default", show_default=True, help="namespace for documents without one")
@click.option("--mesh/--no-mesh", "use_mesh", default=True, show_default=True,
              help="also analyze the config of the mesh in --state-dir, if one runs (files win on conflicts)")
@click.option("-o", "--output", type=click.Choice(["text", "log", "json", "yaml"]), default="text")
@click.option("--failure-threshold", type=click.Choice(["Error", "Warning", "Info"], case_sensitive=False),
              default="Error", show_default=True, help="the least severe level that makes the exit status non-zero")
@click.option("--output-threshold", type=click.Choice(["Error", "Warning", "Info"], case_sensitive=False),
              default="Info", show_default=True, help="the least severe level that is printed")
@state_dir_option
def analyze(files: tuple[str, ...], namespace: str, use_mesh: bool, output: str, failure_threshold: str,
            output_threshold: str, state_dir: str) -> None:
    """Report config that is valid but will not do what its author meant (Istio-style codes, fix hints)."""
    resources = {}
    if use_mesh:
        try:
            api = ApiClient(state_dir)
            for kind in KINDS:
                for d in api.list_resources(kind):
                    r = from_dict(d)
                    resources[r.key] = r
        except MeshUnavailable:
            pass
    read, workloads, messages = read_for_analysis(read_inputs(files), namespace)
    resources.update({r.key: r for r in read})
    messages = sort_messages([*messages, *run_analyzers(resources.values(), workloads)])
    shown = [m for m in messages if LEVELS[m.level] <= LEVELS[LEVEL_NAMES[output_threshold.lower()]]]
    if output == "json":
        click.echo(json.dumps([m.istioctl() for m in shown], indent=2))
    elif output == "yaml":
        click.echo(yaml.safe_dump([m.istioctl() for m in shown], sort_keys=False), nl=False)
    elif not shown:
        click.echo("✔ No validation issues found when analyzing the given config.")
    else:
        for m in shown:
            click.echo(str(m))
    worst = LEVELS[LEVEL_NAMES[failure_threshold.lower()]]
    sys.exit(EXIT_FOUND_ISSUES if any(LEVELS[m.level] <= worst for m in messages) else 0)
