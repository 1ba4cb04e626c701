"""The `mizzen` command line: a thin front end (click + rich) over `mizzen.client`.

Every command is registered explicitly in `build_cli()`: the config verbs here, the others from the
`*/commands.py` modules of the packages that implement them. A command module that does not import is a
crash with a traceback, never a silently missing verb.
"""
from __future__ import annotations

import sys
from typing import Any

import click

from ..agent.commands import agent
from ..analyze.commands import analyze, validate
from ..api import DEFAULT_NAMESPACE, KINDS, resolve_kind
from ..bench.commands import bench
from ..ca.commands import ca
from ..chaos.commands import chaos
from ..client import ApiClient, HttpError
from ..etcd.commands import etcd
from ..local.commands import down, exec_, proxy, rollout, scale, status, up
from ..manifests import read_inputs
from ..ratelimit.commands import ratelimit
from ..proxyless.commands import proxyless_bootstrap
from ..server.commands import controlplane
from .logs import logs
from .mesh import mesh
from .options import MizzenGroup, api_client, api_options, fail, state_dir_option
from .telemetry import dashboard, prometheus_config, stat, tap, top, traces
from .proxy import register as register_proxy_commands
from .token import token
from .render import dump, dump_documents, kind_cells, kind_columns, kind_ref, print_table

INSTANCE_NAMES = ("instances", "instance", "inst")
SERVICE_NAMES = ("services", "service", "svc")


def _kind(name: str) -> str:
    try:
        return resolve_kind(name).kind
    except KeyError:
        known = sorted({k.plural for k in KINDS.values()} | {"instances", "services"})
        fail(f'the server doesn\'t have a resource type "{name}" (known: {", ".join(known)})')


# ------------------------------------------------------------------ apply / delete

@click.command()
@click.option("-f", "--filename", "files", multiple=True, required=True, metavar="FILE",
              help="a manifest, a directory of *.yaml/*.yml, or - for stdin (repeatable)")
@click.option("-n", "--namespace", default=None, help="namespace for documents that name none")
@click.option("--dry-run", is_flag=True, help="every check on the server, nothing stored (kubectl's --dry-run=server)")
@click.option("--skip-unknown", is_flag=True, help="apply the known kinds; warn about each document of another kind")
@api_options
def apply(files: tuple[str, ...], namespace: str | None, dry_run: bool, skip_unknown: bool, state_dir: str) -> None:
    """Create or update resources from manifests, all-or-nothing."""
    out = api_client(state_dir).apply(read_inputs(files), namespace, dry_run=dry_run, skip_unknown=skip_unknown)
    for w in out.get("warnings", []):
        click.echo(f"Warning: {w}", err=True)
    for a in out.get("applied", []):
        click.echo(f"{kind_ref(a['kind'])}/{a['name']} {a['action']}" + (" (dry run)" if out.get("dryRun") else ""))


@click.command()
@click.argument("args", nargs=-1, metavar="[KIND NAME...]")
@click.option("-f", "--filename", "files", multiple=True, metavar="FILE", help="delete what these manifests name")
@click.option("-n", "--namespace", default=None)
@api_options
def delete(args: tuple[str, ...], files: tuple[str, ...], namespace: str | None, state_dir: str) -> None:
    """Delete resources named in manifests (-f), or KIND NAME [NAME...]. All-or-nothing with -f."""
    api = api_client(state_dir)
    if files:
        if args:
            fail("give either -f FILE or KIND NAME, not both")
        out = api.delete_files(read_inputs(files), namespace)
        for w in out.get("warnings", []):
            click.echo(f"Warning: {w}", err=True)
        for k in out.get("deleted", []):
            click.echo(f'{kind_ref(k["kind"])} "{k["name"]}" deleted')
        return
    if len(args) < 2:
        fail("usage: mizzen delete KIND NAME [NAME...] [-n NS]  or  mizzen delete -f FILE")
    kind, ns, failed = _kind(args[0]), namespace or DEFAULT_NAMESPACE, False
    for name in args[1:]:
        try:
            api.delete_resource(kind, ns, name)
        except HttpError as e:
            if e.status != 404:
                raise
            click.echo(f'Error from server (NotFound): {kind_ref(kind)} "{name}" not found in namespace {ns}',
                       err=True)
            failed = True
            continue
        click.echo(f'{kind_ref(kind)} "{name}" deleted')
    if failed:
        sys.exit(1)


# ------------------------------------------------------------------ get

def _ns_filter(namespace: str | None, all_namespaces: bool) -> str | None:
    if all_namespaces and namespace:
        fail("give either -n NAMESPACE or -A, not both")
    return None if all_namespaces else (namespace or DEFAULT_NAMESPACE)


def _none_found(ns: str | None) -> str:
    return "No resources found." if ns is None else f"No resources found in {ns} namespace."


