"""AuthorizationPolicy → Envoy RBAC, on the callee's side (inbound; and a gateway's chains, for the policies
selecting the gateway workload: the gateway is the callee of outside clients), with Istio's translation. Pure.

Which policies apply and in what order is `model/authz.py` (`Resolved.authorization_for`). Here, as Istio's
`pilot/pkg/security/authz` builds it:
- one RBAC filter per action, in evaluation order: AUDIT (action LOG), DENY, ALLOW — the HTTP filter
  `envoy.filters.http.rbac` on HTTP chains, the network filter `envoy.filters.network.rbac` (stat prefix
  `tcp.`) before the tcp_proxy of TCP chains and of the inbound passthrough chain;
- each rule of a policy is one Envoy policy named `ns[<ns>]-policy[<name>]-rule[<i>]`: its principals are the
  rule's `from` sources (OR), each an AND of its fields and of the `when` conditions on the caller; its
  permissions are the rule's `to` operations (OR), each an AND of its fields and of the `when` conditions on
  the request; values of one field are ORed, `not*` values are NOT(OR);
- a policy without rules is one policy that never matches (so an ALLOW one, "allow-nothing", denies all);
- policies annotated `istio.io/dry-run: "true"` go to `shadow_rules` (evaluated and counted, not enforced);
- on a TCP chain an HTTP-only field makes an ALLOW rule be left out, and is dropped from a DENY/AUDIT rule
  (Istio: an ALLOW may only get narrower, a DENY only wider).

Identities: `principals` match the peer certificate's URI SAN (`spiffe://` + the value), `namespaces` a regex
over it; a plaintext connection has no peer certificate, so they never match without mTLS (as in Istio).
JWT attributes (`requestPrincipals`, `request.auth.*`) read the payload `envoy.filters.http.jwt_authn`
writes to dynamic metadata under `payload` (translate/filters/jwt.py); a request without a token has none.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Callable, Iterable

from envoy.config.core.v3 import address_pb2, extension_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as net_rbac_pb2
from envoy.extensions.path.match.uri_template.v3 import uri_template_match_pb2
from envoy.type.matcher.v3 import metadata_pb2, path_pb2, regex_pb2, string_pb2, value_pb2

from ...api.authorization import Condition, Operation, Rule, Source, bracket_names, is_path_template
from ...api.base import Resource
from ...model.authz import AuthzPolicies, is_dry_run
from ..common import pack
from .base import Chain, Feature, ViewContext

NAME = "envoy.filters.http.rbac"
NETWORK_NAME = "envoy.filters.network.rbac"
TCP_STAT_PREFIX = "tcp."
JWT_FILTER = "envoy.filters.http.jwt_authn"
JWT_PAYLOAD = "payload"  # jwt_authn's payload_in_metadata for every provider (jwt.py)
SPIFFE = "spiffe://"
URI_TEMPLATE = "envoy.path.match.uri_template.uri_template_matcher"
SHADOW_PREFIX = {"ALLOW": "istio_dry_run_allow_", "DENY": "istio_dry_run_deny_"}
_ACTION = {"AUDIT": rbac_pb2.RBAC.LOG, "DENY": rbac_pb2.RBAC.DENY, "ALLOW": rbac_pb2.RBAC.ALLOW}


class HttpOnly(Exception):
    """An attribute that needs HTTP, asked for on a TCP chain."""


# ------------------------------------------------------------------------------------------ matchers

def string_matcher(v: str, prefix: str = "", ignore_case: bool = False) -> string_pb2.StringMatcher:
    """Istio's forms: '*' = present (non-empty), '*x' suffix, 'x*' prefix, else exact; `prefix` is put in front
    of the value (e.g. 'spiffe://'), so a suffix form with a prefix becomes a regex."""
    if v == "*":
        return regex(".+")
    if v.startswith("*"):
        if prefix:
            return regex(re.escape(prefix) + ".*" + re.escape(v[1:]))
        return string_pb2.StringMatcher(suffix=v[1:], ignore_case=ignore_case)
    if v.endswith("*"):
        return string_pb2.StringMatcher(prefix=prefix + v[:-1], ignore_case=ignore_case)
    return string_pb2.StringMatcher(exact=prefix + v, ignore_case=ignore_case)


def regex(r: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=r))


def header_matcher(name: str, v: str, ignore_case: bool = False) -> rc.HeaderMatcher:
    if v == "*":
        return rc.HeaderMatcher(name=name.lower(), present_match=True)
    return rc.HeaderMatcher(name=name.lower(), string_match=string_matcher(v, ignore_case=ignore_case))


def cidr(v: str) -> address_pb2.CidrRange:
    net = ipaddress.ip_network(v, strict=False)
    return address_pb2.CidrRange(address_prefix=str(net.network_address) if "/" in v else v,
                                 prefix_len={"value": net.prefixlen})


def jwt_claim(path: list[str], value: value_pb2.ValueMatcher) -> metadata_pb2.MetadataMatcher:
    m = metadata_pb2.MetadataMatcher(filter=JWT_FILTER, value=value)
    for key in [JWT_PAYLOAD, *path]:
        m.path.add(key=key)
    return m


def _value(sm: string_pb2.StringMatcher) -> value_pb2.ValueMatcher:
    return value_pb2.ValueMatcher(string_match=sm)


def string_or_list(sm: string_pb2.StringMatcher) -> value_pb2.ValueMatcher:
    """A claim may be a string or a list of strings (e.g. `aud`, `groups`): either one matches."""
    one_of = value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=_value(sm)))
    return value_pb2.ValueMatcher(or_match=value_pb2.OrMatcher(value_matchers=[one_of, _value(sm)]))


def _principal_and(ids: list[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    return ids[0] if len(ids) == 1 else rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=ids))


# ------------------------------------------------------------------------------------------ attributes
# Each attribute turns one value into a Principal (who calls) or a Permission (what is asked). HTTP-only ones
# raise HttpOnly on a TCP chain.

def _authenticated(sm: string_pb2.StringMatcher) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(principal_name=sm))


def _source_principal(v: str) -> rbac_pb2.Principal:
    return _authenticated(string_matcher(v, SPIFFE))


DEFAULT_TRUST_DOMAIN = "cluster.local"


def _local_principal(td: str) -> Callable[[str], rbac_pb2.Principal]:
    """Istio's trust-domain rule: a principal whose trust domain is `cluster.local` names the mesh's own trust
    domain, so `cluster.local/ns/a/sa/b` matches `spiffe://<td>/ns/a/sa/b` in a mesh with another trust domain."""
    def make(v: str) -> rbac_pb2.Principal:
        head, sep, rest = v.partition("/")
        if td and sep and head == DEFAULT_TRUST_DOMAIN:
            v = f"{td}/{rest}"
        return _source_principal(v)
    return make


def _trust_domain(v: str) -> rbac_pb2.Principal:
    """The trust domain of the caller's SPIFFE identity: `*` = any SPIFFE identity, a name = identities
    `spiffe://<name>/...`, one `*` inside = any characters of the trust domain there (Istio's rule). Mizzen's
    mesh has one trust domain and no aliases: the value is matched as written (`cluster.local` is not
    rewritten to the mesh's trust domain, unlike a principal — Istio expands only the mesh's own trust
    domain and its aliases)."""
    if v == "*":
        return _authenticated(string_pb2.StringMatcher(prefix=SPIFFE))
    if "*" not in v:
        return _authenticated(string_pb2.StringMatcher(prefix=f"{SPIFFE}{v}/"))
    head, _, tail = v.partition("*")
    return _authenticated(regex(f"{re.escape(SPIFFE)}{re.escape(head)}[^/]*{re.escape(tail)}/.*"))


def _source_namespace(v: str) -> rbac_pb2.Principal:
    ns = ".*".join(re.escape(p) for p in v.split("*"))
    return _authenticated(regex(f".*/ns/{ns}/.*"))


def _service_account(policy_ns: str) -> Callable[[str], rbac_pb2.Principal]:
    def make(v: str) -> rbac_pb2.Principal:
        ns, sep, sa = v.partition("/")
        if not sep:
            ns, sa = policy_ns, v
        return _authenticated(regex(f"spiffe://.+/ns/{re.escape(ns)}/(.+/|)sa/{re.escape(sa)}(/.+)?"))
    return make


def _request_principal(v: str) -> rbac_pb2.Principal:
    """`<iss>/<sub>` against the JWT payload's iss and sub, split at the last '/' (an issuer may be a URL)."""
    any_ = regex(".+")
    iss, found, sub = v.rpartition("/")
    if not found:
        iss, sub = v, ""
    if v == "*":
        m_iss, m_sub = any_, any_
    elif v.startswith("*"):
        if found:
            m_iss = any_ if iss == "*" else string_pb2.StringMatcher(suffix=iss[1:])
            m_sub = string_pb2.StringMatcher(exact=sub)
        else:
            m_iss, m_sub = any_, string_pb2.StringMatcher(suffix=v[1:])
    elif v.endswith("*"):
        if found:
            m_iss = string_pb2.StringMatcher(exact=iss)
            m_sub = any_ if sub == "*" else string_pb2.StringMatcher(prefix=sub[:-1])
        else:
            m_iss, m_sub = string_pb2.StringMatcher(prefix=v[:-1]), any_
    else:
        m_iss, m_sub = string_pb2.StringMatcher(exact=iss), string_pb2.StringMatcher(exact=sub)
    return _principal_and([rbac_pb2.Principal(metadata=jwt_claim(["iss"], _value(m_iss))),
                           rbac_pb2.Principal(metadata=jwt_claim(["sub"], _value(m_sub)))])


def _claim(path: list[str]) -> Callable[[str], rbac_pb2.Principal]:
    return lambda v: rbac_pb2.Principal(metadata=jwt_claim(path, string_or_list(string_matcher(v))))


def _path(v: str) -> rbac_pb2.Permission:
    if is_path_template(v):
        tpl = uri_template_match_pb2.UriTemplateMatchConfig(path_template=v.replace("{**}", "**").replace("{*}", "*"))
        return rbac_pb2.Permission(uri_template=extension_pb2.TypedExtensionConfig(name=URI_TEMPLATE,
                                                                                   typed_config=pack(tpl)))
    return rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=string_matcher(v)))


