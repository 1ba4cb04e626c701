"""`mizzen analyze -f FILE` (analyze files, together with the running mesh's config when there is one) and
`mizzen validate -f FILE` (check files offline, as `istioctl validate`).

Output and exit status as `istioctl analyze`: text lines `Level [CODE] (Kind ns/name ...) message`, or `-o json`
/ `-o yaml` lists of {code, level, message, origin, reference, documentationUrl}; exit status 79 when a
message is at least as severe as `--failure-threshold` (default Error), 0 otherwise.
"""
from __future__ import annotations

import json
import sys
from typing import Any

import click
import yaml

from ..api import KINDS, InvalidConfig, Issue, from_dict, load_sources
from ..cli.options import api_client, api_options
from ..client import MeshUnavailable
from ..manifests import read_inputs
from ..model.router import conflicts
from .analyzers import analyze as run_analyzers
from .base import LEVELS, sort_messages
from .inputs import read_for_analysis, registered_workloads

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
@api_options
def analyze(files: tuple[str, ...], namespace: str, use_mesh: bool, output: str, failure_threshold: str,
            output_threshold: str, state_dir: str) -> None:
    """Report config that is valid but will not do what its author meant (Istio-style codes, fix hints)."""
    resources = {}
    running = []
    if use_mesh:
        try:
            api = api_client(state_dir)
            for kind in KINDS:
                for d in api.list_resources(kind):
                    r = from_dict(d)
                    resources[r.key] = r
            running = registered_workloads(api.instances())  # the registry's instances run pods too
        except MeshUnavailable:
            pass
    read, workloads, messages = read_for_analysis(read_inputs(files), namespace)
    workloads = [*workloads, *running]
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


# ------------------------------------------------------------------ mizzen validate
# Offline, as `istioctl validate`: every document parsed and validated with apply's rules (schema, Istio's
# rules, a Router's host conflicts within the input); nothing is sent anywhere.

def validate_sources(files: list[tuple[str, str]], namespace: str, skip_unknown: bool) -> dict[str, Any]:
    """{"resources": [...], "warnings": [Issue], "errors": [Issue]} for the given (name, text) inputs."""
    try:
        res = load_sources(files, default_namespace=namespace, skip_unknown=skip_unknown)
    except InvalidConfig as e:
        return {"resources": [], "warnings": [], "errors": e.issues}
    errors: list[Issue] = conflicts(res.resources, [])
    return {"resources": res.resources, "warnings": res.warnings, "errors": errors}


@click.command("validate")
@click.option("-f", "--filename", "files", multiple=True, required=True, metavar="FILE",
              help="a manifest, a directory of *.yaml/*.yml, or - for stdin (repeatable)")
@click.option("-n", "--namespace", default="default", show_default=True, help="namespace for documents without one")
@click.option("--skip-unknown", is_flag=True, help="warn about documents of unknown kinds instead of failing")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def validate(files: tuple[str, ...], namespace: str, skip_unknown: bool, output: str) -> None:
    """Validate manifests offline (like istioctl validate): exit status 1 when any document is invalid."""
    out = validate_sources(read_inputs(files), namespace, skip_unknown)
    if output == "json":
        click.echo(json.dumps({
            "valid": not out["errors"],
            "resources": [{"kind": r.kind, "namespace": r.namespace, "name": r.name} for r in out["resources"]],
            "errors": [i.to_dict() for i in out["errors"]],
            "warnings": [i.to_dict() for i in out["warnings"]],
        }, indent=2))
    else:
        for w in out["warnings"]:
            click.echo(f"Warning: {w}", err=True)
        if out["errors"]:
            n = len(out["errors"])
            click.echo(f"Error: {n} error{'s' if n != 1 else ''} occurred:", err=True)
            for i in out["errors"]:
                click.echo(f"\t* {i}", err=True)
        else:
            n = len(out["resources"])
            click.echo(f"validation succeed ({n} resource{'s' if n != 1 else ''})")
    sys.exit(1 if out["errors"] else 0)
