"""AuthorizationPolicy and RequestAuthentication resolved for one proxy, with Istio's semantics. Pure.

Which policies apply (Istio's `ListAuthorizationPolicies`): those of the root namespace (mesh-wide) and of the
proxy's namespace, oldest first in each, narrowed by `selector`; a policy with `targetRefs` applies only
through what it targets. Istio binds `targetRefs` to gateways and waypoints; Mizzen has neither, so a
`Service` target binds the policy to the sidecars of the workloads that Service selects (what a waypoint in
front of the service would enforce is enforced by each of its workloads), and other kinds (Gateway,
ServiceEntry) bind no sidecar (`mizzen analyze` says so).

How a proxy evaluates them (Istio): no policy = allow; CUSTOM, then DENY, then ALLOW (AUDIT only logs);
any ALLOW policy makes the workload default-deny; an ALLOW policy without rules ("allow-nothing", `spec: {}`)
allows nothing. Rule fields that need HTTP (`HTTP_ONLY`) cannot be evaluated on a TCP port: there an ALLOW
rule using them is left out (it allows less), and for DENY/AUDIT the HTTP-only values are left out of the rule
(it denies more) — `http_only_fields` names them for `mizzen analyze` and the apply-time warning.

RequestAuthentications apply the same way; their jwtRules are merged in that order.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Mapping, Protocol

from ..api.authorization import DRY_RUN_ANNOTATION, Rule
from ..api.base import CLUSTER_DOMAIN, Resource
from . import gateway as G
from .labels import ROOT_NAMESPACE, labels_match, scoped_to
from .services import Service, is_http
from .types import Proxy, labels_tuple

POLICY_KINDS = ("AuthorizationPolicy", "RequestAuthentication")

# `when` keys and operation fields that exist only in HTTP (Istio's generators refuse them "forTCP")
HTTP_ONLY_OPERATION = ("hosts", "not_hosts", "methods", "not_methods", "paths", "not_paths")
HTTP_ONLY_SOURCE = ("request_principals", "not_request_principals")
HTTP_ONLY_KEY_PREFIXES = ("request.headers", "request.auth.")


class Config(Protocol):
    services: Mapping[str, Service]
    by_kind: Mapping[str, tuple[Resource, ...]]


@dataclass(frozen=True)
class Jwks:
    """A JSON Web Key Set the control plane fetched from a `jwksUri` (`keys`: the JSON text), or why it could
    not (`error`; `keys` then holds the last good set, or "")."""

    keys: str = ""
    error: str = ""


@dataclass(frozen=True)
class AuthzPolicies:
    """The AuthorizationPolicies that apply to one proxy, by action, in evaluation order within each."""

    audit: tuple[Resource, ...] = ()
    deny: tuple[Resource, ...] = ()
    allow: tuple[Resource, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.audit or self.deny or self.allow)


def is_dry_run(r: Resource) -> bool:
    """`istio.io/dry-run: "true"`: the policy is evaluated and logged (shadow rules), never enforced."""
    return r.metadata.annotations.get(DRY_RUN_ANNOTATION, "").strip().lower() in ("true", "1", "t", "yes")


def _target_service(config: Config, r: Resource, ref) -> Service | None:
    if ref.kind != "Service" or ref.group not in ("", "core"):
        return None
    if ref.namespace and ref.namespace != r.namespace:
        return None  # cross-namespace references are not allowed (Istio)
    return config.services.get(f"{ref.name}.{r.namespace}.{CLUSTER_DOMAIN}")


def applies(config: Config, r: Resource, proxy: Proxy) -> bool:
    """Does AuthorizationPolicy/RequestAuthentication `r` apply to `proxy`?"""
    refs = r.spec.target_references
    if not refs:
        sel = r.spec.selector.match_labels if r.spec.selector else None
        return scoped_to(r.namespace, sel, proxy.namespace, proxy.label_dict)
    labels = proxy.label_dict
    for ref in refs:
        svc = _target_service(config, r, ref)
        if svc is not None and svc.namespace == proxy.namespace and svc.selector \
                and labels_match(svc.selector, labels):
            return True
    return False


def may_apply(r: Resource, proxy: Proxy) -> bool:
    """A superset of `applies` that needs no config (push scoping): a targetRefs policy may apply to any proxy
    of its namespace (which Services select a proxy is a host dependency of the proxy already)."""
    if r.spec.target_references:
        return r.namespace in (proxy.namespace, ROOT_NAMESPACE)
    sel = r.spec.selector.match_labels if r.spec.selector else None
    return scoped_to(r.namespace, sel, proxy.namespace, proxy.label_dict)


def _ordered(config: Config, kind: str, proxy: Proxy) -> tuple[Resource, ...]:
    items = config.by_kind.get(kind, ())
    out: list[Resource] = []
    for ns in dict.fromkeys((ROOT_NAMESPACE, proxy.namespace)):
        out += [r for r in items if r.namespace == ns and applies(config, r, proxy)]
    return tuple(out)


def authorization_for(config: Config, proxy: Proxy) -> AuthzPolicies:
    found = _ordered(config, "AuthorizationPolicy", proxy)
    by = {a: tuple(r for r in found if r.spec.action == a) for a in ("AUDIT", "DENY", "ALLOW")}
    return AuthzPolicies(by["AUDIT"], by["DENY"], by["ALLOW"])


def request_authentications_for(config: Config, proxy: Proxy) -> tuple[Resource, ...]:
    return _ordered(config, "RequestAuthentication", proxy)


def jwks_uris(config: Config) -> frozenset[str]:
    """Every `jwksUri` a RequestAuthentication names without inline `jwks` (what the control plane fetches)."""
    return frozenset(rule.jwks_uri for r in config.by_kind.get("RequestAuthentication", ())
                     for rule in r.spec.jwt_rules if rule.jwks_uri and not rule.jwks)


def users_of_jwks(config: Config, uris: Iterable[str]) -> tuple[Resource, ...]:
    """The RequestAuthentications whose rendered config depends on these fetched JWKS."""
    wanted = set(uris)
    return tuple(r for r in config.by_kind.get("RequestAuthentication", ())
                 if any(rule.jwks_uri in wanted and not rule.jwks for rule in r.spec.jwt_rules))


# ------------------------------------------------------------------------------------ HTTP-only fields

def is_http_only_key(key: str) -> bool:
    return key.startswith(HTTP_ONLY_KEY_PREFIXES)


def http_only_fields(rule: Rule) -> list[str]:
    """The fields of one rule that need HTTP, as paths relative to the rule (`to[0].operation.methods`,
    `when[1]` ...): empty when the rule can be evaluated on a TCP connection as it is."""
    from pydantic.alias_generators import to_camel

    out: list[str] = []
    for i, src in enumerate(rule.sources):
        out += [f"from[{i}].source.{to_camel(f)}" for f in HTTP_ONLY_SOURCE if getattr(src, f)]
    for i, op in enumerate(rule.operations):
        out += [f"to[{i}].operation.{to_camel(f)}" for f in HTTP_ONLY_OPERATION if getattr(op, f)]
    out += [f"when[{i}] ({c.key})" for i, c in enumerate(rule.when) if is_http_only_key(c.key)]
    return out


def tcp_effect(action: str, rule: Rule) -> str:
    """What Istio does with a rule using HTTP-only fields on a TCP port, in words."""
    if action == "ALLOW":
        return "the rule is ignored there, so it allows nothing on that port"
    rest = _without_http(rule)
    what = "denies" if action == "DENY" else "audits"
    return (f"the HTTP-only fields are dropped there, so the rule {what} "
            + ("every connection to that port" if rest else "more than written"))


def _without_http(rule: Rule) -> bool:
    """True when nothing but HTTP-only fields narrows the rule (on TCP it then matches everything)."""
    for src in rule.sources:
        if any(getattr(src, f) for f in type(src).model_fields if f not in HTTP_ONLY_SOURCE):
            return False
    for op in rule.operations:
        if any(getattr(op, f) for f in type(op).model_fields if f not in HTTP_ONLY_OPERATION):
            return False
    return not any(not is_http_only_key(c.key) for c in rule.when)


@dataclass(frozen=True)
class TcpFinding:
    """A rule of `policy` with HTTP-only fields that applies to a TCP port of a workload."""

    policy: Resource
    rule_index: int
    fields: tuple[str, ...]
    workload: str  # "<namespace>/<name>"
    port: int

    @property
    def message(self) -> str:
        action = self.policy.spec.action
        return (f"rule {self.rule_index} uses HTTP-only fields ({', '.join(self.fields)}) but applies to TCP port "
                f"{self.port} of workload {self.workload}: {tcp_effect(action, self.policy.spec.rules[self.rule_index])}")


def workload_proxies(config: Config) -> list[tuple[str, Proxy]]:
    """(name, the Proxy its replicas would have) of every mizzen.dev Workload with a sidecar in the config."""
    out = []
    for w in config.by_kind.get("Workload", ()):
        if w.spec.sidecar is False:
            continue
        proxy = Proxy(id=f"{w.namespace}/{w.name}", namespace=w.namespace, workload=w.name,
                      labels=labels_tuple(w.metadata.labels), ports=tuple(p.container_port for p in w.spec.ports),
                      service_account=w.spec.service_account or "default",
                      kind="gateway" if getattr(w.spec, "gateway", False) else "sidecar")
        if proxy.kind == "gateway":  # its policies act on its Gateway servers' ports
            proxy = replace(proxy, ports=tuple(ps.number for ps in G.ports(config, proxy)))
        out.append((w.name, proxy))
    return out


def inbound_protocol(config: Config, proxy: Proxy, port: int) -> str:
    """HTTP if a service selecting the proxy exposes the container port as HTTP, else TCP (as the inbound
    listener decides; `Snapshot.inbound_protocol`). A gateway's port: TCP when a server there does not speak
    HTTP (TCP, TLS passthrough or terminated TLS)."""
    if proxy.kind == "gateway":
        servers = [gs for ps in G.ports(config, proxy) if ps.number == port for gs in ps.servers]
        return "HTTP" if servers and all(gs.serves_http for gs in servers) else "TCP"
    labels = proxy.label_dict
    for s in config.services.values():
        if s.namespace == proxy.namespace and s.selector and labels_match(s.selector, labels):
            for p in s.ports:
                if p.target_for() == port and is_http(p.protocol):
                    return p.protocol
    return "TCP"


def deny_http_only(policy: Resource) -> list[tuple[str, str]]:
    """Istio's apply-time warning: (field path, message) for each DENY rule narrowed only by HTTP fields,
    which denies every connection to the TCP ports under the policy's scope."""
    if policy.spec.action != "DENY":
        return []
    return [(f"spec.rules[{i}]", "this DENY rule uses only HTTP attributes "
             f"({', '.join(http_only_fields(r))}): it denies all traffic to TCP ports under the policy's "
             "scope; it is recommended to explicitly specify the port (to.operation.ports)")
            for i, r in enumerate(policy.spec.rules or ()) if http_only_fields(r) and _without_http(r)
            and not any(op.ports for op in r.operations)]


