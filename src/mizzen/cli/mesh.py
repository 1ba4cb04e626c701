"""`mizzen mesh bypass on|off [--namespace NS]`: switch the sidecars' traffic capture off (apps reach each
other directly at their registry addresses; service VIPs and the Consul API keep answering) or on again,
mesh-wide or for one namespace, with nothing restarted. The switch is stored (a Namespace label), so every
runner on every host follows it; this command applies it and waits until this mesh's pods have switched
(local/bypass.py says how)."""
from __future__ import annotations

import time

import click
import yaml

from ..client import ApiClient, HttpError, Unavailable
from ..local.bypass import ROOT_NAMESPACE, is_bypassed, namespace_labels, switch_documents
from ..local.meshstate import live_status
from .options import ServerError, fail, state_dir_option


@click.group("mesh")
@state_dir_option
@click.pass_context
def mesh(ctx: click.Context, state_dir: str) -> None:
    """Mesh-wide switches."""
    ctx.obj = {"state_dir": state_dir} if ctx.get_parameter_source("state_dir") not in (
        click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP) else {}


@mesh.command("bypass")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option("-n", "--namespace", default=None, help="only this namespace (default: the whole mesh)")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="wait until every sidecar pod of the namespace(s) has switched")
@click.option("--timeout", default=60.0, show_default=True, help="seconds --wait waits")
@state_dir_option
def bypass(state: str, namespace: str | None, wait: bool, timeout: float, state_dir: str) -> None:
    """Switch sidecar capture off (on: apps talk directly) or back on (off)."""
    ctx = click.get_current_context()
    parent = (ctx.parent.obj or {}).get("state_dir") if ctx.parent is not None and isinstance(ctx.parent.obj, dict) \
        else None
    if parent and ctx.get_parameter_source("state_dir") in (click.core.ParameterSource.DEFAULT,
                                                            click.core.ParameterSource.DEFAULT_MAP):
        state_dir = parent
    api = ApiClient(state_dir)
    try:
        docs = switch_documents(api.list_resources("Namespace"), state == "on", namespace)
        api.apply([("<mesh bypass>", yaml.safe_dump_all(docs, sort_keys=False))])
    except HttpError as e:
        raise ServerError(e) from None
    except Unavailable as e:
        fail(str(e))
    where = f"namespace {namespace}" if namespace else f"the whole mesh ({ROOT_NAMESPACE} label)"
    click.echo(f"bypass {state} for {where}: stored")
    if not wait:
        return
    deadline = time.monotonic() + timeout
    while True:
        labels = namespace_labels(api.list_resources("Namespace"))
        st = live_status(state_dir) or {}
        pods = [p for p in st.get("pods", []) if p.get("sidecar") and not p.get("terminating")
                and (namespace is None or p.get("namespace") == namespace)]
        pending = [p["name"] for p in pods
                   if p.get("bypass", "off") != ("on" if is_bypassed(p.get("namespace", "default"), labels) else "off")]
        if not pending:
            click.echo(f"{len(pods)} sidecar pod(s) {'bypassed' if state == 'on' else 'capturing again'}")
            return
        if time.monotonic() > deadline:
            fail(f"not switched after {timeout:.0f} s: {', '.join(pending)} (is the runner running? "
                 f"`mizzen status`)")
        time.sleep(0.3)
