"""Expand `mizzen.dev/v1 Router` resources into the VirtualService + DestinationRule they stand for. PURE.

Router `web` (port 9090, default branch master with versions {v1: 90, v2: 10}, sandbox branch box-1):
- DestinationRule `web` (annotated as generated): subsets `master-v1`, `master-v2` (labels branch+version),
  `box-1` (label branch);
- VirtualService `web`: callers labelled `branch: box-1` → subset box-1 (sourceLabels match); every other
  caller → the default branch split by version weight.
"""
from __future__ import annotations

from typing import Iterable

from ..api.base import InvalidConfig, Issue, Resource
from ..api.load import parse_document
from .services import resolve_host

GENERATED_BY = "mizzen.dev/generated-by"


def router_host(r: Resource) -> str:
    return r.spec.host or r.name


def _subset_name(branch: str, version: str | None) -> str:
    return f"{branch}-{version}" if version else branch


def _destinations(r: Resource, branch) -> list[dict]:
    host, port = router_host(r), r.spec.port
    if not branch.versions:
        return [{"destination": {"host": host, "subset": _subset_name(branch.branch, None), "port": {"number": port}}}]
    return [{"destination": {"host": host, "subset": _subset_name(branch.branch, v), "port": {"number": port}},
             "weight": w} for v, w in branch.versions.items() if w > 0] or \
        [{"destination": {"host": host, "subset": _subset_name(branch.branch, next(iter(branch.versions))),
                          "port": {"number": port}}}]


def expand(r: Resource) -> tuple[Resource, Resource]:
    """The (VirtualService, DestinationRule) a Router generates; raises InvalidConfig if they are invalid."""
    spec = r.spec
    meta = {"name": r.name, "namespace": r.namespace,
            "annotations": {GENERATED_BY: f"Router/{r.namespace}/{r.name}"}}
    subsets = []
    for b in spec.subsets:
        if b.versions:
            for v in b.versions:
                subsets.append({"name": _subset_name(b.branch, v),
                                "labels": {spec.branch_label: b.branch, spec.version_label: v}})
        else:
            subsets.append({"name": _subset_name(b.branch, None), "labels": {spec.branch_label: b.branch}})
    dr_doc = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": meta,
              "spec": {"host": router_host(r), "subsets": subsets}}
    http = []
    default = next(b for b in spec.subsets if b.branch == spec.default_branch)
    for b in spec.subsets:
        if b.branch == spec.default_branch:
            continue
        http.append({"name": f"branch-{b.branch}", "match": [{"sourceLabels": {spec.branch_label: b.branch}}],
                     "route": _destinations(r, b)})
    route = _destinations(r, default)
    if len(route) == 1:
        route[0].pop("weight", None)
    http.append({"name": f"default-{default.branch}", "route": route})
    vs_doc = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": meta,
              "spec": {"hosts": [router_host(r)], "http": http}}
    out = []
    for doc in (vs_doc, dr_doc):
        res, errs, _ = parse_document(doc, file=f"<Router {r.namespace}/{r.name}>", default_namespace=r.namespace)
        if res is None:
            raise InvalidConfig(errs)
        out.append(res.with_revision(r.revision))
    return out[0], out[1]


def is_generated(r: Resource) -> bool:
    return GENERATED_BY in r.metadata.annotations


def expand_all(resources: Iterable[Resource], known_namespaces: Iterable[str]) -> list[Resource]:
    """Replace Routers by what they generate; a hand-written VS/DR for a Router's host is dropped (the apply
    validator rejects it; this keeps a store written by an older version consistent)."""
    resources = list(resources)
    known = set(known_namespaces)
    routers = [r for r in resources if r.kind == "Router"]
    if not routers:
        return resources
    hosts = {resolve_host(router_host(r), r.namespace, known) for r in routers}
    out = []
    for res in resources:
        if res.kind == "Router":
            continue
        if res.kind in ("VirtualService", "DestinationRule") and _hosts(res, known) & hosts:
            continue
        out.append(res)
    for r in routers:
        out.extend(expand(r))
    return out


def _hosts(res: Resource, known: set[str]) -> set[str]:
    if res.kind == "VirtualService":
        return {resolve_host(h, res.namespace, known) for h in res.spec.hosts}
    return {resolve_host(res.spec.host, res.namespace, known)}


def conflicts(applied: list[Resource], current: list[Resource]) -> list[Issue]:
    """Apply-time check: a VirtualService or DestinationRule may not claim a host a Router owns."""
    merged = {r.key: r for r in current}
    merged.update({r.key: r for r in applied})
    known = {r.namespace for r in merged.values()}
    router_hosts = {resolve_host(router_host(r), r.namespace, known): r for r in merged.values() if r.kind == "Router"}
    applied_keys = {r.key for r in applied}
    issues = []
    for r in applied:
        if r.kind == "Router":
            try:
                expand(r)
            except InvalidConfig as e:
                issues.extend(e.issues)
    for res in merged.values():
        if res.kind not in ("VirtualService", "DestinationRule") or is_generated(res):
            continue
        for h in _hosts(res, known):
            router = router_hosts.get(h)
            if router is None or (res.key not in applied_keys and router.key not in applied_keys):
                continue
            who = res if res.key in applied_keys else router
            issues.append(Issue(
                f"host {h} is managed by Router {router.namespace}/{router.name}; a hand-written {res.kind} "
                f"({res.namespace}/{res.name}) for it conflicts — change the Router instead, or delete it first",
                "<apply>", None, who.kind, who.namespace, who.name,
                "spec.hosts" if who.kind == "VirtualService" else ("spec.host" if who.kind == "DestinationRule"
                                                                    else "spec")))
    return issues