def _envoy_filter_metadata(key: str) -> Callable[[str], rbac_pb2.Permission]:
    head, _, _ = key.partition("[")
    name = bracket_names(key, head)[0]
    flt = head[len("experimental."):]

    def make(v: str) -> rbac_pb2.Permission:
        m = metadata_pb2.MetadataMatcher(filter=flt)
        m.path.add(key=name)
        if v.startswith("[") and v.endswith("]"):
            m.value.list_match.one_of.string_match.CopyFrom(string_matcher(v[1:-1]))
        else:
            m.value.string_match.CopyFrom(string_matcher(v))
        return rbac_pb2.Permission(metadata=m)
    return make


def _http_only(make):
    def wrapped(v: str, tcp: bool):
        if tcp:
            raise HttpOnly()
        return make(v)
    return wrapped


def _any_chain(make):
    return lambda v, tcp: make(v)


def _principal_attr(key: str, policy_ns: str, td: str = ""):
    """A `when` key (or source field) acting on the caller → fn(value, tcp) -> Principal; None if not one."""
    if key == "source.ip":
        return _any_chain(lambda v: rbac_pb2.Principal(direct_remote_ip=cidr(v)))
    if key == "remote.ip":
        return _any_chain(lambda v: rbac_pb2.Principal(remote_ip=cidr(v)))
    if key == "source.namespace":
        return _any_chain(_source_namespace)
    if key == "source.principal":
        return _any_chain(_local_principal(td))
    if key == "source.trustDomain":
        return _any_chain(_trust_domain)
    if key == "source.serviceAccount":
        return _any_chain(_service_account(policy_ns))
    if key == "request.auth.principal":
        return _http_only(_request_principal)
    if key == "request.auth.audiences":
        return _http_only(_claim(["aud"]))
    if key == "request.auth.presenter":
        return _http_only(_claim(["azp"]))
    if key.startswith("request.auth.claims"):
        return _http_only(_claim(bracket_names(key, "request.auth.claims")))
    if key.startswith("request.headers"):
        name = bracket_names(key, "request.headers")[0]
        return _http_only(lambda v: rbac_pb2.Principal(header=header_matcher(name, v)))
    return None


