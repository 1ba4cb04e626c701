"""`mizzen validate -f FILE...`: check manifests offline, as `istioctl validate` does — every document is parsed
and validated with the same rules `mizzen apply` uses (schema, Istio's validation rules, a Router's host
conflicts within the input), and nothing is sent anywhere."""
from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..api import InvalidConfig, Issue, load_sources
from ..manifests import read_inputs
from ..model.router import conflicts


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
