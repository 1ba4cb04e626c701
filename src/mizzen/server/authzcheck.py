"""Apply-time advice on security policy (warnings in the apply answer, never a refusal): an AuthorizationPolicy
rule with HTTP-only fields that applies to a TCP port, which Istio silently narrows (ALLOW) or widens (DENY)
there — Mizzen says so when the policy is applied, and `mizzen analyze` says it again (analyze/security.py)."""
from __future__ import annotations

from ..api.base import Issue, Resource
from ..model import authz
from ..model.snapshot import ConfigIndex


def authz_warnings(applied: list[Resource], current: list[Resource]) -> list[Issue]:
    before = {r.key: r for r in current}

    def changed(r: Resource) -> bool:  # re-applying the same resource says nothing again
        old = before.get(r.key)
        return old is None or old.spec != r.spec or old.metadata.labels != r.metadata.labels

    policies = {r.key for r in applied if r.kind == "AuthorizationPolicy" and changed(r)}
    workloads = {f"{r.namespace}/{r.name}" for r in applied if r.kind == "Workload" and changed(r)}
    if not policies and not workloads:
        return []
    merged = {r.key: r for r in current}
    merged.update({r.key: r for r in applied})
    config = ConfigIndex(merged.values())
    out: list[Issue] = []
    for p in config.by_kind.get("AuthorizationPolicy", ()):
        if p.key in policies:
            out += [Issue(msg, "<apply>", None, p.kind, p.namespace, p.name, path)
                    for path, msg in authz.deny_http_only(p)]
        # an applied policy on a TCP port, or an applied Workload that puts a policy on one
        out += [Issue(f.message, "<apply>", None, p.kind, p.namespace, p.name, f"spec.rules[{f.rule_index}]")
                for f in authz.http_on_tcp(config, p) if p.key in policies or f.workload in workloads]
    return out