def http_on_tcp(config: Config, policy: Resource) -> list[TcpFinding]:
    """`tcp_findings` of one AuthorizationPolicy against the config's Workloads."""
    return tcp_findings(config, policy, workload_proxies(config),
                        lambda proxy, port: inbound_protocol(config, proxy, port))


def tcp_findings(config: Config, policy: Resource, workloads: Iterable[tuple[str, Proxy]],
                 protocol_of) -> list[TcpFinding]:
    """Rules of an AuthorizationPolicy with HTTP-only fields, for every (workload name, proxy) it applies to,
    on each container port `protocol_of(proxy, port)` says is not HTTP."""
    out: list[TcpFinding] = []
    rules = [(i, r, tuple(http_only_fields(r))) for i, r in enumerate(policy.spec.rules or ())]
    rules = [x for x in rules if x[2]]
    if not rules:
        return out
    for name, proxy in workloads:
        if not applies(config, policy, proxy):
            continue
        for port in proxy.ports:
            if is_http(protocol_of(proxy, port)):
                continue
            for i, rule, fields in rules:
                if _names_port(rule, port):
                    out.append(TcpFinding(policy, i, fields, f"{proxy.namespace}/{name}", port))
    return out


def _names_port(rule: Rule, port: int) -> bool:
    """Can the rule's own port conditions (to.operation.ports) match `port`? (Unconstrained: yes.)"""
    ops = rule.operations
    if not ops or any(not op.ports for op in ops):
        return True
    return any(str(port) in op.ports for op in ops)
