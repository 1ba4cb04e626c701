"""Output helpers for the CLI: kubectl-like plain tables (rich), YAML/JSON dumps, kind names."""
from __future__ import annotations

import json
import sys
from typing import Any, Iterable, Sequence

import click
import yaml
from rich.console import Console
from rich.table import Table

from ..api import Issue


def console() -> Console:
    """A console on the current stdout (made per call: CliRunner swaps sys.stdout). Wide and uncoloured
    when not a terminal, so piped output is never wrapped."""
    out = sys.stdout
    tty = out.isatty()
    return Console(file=out, width=None if tty else 400, no_color=not tty, highlight=False,
                   soft_wrap=not tty)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str | None = None) -> None:
    rows = [[("-" if c is None or c == "" else str(c)) for c in r] for r in rows]
    if not rows and empty:
        click.echo(empty, err=True)
        return
    t = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 3, 0, 0), header_style="bold")
    for h in headers:
        t.add_column(h, no_wrap=True, overflow="ignore")
    for r in rows:
        t.add_row(*r)
    con = console()
    with con.capture() as cap:
        con.print(t, markup=False)
    for line in cap.get().splitlines():
        click.echo(line.rstrip())


def dump(data: Any, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip("\n"))


def dump_documents(docs: list[dict[str, Any]], fmt: str, *, single: bool) -> None:
    """yaml: documents separated by '---' (re-applyable); json: the object, or a List of them."""
    if fmt == "json":
        dump(docs[0] if single and docs else {"apiVersion": "v1", "kind": "List", "items": docs}, "json")
    else:
        click.echo(yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False).rstrip("\n"))


def kind_ref(kind: str) -> str:
    """kubectl's resource reference: virtualservice.networking.istio.io, service, workload.mizzen.dev."""
    from ..api import KINDS  # every kind's schema: imported when a table needs one

    info = KINDS.get(kind)
    version = info.api_versions[0] if info else "v1"
    group = version.rsplit("/", 1)[0] if "/" in version else ""
    return f"{kind.lower()}.{group}" if group else kind.lower()


def issue_line(d: dict[str, Any]) -> str:
    """An Issue (REST dict form) printed as Issue.__str__ does."""
    fields = {k: d.get(k) for k in ("file", "document", "kind", "namespace", "name", "path")}
    return str(Issue(str(d.get("message", "")), **{k: v for k, v in fields.items() if v is not None}))


def input_issue_line(i: Issue) -> str:
    """A problem with an input file: `FILE: MESSAGE` when it names only the file (e.g. it cannot be read)."""
    if i.document is None and i.kind is None and i.path is None:
        return f"{i.file}: {i.message}"
    return str(i)


def _join(items: Iterable[Any], limit: int = 4) -> str:
    items = [str(i) for i in items]
    if len(items) > limit:
        return ",".join(items[:limit]) + f",+{len(items) - limit} more"
    return ",".join(items)


def _labels(d: dict[str, Any] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in (d or {}).items())


def _applies_to(doc: dict[str, Any]) -> str:
    """Where a security policy applies: its selector, its targetRefs, else its namespace (mesh-wide in the root
    namespace)."""
    spec, ns = doc.get("spec") or {}, doc.get("metadata", {}).get("namespace")
    refs = ([spec["targetRef"]] if spec.get("targetRef") else []) + list(spec.get("targetRefs") or [])
    if refs:
        return _join(f"{r.get('kind')}/{r.get('name')}" for r in refs)
    sel = (spec.get("selector") or {}).get("matchLabels")
    if sel:
        return _labels(sel)
    return "mesh" if ns == "istio-system" else f"namespace {ns}"


def kind_columns(kind: str, wide: bool) -> list[str]:
    cols = {
        "VirtualService": ["GATEWAYS", "HOSTS"],
        "DestinationRule": ["HOST", "SUBSETS"],
        "ServiceEntry": ["HOSTS", "LOCATION", "RESOLUTION"],
        "Gateway": ["SERVERS"],
        "Sidecar": ["SELECTOR"],
        "Service": ["PORTS", "SELECTOR"],
        "Workload": ["REPLICAS", "SIDECAR", "PORTS"],
        "Namespace": ["INJECT"],
        "RateLimit": ["MODE", "TARGET", "LIMITS"],
        "AuthorizationPolicy": ["ACTION", "APPLIES-TO", "RULES"],
        "RequestAuthentication": ["APPLIES-TO", "ISSUERS"],
    }.get(kind, [])
    return cols + (["COMMAND"] if wide and kind == "Workload" else []) + (["LABELS"] if wide else [])


def kind_cells(doc: dict[str, Any], wide: bool) -> list[Any]:
    kind, spec = doc.get("kind", ""), doc.get("spec") or {}
    if kind == "VirtualService":
        cells: list[Any] = [_join(spec.get("gateways", [])), _join(spec.get("hosts", []))]
    elif kind == "DestinationRule":
        cells = [spec.get("host"), _join(s.get("name") for s in spec.get("subsets", []))]
    elif kind == "ServiceEntry":
        cells = [_join(spec.get("hosts", [])), spec.get("location", "MESH_EXTERNAL"), spec.get("resolution", "NONE")]
    elif kind == "Gateway":
        cells = [_join(f"{s.get('port', {}).get('number')}:{_join(s.get('hosts', []), 2)}"
                       for s in spec.get("servers", []))]
    elif kind == "Sidecar":
        cells = [_labels((spec.get("workloadSelector") or {}).get("labels"))]
    elif kind == "AuthorizationPolicy":
        rules = spec.get("rules") or []
        dry = (doc.get("metadata", {}).get("annotations") or {}).get("istio.io/dry-run") == "true"
        cells = [spec.get("action", "ALLOW") + (" (dry-run)" if dry else ""), _applies_to(doc),
                 len(rules) if rules else ("none: allows nothing" if spec.get("action", "ALLOW") == "ALLOW" else 0)]
    elif kind == "RequestAuthentication":
        cells = [_applies_to(doc), _join(r.get("issuer") or r.get("jwksUri") for r in spec.get("jwtRules", []))]
    elif kind == "Service":
        cells = [_join(f"{p.get('port')}/{p.get('name') or p.get('protocol', 'TCP')}" for p in spec.get("ports", [])),
                 _labels(spec.get("selector"))]
    elif kind == "Workload":
        cells = [spec.get("replicas", 1), {True: "yes", False: "no"}.get(spec.get("sidecar"), "by-ns"),
                 _join(p.get("containerPort") for p in spec.get("ports", []))]
        if wide:
            cells.append(" ".join(spec.get("command", [])))
    elif kind == "Namespace":
        cells = [(doc.get("metadata", {}).get("labels") or {}).get("mizzen.dev/inject", "-")]
    elif kind == "RateLimit":
        sel = spec.get("workloadSelector")
        cells = [spec.get("mode", "local"), f"host={spec['host']}" if spec.get("host") else
                 f"workloads({_labels((sel or {}).get('labels')) or 'all'})",
                 _join(f"{lim.get('name')}:{lim.get('algorithm', 'token_bucket')}" for lim in spec.get("limits", []))]
    else:
        cells = []
    if wide:
        cells.append(_labels(doc.get("metadata", {}).get("labels")))
    return cells