def _permission_attr(key: str):
    """A `when` key (or operation field) acting on the request → fn(value, tcp) -> Permission."""
    if key == "destination.ip":
        return _any_chain(lambda v: rbac_pb2.Permission(destination_ip=cidr(v)))
    if key == "destination.port":
        return _any_chain(lambda v: rbac_pb2.Permission(destination_port=int(v)))
    if key == "connection.sni":
        return _any_chain(lambda v: rbac_pb2.Permission(requested_server_name=string_matcher(v)))
    if key.startswith("experimental.envoy.filters."):
        return _any_chain(_envoy_filter_metadata(key))
    if key == "hosts":
        return _http_only(lambda v: rbac_pb2.Permission(header=header_matcher(":authority", v, ignore_case=True)))
    if key == "methods":
        return _http_only(lambda v: rbac_pb2.Permission(header=header_matcher(":method", v)))
    if key == "paths":
        return _http_only(_path)
    raise KeyError(key)  # validated at apply: unreachable


# ------------------------------------------------------------------------------------------ rules

Attr = tuple[Callable, list[str], list[str]]  # (make(value, tcp), values, not values)


def _source_attrs(s: Source, policy_ns: str, td: str = "") -> list[Attr]:
    """A source's fields in Istio's order (trustDomains, principals, requestPrincipals, namespaces,
    serviceAccounts, remoteIpBlocks, ipBlocks)."""
    fields = [("source.trustDomain", s.trust_domains, s.not_trust_domains),
              ("source.principal", s.principals, s.not_principals),
              ("request.auth.principal", s.request_principals, s.not_request_principals),
              ("source.namespace", s.namespaces, s.not_namespaces),
              ("source.serviceAccount", s.service_accounts, s.not_service_accounts),
              ("remote.ip", s.remote_ip_blocks, s.not_remote_ip_blocks),
              ("source.ip", s.ip_blocks, s.not_ip_blocks)]
    return [(_principal_attr(k, policy_ns, td), v, n) for k, v, n in fields if v or n]


