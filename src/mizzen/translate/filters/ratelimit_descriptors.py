"""Rate-limit descriptors for Envoy: the route `RateLimit` actions that build the descriptor scheme of
`ratelimit/table.py` for one limit, and the per-route config of Envoy's `local_ratelimit` filter. Pure.

Every descriptor starts with `mizzen_limit = <ns>/<RateLimit>/<limit>` (a generic_key), then one entry per key
element, then `mizzen_class` for priority limits. Caller identity comes from what the sidecar knows, never
from a request header a client could set:
- at a caller's outbound sidecar, its own workload/namespace/principal (a constant of its config);
- at a callee's inbound sidecar, the TCP peer address looked up in the registry's identity table by a shadow
  RBAC filter (`ratelimit.py`), read back as dynamic metadata (absent for an unknown address).
Entries that can be absent (a header, a query parameter, an unknown caller) are skipped when absent
(`skip_if_absent`): the limit still applies, the value counts as empty (table.py's rule).

Global limits carry their match as condition actions (header_value_match / query_parameter_value_match on
`:path`, `:method`, headers ...): a request that does not match produces no descriptor for that limit.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction
from itertools import combinations
from typing import Sequence

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as common_rl
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as local_pb2
from envoy.type.metadata.v3 import metadata_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import http_status_pb2, percent_pb2, token_bucket_pb2

from ...api.virtual_service import HTTPMatchRequest, StringMatch
from ...model.ratelimits import SOURCE_KEYS, AppliedLimit, principal
from ...model.types import Proxy
from ...ratelimit.table import CLASS_ENTRY, LIMIT_ENTRY, PRIORITY_SOURCE_ENTRY, entry_key
from ..common import duration

Action = rc.RateLimit.Action
RBAC_METADATA = "envoy.filters.http.rbac"
MATCH_ENTRY = "mizzen_match"
MAX_DYNAMIC_DESCRIPTORS = 1000  # per-value buckets of a keyed local limit (LRU beyond)


def identity_stat_prefix(kind: str) -> str:
    return f"mizzen_rl_{kind}_"


def identity_metadata_key(kind: str) -> str:
    """Where the shadow RBAC filter of `kind` leaves the matched policy (= the caller's identity)."""
    return identity_stat_prefix(kind) + "shadow_effective_policy_id"


def own_identity(proxy: Proxy, kind: str) -> str:
    value = {"workload": proxy.workload, "namespace": proxy.namespace,
             "principal": principal(proxy.namespace, proxy.service_account)}[kind]
    return value or "unknown"


def _source(kind: str, key: str, outbound: bool, proxy: Proxy) -> tuple[Action, bool]:
    if outbound:
        return Action(generic_key=Action.GenericKey(descriptor_key=key, descriptor_value=own_identity(proxy, kind))), \
            False
    md = Action.MetaData(descriptor_key=key, source=Action.MetaData.DYNAMIC, skip_if_absent=True,
                         metadata_key=metadata_pb2.MetadataKey(key=RBAC_METADATA, path=[
                             metadata_pb2.MetadataKey.PathSegment(key=identity_metadata_key(kind))]))
    return Action(metadata=md), True


def key_actions(a: AppliedLimit, outbound: bool, proxy: Proxy) -> list[tuple[Action, bool]]:
    """(action, may be absent) for the limit's key elements and priority class, in descriptor order."""
    lim = a.limit
    out: list[tuple[Action, bool]] = []
    for form, arg in lim.key_parts():
        key = entry_key(form, arg)
        if key is None:
            continue  # a constant: the counter is the same for every request
        if form in SOURCE_KEYS:
            out.append(_source(SOURCE_KEYS[form], key, outbound, proxy))
        elif form == "sourceIp":
            out.append((Action(remote_address=Action.RemoteAddress()), False))
        elif form == "path":
            out.append((Action(request_headers=Action.RequestHeaders(header_name=":path", descriptor_key=key)), False))
        elif form == "header":
            out.append((Action(request_headers=Action.RequestHeaders(header_name=arg, descriptor_key=key,
                                                                     skip_if_absent=True)), True))
        else:  # query
            out.append((Action(query_parameters=Action.QueryParameters(query_parameter_name=arg, descriptor_key=key,
                                                                       skip_if_absent=True)), True))
    prio = lim.priority
    if prio is not None:
        if prio.header is not None:
            out.append((Action(request_headers=Action.RequestHeaders(header_name=prio.header, descriptor_key=CLASS_ENTRY,
                                                                     skip_if_absent=True)), True))
        else:
            assert PRIORITY_SOURCE_ENTRY[prio.source]
            out.append(_source(prio.source, CLASS_ENTRY, outbound, proxy))
    return out


def limit_action(a: AppliedLimit) -> Action:
    return Action(generic_key=Action.GenericKey(descriptor_key=LIMIT_ENTRY, descriptor_value=a.id))


# ---------------------------------------------------------------------------------------------- matches

def _path_regex(m: StringMatch, ignore_case: bool) -> str | None:
    """`:path` carries the query string: an exact or regex uri match must allow one after the path."""
    if m.exact is not None:
        body = re.escape(m.exact)
    elif m.regex is not None:
        body = f"(?:{m.regex})"
    else:
        return None
    return ("(?i)" if ignore_case and m.exact is not None else "") + body + r"(\?.*)?"


def _matcher(m: StringMatch, ignore_case: bool = False) -> string_pb2.StringMatcher:
    if m.exact is not None:
        return string_pb2.StringMatcher(exact=m.exact, ignore_case=ignore_case)
    if m.prefix is not None:
        return string_pb2.StringMatcher(prefix=m.prefix, ignore_case=ignore_case)
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=m.regex))


