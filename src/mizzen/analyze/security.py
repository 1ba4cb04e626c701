"""`mizzen analyze` for AuthorizationPolicy and RequestAuthentication: policies that can never match, or that do
something else than they seem to. PURE. Istio's codes where istioctl has one (IST0101, IST0127), Mizzen's
`MZ02xx` otherwise; each message has a fix hint.

| code | level | what |
|---|---|---|
| IST0101 | Error | a `namespaces`/`notNamespaces` value, or the namespace of a `principals` value, names no namespace of the mesh; a `targetRefs` Service that does not exist |
| IST0127 | Warning | the policy selects no workload (only when the config has Workloads) |
| MZ0201 | Warning | a rule with HTTP-only fields applies to a TCP port: ALLOW → ignored there, DENY → widened there |
| MZ0202 | Warning | a DENY rule narrowed only by HTTP attributes (Istio's validation warning): denies all TCP traffic in scope |
| MZ0203 | Warning | an ALLOW policy without rules: it allows nothing (Istio's allow-nothing) — `rules: [{}]` allows all |
| MZ0204 | Warning | `requestPrincipals`/`request.auth.*` on workloads no RequestAuthentication applies to: never matches |
| MZ0205 | Warning | a principal not of the form <td>/ns/<ns>/sa/<sa>, or whose service account no Workload runs as |
| MZ0206 | Warning | `targetRefs` of a kind that binds no sidecar (Gateway, ServiceEntry, ...) |
| MZ0207 | Info | a mesh-wide DENY with an empty rule: every request in the mesh is denied |

Each check takes a ConfigIndex of the analyzed config and a message factory; `security_policies` registers
them all as one analyzer on analyze/base.py's Context.
"""
from __future__ import annotations

from typing import Callable, Iterable

from ..api.authorization import PRINCIPAL_FORM
from ..api.base import Resource
from ..model import authz
from ..model.labels import ROOT_NAMESPACE
from ..model.snapshot import ConfigIndex
from .base import ERROR, INFO, WARNING, Context, Message, analyzer


def _ref(r: Resource) -> str:
    return f"{r.kind} {r.namespace}/{r.name}"