def _operation_attrs(o: Operation) -> list[Attr]:
    fields = [("hosts", o.hosts, o.not_hosts), ("methods", o.methods, o.not_methods),
              ("paths", o.paths, o.not_paths), ("destination.port", o.ports, o.not_ports)]
    return [(_permission_attr(k), v, n) for k, v, n in fields if v or n]


def _combine(attrs: list[Attr], tcp: bool, allow: bool, kind):
    """AND of each attribute's OR(values) and NOT(OR(notValues)); `kind` is Principal or Permission."""
    is_principal = kind is rbac_pb2.Principal
    parts = []
    for make, values, not_values in attrs:
        for vals, negate in ((values, False), (not_values, True)):
            ors = []
            for v in vals:
                try:
                    ors.append(make(v, tcp))
                except HttpOnly:
                    if allow:
                        raise  # the whole rule is left out: an ALLOW may only get narrower
                    # DENY/AUDIT: the value is dropped, the rule gets wider
            if not ors:
                continue
            one = ors[0] if len(ors) == 1 else (
                kind(or_ids=kind.Set(ids=ors)) if is_principal else kind(or_rules=kind.Set(rules=ors)))
            if negate:
                one = kind(not_id=one) if is_principal else kind(not_rule=one)
            parts.append(one)
    if not parts:
        return kind(any=True)
    if is_principal:
        return kind(and_ids=kind.Set(ids=parts))
    return kind(and_rules=kind.Set(rules=parts))


def _when(conditions: list[Condition], policy_ns: str, td: str = "") -> tuple[list[Attr], list[Attr]]:
    principals, permissions = [], []
    for c in conditions:
        p = _principal_attr(c.key, policy_ns, td)
        if p is not None:
            principals.append((p, c.values, c.not_values))
        else:
            permissions.append((_permission_attr(c.key), c.values, c.not_values))
    return principals, permissions


def rule_policy(rule: Rule, policy_ns: str, action: str, tcp: bool, td: str = "") -> rbac_pb2.Policy | None:
    """One rule as an Envoy policy; None when it is left out (an ALLOW rule with HTTP-only fields on TCP).
    `td`: the proxy's trust domain (principals written with `cluster.local` mean it)."""
    allow = action == "ALLOW"
    when_principals, when_permissions = _when(rule.when, policy_ns, td)
    try:
        principals = [_combine(_source_attrs(s, policy_ns, td) + when_principals, tcp, allow, rbac_pb2.Principal)
                      for s in rule.sources] or [_combine(when_principals, tcp, allow, rbac_pb2.Principal)]
        permissions = [_combine(_operation_attrs(o) + when_permissions, tcp, allow, rbac_pb2.Permission)
                       for o in rule.operations] or [_combine(when_permissions, tcp, allow, rbac_pb2.Permission)]
    except HttpOnly:
        return None
    return rbac_pb2.Policy(permissions=permissions, principals=principals)