def _header(name: str, m: StringMatch, invert: bool = False) -> rc.HeaderMatcher:
    if m.empty:
        return rc.HeaderMatcher(name=name, present_match=True, invert_match=invert)
    return rc.HeaderMatcher(name=name, string_match=_matcher(m), invert_match=invert)


def header_conditions(m: HTTPMatchRequest | None) -> list[rc.HeaderMatcher]:
    """The request-time part of an Istio match (uri, method, authority, scheme, headers) as header matchers."""
    if m is None:
        return []
    out: list[rc.HeaderMatcher] = []
    if m.uri is not None:
        rx = _path_regex(m.uri, m.ignore_uri_case)
        if rx is None:
            out.append(rc.HeaderMatcher(name=":path", string_match=string_pb2.StringMatcher(
                prefix=m.uri.prefix, ignore_case=m.ignore_uri_case)))
        else:
            out.append(rc.HeaderMatcher(name=":path", string_match=string_pb2.StringMatcher(
                safe_regex=regex_pb2.RegexMatcher(regex=rx))))
    for pseudo, sm in ((":method", m.method), (":authority", m.authority), (":scheme", m.scheme)):
        if sm is not None:
            out.append(_header(pseudo, sm))
    out += [_header(k.lower(), v) for k, v in sorted(m.headers.items())]
    out += [_header(k.lower(), v, invert=True) for k, v in sorted(m.without_headers.items())]
    return out


def query_conditions(m: HTTPMatchRequest | None) -> list[rc.QueryParameterMatcher]:
    if m is None:
        return []
    return [rc.QueryParameterMatcher(name=k, present_match=True) if v.empty else
            rc.QueryParameterMatcher(name=k, string_match=_matcher(v)) for k, v in sorted(m.query_params.items())]


def conditional(a: AppliedLimit) -> bool:
    return bool(header_conditions(a.limit.match) or query_conditions(a.limit.match))


def condition_actions(a: AppliedLimit) -> list[Action]:
    out = []
    headers = header_conditions(a.limit.match)
    if headers:
        out.append(Action(header_value_match=Action.HeaderValueMatch(
            descriptor_key=MATCH_ENTRY, descriptor_value="1", headers=headers)))
    query = query_conditions(a.limit.match)
    if query:
        out.append(Action(query_parameter_value_match=Action.QueryParameterValueMatch(
            descriptor_key=MATCH_ENTRY + "_query", descriptor_value="1", query_parameters=query)))
    return out


def global_rate_limit(a: AppliedLimit, outbound: bool, proxy: Proxy) -> rc.RateLimit:
    """One global limit's descriptor: conditions first (a mismatch ends it early), the limit, its key."""
    actions = condition_actions(a) + [limit_action(a)] + [act for act, _ in key_actions(a, outbound, proxy)]
    return rc.RateLimit(actions=actions)


# ---------------------------------------------------------------------------------------------- local

def token_bucket(per_second: float, burst: float) -> token_bucket_pb2.TokenBucket:
    """A token bucket refilled at `per_second` (Envoy refills continuously at tokens_per_fill/fill_interval)
    holding at most `burst` tokens. The rate is written as a fraction with a fill interval ≥ 50 ms."""
    f = Fraction(per_second).limit_denominator(1000)
    tokens, seconds = f.numerator, f.denominator  # a whole number of seconds: always above Envoy's 50 ms
    return token_bucket_pb2.TokenBucket(max_tokens=max(1, int(math.ceil(burst - 1e-9))),
                                        tokens_per_fill={"value": max(1, tokens)}, fill_interval=duration(seconds))


def _rate_of(a: AppliedLimit, share: int) -> tuple[float, float]:
    """(tokens per second, bucket size) of a local limit at one sidecar: its `share` of the whole."""
    lim = a.limit
    per_s = lim.per_second() / share
    burst = (lim.burst or (lim.requests_per_unit if lim.rate is None else max(1.0, lim.rate))) / share
    return per_s, max(1.0, burst)


def _bucket(a: AppliedLimit, share: int) -> token_bucket_pb2.TokenBucket:
    return token_bucket(*_rate_of(a, share))