def _ns_match(ns: str, pattern: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*"):
        return ns.endswith(pattern[1:])
    if pattern.endswith("*"):
        return ns.startswith(pattern[:-1])
    return ns == pattern


def _namespaces(idx: ConfigIndex) -> set[str]:
    return set(idx.namespaces) | {r.name for r in idx.by_kind.get("Namespace", ())}


def _policies(idx: ConfigIndex) -> tuple[Resource, ...]:
    return idx.by_kind.get("AuthorizationPolicy", ())


def referenced_namespaces(idx: ConfigIndex, make) -> Iterable:
    """IST0101: a namespace (in namespaces/notNamespaces, or inside a principal) the mesh does not have."""
    known = _namespaces(idx)
    for p in _policies(idx):
        for i, rule in enumerate(p.spec.rules or ()):
            for j, src in enumerate(rule.sources):
                for field, values in (("namespaces", src.namespaces), ("notNamespaces", src.not_namespaces)):
                    for k, ns in enumerate(values):
                        if not any(_ns_match(n, ns) for n in known):
                            yield make("IST0101", ERROR, _ref(p), f"Referenced namespace not found: {ns!r}",
                                       "create the namespace's resources first, or fix the name",
                                       f"spec.rules[{i}].from[{j}].source.{field}[{k}]")
                for field, values in (("principals", src.principals), ("notPrincipals", src.not_principals)):
                    for k, pr in enumerate(values):
                        parts = pr.split("/")
                        if "*" in pr or len(parts) != 5:
                            continue
                        if parts[2] not in known:
                            yield make("IST0101", ERROR, _ref(p),
                                       f"Referenced namespace not found: {parts[2]!r} (in principal {pr!r}): "
                                       "no workload can have this identity, so it never matches",
                                       "fix the principal (<trust domain>/ns/<namespace>/sa/<service account>)",
                                       f"spec.rules[{i}].from[{j}].source.{field}[{k}]")
        for k, ref in enumerate(p.spec.target_references):
            if ref.kind == "Service" and ref.group in ("", "core") and \
                    f"{ref.name}.{p.namespace}.svc.cluster.local" not in idx.services:
                yield make("IST0101", ERROR, _ref(p), f"Referenced Service not found: {p.namespace}/{ref.name}",
                           "create the Service or fix targetRefs", f"spec.targetRefs[{k}]")


def _workloads(idx: ConfigIndex):
    return authz.workload_proxies(idx)


def no_matching_workloads(idx: ConfigIndex, make) -> Iterable:
    """IST0127: a policy that applies to no Workload (when the config has Workloads to tell)."""
    workloads = _workloads(idx)
    if not workloads:
        return
    for r in (*_policies(idx), *idx.by_kind.get("RequestAuthentication", ())):
        if r.spec.target_references:
            continue  # reported by target_kinds / referenced_namespaces
        if not any(authz.applies(idx, r, proxy) for _, proxy in workloads):
            sel = r.spec.selector.match_labels if r.spec.selector else {}
            labels = ",".join(f"{k}={v}" for k, v in sorted(sel.items()))
            yield make("IST0127", WARNING, _ref(r),
                       f"No matching workloads for this resource with the following labels: {labels}",
                       "fix the selector, or deploy the workloads first", "spec.selector" if sel else "")


def http_fields_on_tcp(idx: ConfigIndex, make) -> Iterable:
    """MZ0201: a rule with HTTP-only fields on a TCP port (Istio drops the rule, ALLOW, or the fields, DENY)."""
    for p in _policies(idx):
        for f in authz.http_on_tcp(idx, p):
            yield make("MZ0201", WARNING, _ref(p), f.message,
                       "name the port's Service port http-* if it speaks HTTP, or restrict the rule to HTTP ports "
                       "(to.operation.ports)", f"spec.rules[{f.rule_index}]")


def deny_http_only(idx: ConfigIndex, make) -> Iterable:
    """MZ0202: Istio's warning for a DENY rule narrowed only by HTTP attributes."""
    for p in _policies(idx):
        for path, msg in authz.deny_http_only(p):
            yield make("MZ0202", WARNING, _ref(p), msg, "add to.operation.ports naming the HTTP ports", path)


def allow_without_rules(idx: ConfigIndex, make) -> Iterable:
    """MZ0203: an ALLOW policy with no rules allows nothing, which is easy to mistake for allow-all."""
    for p in _policies(idx):
        if p.spec.action == "ALLOW" and not p.spec.rules:
            scope = "every workload of the mesh" if p.namespace == ROOT_NAMESPACE and not p.spec.selector else (
                "the selected workloads" if p.spec.selector or p.spec.target_references
                else f"every workload of namespace {p.namespace}")
            meant = "nothing" in p.name or "deny" in p.name
            yield make("MZ0203", INFO if meant else WARNING, _ref(p),
                       f"ALLOW without rules allows nothing: every request to {scope} is denied (403) unless another "
                       "ALLOW policy matches it (Istio's allow-nothing)",
                       "to allow everything write `rules: [{}]`; to deny everything keep it (allow-nothing)",
                       "spec.rules")


def _uses_request_auth(rule) -> bool:
    return any(s.request_principals or s.not_request_principals for s in rule.sources) or \
        any(c.key.startswith("request.auth.") for c in rule.when)


def request_auth_without_jwt(idx: ConfigIndex, make) -> Iterable:
    """MZ0204: JWT attributes on workloads no RequestAuthentication validates tokens for."""
    workloads = _workloads(idx)
    for p in _policies(idx):
        rules = [i for i, r in enumerate(p.spec.rules or ()) if _uses_request_auth(r)]
        if not rules:
            continue
        bare = [f"{proxy.namespace}/{name}" for name, proxy in workloads
                if authz.applies(idx, p, proxy) and not authz.request_authentications_for(idx, proxy)]
        for i in rules:
            if bare:
                effect = "so the rule never matches" + (" (those requests are denied: 403)"
                                                        if p.spec.action == "ALLOW" else "")
                yield make("MZ0204", WARNING, _ref(p),
                           f"rule {i} matches JWT attributes, but no RequestAuthentication applies to "
                           f"{', '.join(bare)}: no token is validated there, {effect}",
                           "add a RequestAuthentication selecting these workloads", f"spec.rules[{i}]")


def principal_service_accounts(idx: ConfigIndex, make) -> Iterable:
    """MZ0205: an exact principal whose service account no Workload of that namespace runs as, or that is not a
    workload identity at all (Istio accepts any string; it matches the URI SAN spiffe://<value>)."""
    for p in _policies(idx):
        for i, rule in enumerate(p.spec.rules or ()):
            for j, src in enumerate(rule.sources):
                for k, pr in enumerate(src.principals):
                    if "*" not in pr and not PRINCIPAL_FORM.match(pr):
                        yield make("MZ0205", WARNING, _ref(p),
                                   f"principal {pr!r} is not of the form <trust domain>/ns/<namespace>/sa/<service "
                                   "account>, so no mesh certificate matches it",
                                   "write it as e.g. cluster.local/ns/default/sa/sleep",
                                   f"spec.rules[{i}].from[{j}].source.principals[{k}]")
    workloads = _workloads(idx)
    if not workloads:
        return
    accounts = {(proxy.namespace, proxy.service_account) for _, proxy in workloads}
    namespaces = {ns for ns, _ in accounts}
    for p in _policies(idx):
        for i, rule in enumerate(p.spec.rules or ()):
            for j, src in enumerate(rule.sources):
                for k, pr in enumerate(src.principals):
                    parts = pr.split("/")
                    if "*" in pr or len(parts) != 5 or parts[2] not in namespaces:
                        continue
                    if (parts[2], parts[4]) not in accounts:
                        yield make("MZ0205", WARNING, _ref(p),
                                   f"no Workload of namespace {parts[2]} runs as service account {parts[4]!r}, so "
                                   f"principal {pr!r} matches nobody now",
                                   "set spec.serviceAccount on the calling Workload, or fix the principal",
                                   f"spec.rules[{i}].from[{j}].source.principals[{k}]")


def target_kinds(idx: ConfigIndex, make) -> Iterable:
    """MZ0206: targetRefs that bind no sidecar."""
    for r in (*_policies(idx), *idx.by_kind.get("RequestAuthentication", ())):
        for k, ref in enumerate(r.spec.target_references):
            if not (ref.kind == "Service" and ref.group in ("", "core")):
                yield make("MZ0206", WARNING, _ref(r),
                           f"targetRefs {ref.group or 'core'}/{ref.kind} {ref.name} binds no sidecar (Mizzen runs no "
                           "gateways or waypoints yet): this reference has no effect",
                           "select the workloads with `selector`, or target their Service", f"spec.targetRefs[{k}]")


def mesh_wide_deny_all(idx: ConfigIndex, make) -> Iterable:
    """MZ0207: a root-namespace DENY whose rule is empty denies every request of the mesh."""
    for p in _policies(idx):
        if p.spec.action == "DENY" and p.namespace == ROOT_NAMESPACE and not p.spec.selector and \
                any(not r.from_ and not r.to and not r.when for r in p.spec.rules or ()):
            yield make("MZ0207", INFO, _ref(p), "a mesh-wide DENY with an empty rule: every request to every "
                       "workload is denied", "narrow the rule (from/to/when) or add a selector", "spec.rules")


_ALL: tuple[Callable, ...] = (referenced_namespaces, no_matching_workloads, http_fields_on_tcp, deny_http_only,
                              allow_without_rules, request_auth_without_jwt, principal_service_accounts,
                              target_kinds, mesh_wide_deny_all)


@analyzer
def security_policies(ctx: Context) -> Iterable[Message]:
    """AuthorizationPolicy and RequestAuthentication (the table above)."""
    idx = ConfigIndex(ctx.resources)
    for a in _ALL:
        yield from a(idx, Message)

