"""The `mizzen` command line: a thin front end (click + rich) over `mizzen.client`.

Every command is named explicitly: the config verbs here, the others in COMMANDS (the `*/commands.py`
modules of the packages that implement them), imported only when used. A command module that does not import
is a crash with a traceback, never a silently missing verb.
"""
from __future__ import annotations

import sys
from typing import Any

import click

from ..api import DEFAULT_NAMESPACE
from ..client import ApiClient, HttpError
from .options import MizzenGroup, api_client, api_options, fail, state_dir_option
from .render import dump, dump_documents, kind_cells, kind_columns, kind_ref, print_table

INSTANCE_NAMES = ("instances", "instance", "inst")
SERVICE_NAMES = ("services", "service", "svc")


def _kind(name: str) -> str:
    from ..api import KINDS, resolve_kind

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
    from ..manifests import read_inputs

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
    from ..manifests import read_inputs

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

# Every other verb, as "module:attribute": its module is imported only when that verb runs (or --help lists
# them), so `mizzen exec` does not pay for the control plane's, the analyzers' and the benchmarks' imports.
COMMANDS: dict[str, str] = {
    "up": "mizzen.local.commands:up", "down": "mizzen.local.commands:down", "exec": "mizzen.local.commands:exec_",
    "status": "mizzen.local.commands:status", "rollout": "mizzen.local.commands:rollout",
    "scale": "mizzen.local.commands:scale", "proxy": "mizzen.local.commands:proxy",
    "proxy-status": "mizzen.cli.proxy:proxy_status", "proxy-config": "mizzen.cli.proxy:proxy_config",
    "agent": "mizzen.agent.commands:agent", "controlplane": "mizzen.server.commands:controlplane",
    "bench": "mizzen.bench.commands:bench", "analyze": "mizzen.analyze.commands:analyze",
    "validate": "mizzen.analyze.commands:validate", "logs": "mizzen.cli.logs:logs", "etcd": "mizzen.etcd.commands:etcd",
    "ratelimit": "mizzen.ratelimit.commands:ratelimit", "ca": "mizzen.ca.commands:ca", "token": "mizzen.cli.token:token",
    "stat": "mizzen.cli.telemetry:stat", "top": "mizzen.cli.telemetry:top", "tap": "mizzen.cli.telemetry:tap",
    "traces": "mizzen.cli.telemetry:traces", "dashboard": "mizzen.cli.telemetry:dashboard",
    "prometheus-config": "mizzen.cli.telemetry:prometheus_config", "mesh": "mizzen.cli.mesh:mesh",
    "chaos": "mizzen.chaos.commands:chaos", "proxyless-bootstrap": "mizzen.proxyless.commands:proxyless_bootstrap",
}


class LazyGroup(MizzenGroup):
    """Commands in COMMANDS are imported on first use. A module that does not import is still a crash with a
    traceback (tests/unit/test_cli_commands.py loads every one), never a silently missing verb."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is None and name in COMMANDS:
            import importlib

            module, attr = COMMANDS[name].split(":")
            cmd = getattr(importlib.import_module(module), attr)
            self.add_command(cmd, name=name)
        return cmd


def build_cli() -> click.Group:
    @click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
    def cli() -> None:
        """Mizzen: a service mesh with a Python control plane and Envoy sidecars."""

    for cmd in (apply, delete, get):
        cli.add_command(cmd)
    return cli


def main(argv: list[str] | None = None) -> None:
    build_cli()(args=argv, prog_name="mizzen")


if __name__ == "__main__":
    main()