MATCH_NEVER = rbac_pb2.Policy(
    permissions=[rbac_pb2.Permission(not_rule=rbac_pb2.Permission(any=True))],
    principals=[rbac_pb2.Principal(not_id=rbac_pb2.Principal(any=True))])


def policy_name(r: Resource, i: int) -> str:
    return f"ns[{r.namespace}]-policy[{r.name}]-rule[{i}]"


def build(policies: Iterable[Resource], action: str, tcp: bool,
          td: str = "") -> tuple[rbac_pb2.RBAC | None, rbac_pb2.RBAC | None]:
    """(enforced rules, dry-run shadow rules) of one action's policies; None for a set no policy uses."""
    rules = rbac_pb2.RBAC(action=_ACTION[action])
    shadow = rbac_pb2.RBAC(action=_ACTION[action])
    used = {"rules": False, "shadow": False}
    for r in policies:
        dry = is_dry_run(r)
        target = shadow if dry else rules
        used["shadow" if dry else "rules"] = True
        for i, rule in enumerate(r.spec.rules or ()):
            p = rule_policy(rule, r.namespace, action, tcp, td)
            if p is not None:
                target.policies[policy_name(r, i)].CopyFrom(p)
        if not r.spec.rules:
            target.policies[policy_name(r, 0)].CopyFrom(MATCH_NEVER)
    return (rules if used["rules"] else None), (shadow if used["shadow"] else None)


def _configs(pols: AuthzPolicies, tcp: bool, td: str = ""):
    for action, policies in (("AUDIT", pols.audit), ("DENY", pols.deny), ("ALLOW", pols.allow)):
        if policies:
            rules, shadow = build(policies, action, tcp, td)
            yield action, rules, shadow


def http_filters(pols: AuthzPolicies, td: str = "") -> list[hcm_pb2.HttpFilter]:
    out = []
    for action, rules, shadow in _configs(pols, tcp=False, td=td):
        cfg = http_rbac_pb2.RBAC()
        if rules is not None:
            cfg.rules.CopyFrom(rules)
        if shadow is not None:
            cfg.shadow_rules.CopyFrom(shadow)
            cfg.shadow_rules_stat_prefix = SHADOW_PREFIX.get(action, "")
        out.append(hcm_pb2.HttpFilter(name=NAME, typed_config=pack(cfg)))
    return out


def network_filters(pols: AuthzPolicies, td: str = "") -> list[lc.Filter]:
    out = []
    for action, rules, shadow in _configs(pols, tcp=True, td=td):
        cfg = net_rbac_pb2.RBAC(stat_prefix=TCP_STAT_PREFIX)
        if rules is not None:
            cfg.rules.CopyFrom(rules)
        if shadow is not None:
            cfg.shadow_rules.CopyFrom(shadow)
            cfg.shadow_rules_stat_prefix = SHADOW_PREFIX.get(action, "")
        out.append(lc.Filter(name=NETWORK_NAME, typed_config=pack(cfg)))
    return out


def _policies(ctx: ViewContext) -> AuthzPolicies:
    return ctx.once("authz", lambda: ctx.resolved.authorization_for(ctx.proxy))


class Rbac(Feature):
    name = NAME

    def patch_hcm(self, hcm: hcm_pb2.HttpConnectionManager, at: Chain, ctx: ViewContext) -> None:
        if at.callee:
            pols = _policies(ctx)
            if not pols.empty:
                hcm.http_filters.extend(ctx.once(("rbac-http",), lambda: http_filters(pols, ctx.proxy.trust_domain)))

    def network_filters(self, at: Chain, ctx: ViewContext) -> Iterable[lc.Filter]:
        if not at.callee:
            return ()
        pols = _policies(ctx)
        return () if pols.empty else ctx.once(("rbac-tcp",), lambda: network_filters(pols, ctx.proxy.trust_domain))


FEATURE = Rbac()