def _get_instances(api: ApiClient, names: tuple[str, ...], ns: str | None, output: str) -> None:
    items = api.instances(ns)
    if names:
        items = [i for i in items if i.get("id") in names or str(i.get("id")).split(".", 1)[-1] in names]
    if output in ("yaml", "json"):
        return dump(items, output)
    wide = output == "wide"
    rows = []
    for i in items:
        row: list[Any] = [i.get("namespace"), i.get("id"), i.get("workload"), i.get("address"),
                          ",".join(str(p) for p in i.get("ports", [])), "yes" if i.get("healthy", True) else "no"]
        if wide:
            row += [i.get("locality"), ",".join(f"{k}={v}" for k, v in (i.get("labels") or {}).items()),
                    i.get("source")]
        rows.append(row)
    headers = ["NAMESPACE", "ID", "WORKLOAD", "ADDRESS", "PORTS", "HEALTHY"]
    print_table(headers + (["LOCALITY", "LABELS", "SOURCE"] if wide else []), rows, empty=_none_found(ns))


def _get_services(api: ApiClient, names: tuple[str, ...], ns: str | None, output: str) -> None:
    items = api.services(ns)
    if names:
        items = [s for s in items if s.get("name") in names]
    rows = []
    for s in sorted(items, key=lambda s: (str(s.get("namespace")), str(s.get("name")))):
        ports = ",".join(f"{p.get('port')}/{p.get('name') or p.get('protocol') or 'tcp'}"
                         + (f"->{p['targetPort']}" if p.get("targetPort") not in (None, p.get("port")) else "")
                         for p in s.get("ports", []))
        rows.append([s.get("namespace"), s.get("name"), s.get("vip"), ports, s.get("hostname")])
    print_table(["NAMESPACE", "NAME", "VIP", "PORTS", "HOSTNAME"], rows, empty=_none_found(ns))


@click.command()
@click.argument("kind")
@click.argument("names", nargs=-1)
@click.option("-n", "--namespace", default=None)
@click.option("-A", "--all-namespaces", is_flag=True, help="every namespace")
@click.option("-o", "--output", type=click.Choice(["table", "wide", "yaml", "json"]), default="table")
@api_options
def get(kind: str, names: tuple[str, ...], namespace: str | None, all_namespaces: bool, output: str,
        state_dir: str) -> None:
    """List resources (KIND: vs, dr, se, svc, workloads, sidecar, gw, sa...), or `instances` / `services`."""
    api = api_client(state_dir)
    ns = _ns_filter(namespace, all_namespaces)
    low = kind.lower()
    if low in INSTANCE_NAMES:
        return _get_instances(api, names, ns, output)
    if low in SERVICE_NAMES and output in ("table", "wide"):
        return _get_services(api, names, ns, output)
    k = _kind(kind)
    missing = False
    if names:
        if ns is None:
            fail("a resource cannot be retrieved by name across all namespaces")
        docs = []
        for name in names:
            try:
                docs.append(api.get_resource(k, ns, name))
            except HttpError as e:
                if e.status != 404:
                    raise
                click.echo(f'Error from server (NotFound): {kind_ref(k)} "{name}" not found in namespace {ns}',
                           err=True)
                missing = True
    else:
        docs = api.list_resources(k, ns)
    if output in ("yaml", "json"):
        if docs or (output == "json" and not names):
            dump_documents(docs, output, single=len(names) == 1)
        elif not names:
            click.echo(_none_found(ns), err=True)
    elif docs or not missing:
        wide = output == "wide"
        rows = [[d["metadata"].get("namespace"), d["metadata"].get("name"), *kind_cells(d, wide),
                 d["metadata"].get("resourceVersion", "")] for d in docs]
        print_table(["NAMESPACE", "NAME", *kind_columns(k, wide), "REVISION"], rows, empty=_none_found(ns))
    if missing:
        sys.exit(1)


# ------------------------------------------------------------------ the group

def build_cli() -> click.Group:
    @click.group(cls=MizzenGroup, context_settings={"help_option_names": ["-h", "--help"]})
    def cli() -> None:
        """Mizzen: a service mesh with a Python control plane and Envoy sidecars."""

    for cmd in (apply, delete, get):
        cli.add_command(cmd)
    register_proxy_commands(cli.add_command)
    for cmd, name in ((up, "up"), (down, "down"), (exec_, "exec"), (status, "status"), (rollout, "rollout"),
                      (scale, "scale"), (proxy, "proxy"), (agent, "agent"), (controlplane, "controlplane"),
                      (bench, "bench"), (analyze, "analyze"), (validate, "validate"), (logs, "logs"), (etcd, "etcd"),
                      (ratelimit, "ratelimit"), (ca, "ca"), (token, "token"), (stat, "stat"), (top, "top"), (tap, "tap"),
                      (traces, "traces"), (dashboard, "dashboard"), (prometheus_config, "prometheus-config"),
                      (mesh, "mesh"), (chaos, "chaos"), (proxyless_bootstrap, "proxyless-bootstrap")):
        cli.add_command(cmd, name=name)
    return cli


def main(argv: list[str] | None = None) -> None:
    build_cli()(args=argv, prog_name="mizzen")


if __name__ == "__main__":
    main()