def _retry_after(limits: Sequence[tuple[AppliedLimit, int]]) -> str:
    """Seconds until a token is back for the slowest limit of the route (a static header on every 429)."""
    return str(max(1, max(int(math.ceil(1.0 / _rate_of(a, s)[0] - 1e-9)) for a, s in limits)))


def local_per_route(limits: Sequence[tuple[AppliedLimit, int]], outbound: bool, proxy: Proxy, *, shadow: bool,
                    status: int) -> local_pb2.LocalRateLimit:
    """Envoy's local_ratelimit per-route config enforcing every (limit, share) of `limits` on one route.

    The route's default token bucket is one unkeyed limit (every request of the route belongs to it: matches
    were made routes, see `split_routes`), consumed together with the descriptors of the others. When all are
    keyed, every request matches their descriptors (absent entries have descriptors of their own) and the
    default bucket is never consumed (`always_consume_default_token_bucket: false`)."""
    pct = percent_pb2.FractionalPercent
    cfg = local_pb2.LocalRateLimit(
        stat_prefix="mizzen_local_shadow" if shadow else "mizzen_local",
        filter_enabled=base_pb2.RuntimeFractionalPercent(default_value=pct(numerator=100, denominator=pct.HUNDRED)),
        filter_enforced=base_pb2.RuntimeFractionalPercent(default_value=pct(numerator=0 if shadow else 100,
                                                                            denominator=pct.HUNDRED)))
    if status != 429:
        cfg.status.code = http_status_pb2.StatusCode.Value(http_status_pb2.StatusCode.Name(status))
    if not shadow:
        cfg.enable_x_ratelimit_headers = common_rl.DRAFT_VERSION_03
        cfg.response_headers_to_add.append(base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key="retry-after", value=_retry_after(limits)),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD))
    unkeyed = [(a, s) for a, s in limits if not key_actions(a, outbound, proxy)]
    primary = max(unkeyed, key=lambda x: _rate_of(*x)[0]) if unkeyed else None
    cfg.token_bucket.CopyFrom(_bucket(*(primary or limits[0])))
    if primary is None:
        cfg.always_consume_default_token_bucket.value = False
    dynamic = False
    for a, s in limits:
        if primary is not None and a is primary[0]:
            continue
        keyed = key_actions(a, outbound, proxy)
        cfg.rate_limits.append(rc.RateLimit(actions=[limit_action(a)] + [act for act, _ in keyed]))
        bucket = _bucket(a, s)
        for entries in _entry_variants(a, keyed):
            dynamic = dynamic or any(not e.value for e in entries)
            cfg.descriptors.append(common_rl.LocalRateLimitDescriptor(entries=entries, token_bucket=bucket))
    if dynamic:
        cfg.max_dynamic_descriptors.value = MAX_DYNAMIC_DESCRIPTORS
    return cfg


def _entry_key(act: Action) -> str:
    which = act.WhichOneof("action_specifier")
    if which == "remote_address":
        return "remote_address"
    return getattr(act, which).descriptor_key


def _entry_variants(a: AppliedLimit, keyed: list[tuple[Action, bool]]
                    ) -> list[list[common_rl.RateLimitDescriptor.Entry]]:
    """The descriptors a request of this limit can produce: every element present (per-value buckets: an
    empty value is Envoy's wildcard) or some that may be absent left out (each such shape one bucket set)."""
    head = common_rl.RateLimitDescriptor.Entry(key=LIMIT_ENTRY, value=a.id)
    optional = [i for i, (_, may_absent) in enumerate(keyed) if may_absent]
    out = []
    for n in range(len(optional) + 1):
        for absent in combinations(optional, n):
            out.append([head] + [common_rl.RateLimitDescriptor.Entry(key=_entry_key(act), value="")
                                 for i, (act, _) in enumerate(keyed) if i not in absent])
    return out


def split_routes(routes: Sequence[rc.Route], conditional_limits: Sequence[AppliedLimit],
                 max_conditional: int = 4) -> list[tuple[rc.Route, tuple[AppliedLimit, ...]]]:
    """Local limits with a request-time match become routes: before each route, a copy narrowed to each
    combination of the matches (all of them first), carrying those limits. Returns (route, the conditional
    limits it carries) in order; the original routes carry none. At most `max_conditional` matches are
    combined (2^n copies per route); further ones are left out (`mizzen analyze` says so)."""
    conds = list(conditional_limits)[:max_conditional]
    combos = [c for n in range(len(conds), 0, -1) for c in combinations(conds, n)]
    out: list[tuple[rc.Route, tuple[AppliedLimit, ...]]] = []
    for r in routes:
        for combo in combos:
            c = rc.Route()
            c.CopyFrom(r)
            c.name = f"{r.name}.ratelimit.{'+'.join(a.limit.name for a in combo)}"
            for a in combo:
                c.match.headers.extend(header_conditions(a.limit.match))
                c.match.query_parameters.extend(query_conditions(a.limit.match))
            out.append((c, combo))
        out.append((r, ()))
    return out
