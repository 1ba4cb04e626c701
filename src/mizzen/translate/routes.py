"""Route configurations: one per outbound port (netns mode) or one for the HTTP proxy (loopback mode).

Each visible HTTP service gets a virtual host answering every name form a caller may use; its routes
come from the VirtualService for the host (Istio semantics: first match wins, no implicit fallback), as
`model.Resolved.http_routes` resolves them (delegation merged), or a single default route to the service's
cluster. Each route's destinations are resolved once (`Resolved.destination`) and carried as (host, subset,
port) into the action; the DestinationRule policy of those destinations gives the hash policy. Per-filter
route config (CORS, fault ...) is added by the feature table (`filters/`).
"""
from __future__ import annotations

import base64
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from ..api.duration import duration_seconds
from ..api.virtual_service import (HTTPDirectResponse, HTTPMatchRequest, HTTPRedirect, HTTPRetry,
                                   HTTPRoute, StringMatch, split_retry_on)
from ..model.resolved import Destination
from ..model.services import Service, is_http
from . import filters, policies
from .common import PASSTHROUGH, UNSERVED_HEADER, duration, inbound_cluster, outbound_cluster, pack, u32
from .filters import Chain, ViewContext
from .filters.fault import fraction


def domains_for(svc: Service, port: int, proxy_ns: str, with_bare: bool) -> list[str]:
    names = list(svc.short_names) if svc.namespace == proxy_ns else \
        [n for n in svc.short_names if "." in n]  # short name only inside its own namespace
    if svc.vip:
        names.append(svc.vip)
    out: list[str] = []
    for n in names:
        if with_bare:
            out.append(n)
        out.append(f"{n}:{port}")
    return out


def _string_matcher(m: StringMatch, ignore_case: bool = False) -> string_pb2.StringMatcher | None:
    if m.empty:
        return None
    if m.exact is not None:
        return string_pb2.StringMatcher(exact=m.exact, ignore_case=ignore_case)
    if m.prefix is not None:
        return string_pb2.StringMatcher(prefix=m.prefix, ignore_case=ignore_case)
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=m.regex))


def _header(name: str, m: StringMatch, invert: bool = False) -> rc.HeaderMatcher:
    if m.empty:
        return rc.HeaderMatcher(name=name.lower(), present_match=True, invert_match=invert)
    return rc.HeaderMatcher(name=name.lower(), string_match=_string_matcher(m), invert_match=invert)


def route_match(m: HTTPMatchRequest | None) -> rc.RouteMatch:
    rm = rc.RouteMatch()
    if m is None or m.uri is None:
        rm.prefix = "/"
    elif m.uri.exact is not None:
        rm.path = m.uri.exact
    elif m.uri.prefix is not None:
        rm.prefix = m.uri.prefix
    else:
        rm.safe_regex.regex = m.uri.regex
    if m is None:
        return rm
    if m.ignore_uri_case:
        rm.case_sensitive.value = False
    for name, sm in sorted(m.headers.items()):
        rm.headers.append(_header(name, sm))
    for name, sm in sorted(m.without_headers.items()):
        rm.headers.append(_header(name, sm, invert=True))
    if m.method:
        rm.headers.append(_header(":method", m.method))
    if m.authority:
        rm.headers.append(_header(":authority", m.authority))
    if m.scheme:
        rm.headers.append(_header(":scheme", m.scheme))
    for name, sm in sorted(m.query_params.items()):
        if sm.empty:
            rm.query_parameters.append(rc.QueryParameterMatcher(name=name, present_match=True))
        else:
            rm.query_parameters.append(rc.QueryParameterMatcher(name=name, string_match=_string_matcher(sm)))
    return rm


def _header_ops(target, ops, request: bool) -> None:
    if ops is None:
        return
    add = target.request_headers_to_add if request else target.response_headers_to_add
    remove = target.request_headers_to_remove if request else target.response_headers_to_remove
    for k, v in sorted(ops.set.items()):
        add.append(base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=v),
                   append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD))
    for k, v in sorted(ops.add.items()):
        add.append(base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=v),
                   append_action=base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD))
    remove.extend(ops.remove)


# Retries when a route says nothing (see docs/translation.md, "Retries"): only what is safe for every
# method, because the request never reached the app: no connection, refused stream (HTTP/2), a reset
# before the request was sent, or the upstream sidecar's 503 saying it could not connect to its app
# (retriable-headers: UNSERVED_HEADER). A 5xx or a reset after sending is never retried unless asked for.
DEFAULT_RETRY_ON = "connect-failure,refused-stream,reset-before-request,retriable-headers"
DEFAULT_RETRY_ATTEMPTS = 2
HOST_SELECTION_RETRY_MAX_ATTEMPTS = 5  # Istio's default with previous_hosts

_REDIRECT_CODES = {301: rc.RedirectAction.MOVED_PERMANENTLY, 302: rc.RedirectAction.FOUND,
                   303: rc.RedirectAction.SEE_OTHER, 307: rc.RedirectAction.TEMPORARY_REDIRECT,
                   308: rc.RedirectAction.PERMANENT_REDIRECT}


def retry_policy(r: HTTPRetry | None) -> rc.RetryPolicy | None:
    """Istio `retries` → Envoy RetryPolicy; None (no retries) for `attempts: 0` or no attempts, as Istio.

    Every route's retry policy carries the `previous_hosts` predicate (this is the one place a route's gets
    it; the rate-limit service's gRPC retry policy, another message type, has its own in filters/ratelimit):
    a retry goes to a host not tried yet when there is one ("failover")."""
    if r is None:
        conds, codes, attempts = DEFAULT_RETRY_ON.split(","), [], DEFAULT_RETRY_ATTEMPTS
    else:
        if r.attempts <= 0:
            return None
        conds, codes = split_retry_on(r.retry_on) if r.retry_on else (DEFAULT_RETRY_ON.split(","), [])
        attempts = r.attempts
    if codes and "retriable-status-codes" not in conds:
        conds.append("retriable-status-codes")
    pol = rc.RetryPolicy(retry_on=",".join(dict.fromkeys(conds)), num_retries=u32(attempts),
                         retriable_status_codes=sorted(set(codes)),
                         host_selection_retry_max_attempts=HOST_SELECTION_RETRY_MAX_ATTEMPTS)
    if "retriable-headers" in conds:
        pol.retriable_headers.add(name=UNSERVED_HEADER, present_match=True)
    pol.retry_host_predicate.add(name="envoy.retry_host_predicates.previous_hosts",
                                 typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate()))
    if r is not None and r.per_try_timeout:
        pol.per_try_timeout.CopyFrom(duration(duration_seconds(r.per_try_timeout)))
    if r is not None and r.back_off is not None:  # Istio's backoff (base) or Mizzen's retryBackOff (base, max)
        base, top = r.back_off
        pol.retry_back_off.base_interval.CopyFrom(duration(duration_seconds(base)))
        if top:
            pol.retry_back_off.max_interval.CopyFrom(duration(duration_seconds(top)))
    return pol


def redirect_action(r: HTTPRedirect, port: int | None = None) -> rc.RedirectAction:
    """`port` is the port the route config serves: what FROM_REQUEST_PORT means (as Istio: Envoy cannot
    derive it at request time, but each route config belongs to one port)."""
    act = rc.RedirectAction(response_code=_REDIRECT_CODES[r.redirect_code])
    if r.uri is not None:
        act.path_redirect = r.uri
    elif r.prefix_rewrite is not None:  # every match is a uri prefix (validated): swap the matched prefix
        act.prefix_rewrite = r.prefix_rewrite
    if r.authority is not None:
        act.host_redirect = r.authority
    if r.port is not None:
        act.port_redirect = r.port
    elif r.derive_port == "FROM_REQUEST_PORT" and port is not None:
        act.port_redirect = port
    # FROM_PROTOCOL_DEFAULT: no port_redirect, Envoy's default
    if r.scheme is not None:
        act.scheme_redirect = r.scheme
    return act


def direct_response(d: HTTPDirectResponse) -> rc.DirectResponseAction:
    act = rc.DirectResponseAction(status=d.status)
    if d.body is not None:
        if d.body.string is not None:
            act.body.inline_string = d.body.string
        else:
            act.body.inline_bytes = base64.b64decode(d.body.bytes_)
    return act


class VhostReuse:
    """The same view's route configs in the previous snapshot, and the hosts the change between the two
    touched (`model.dependencies.Change.hosts`, when nothing else changed: `renderer._hosts_only`).

    A virtual host is built from its service (names, VIP, ports), the VirtualService of its host (delegates
    merged; its matches as they apply to this view's proxy), the services and DestinationRules of the hosts its
    routes send to (cluster names, hash policies) and the per-route features of those routes — all keyed by
    `{host} | resolved.route_destinations(host)`, the hosts push scoping already follows.  When none of them
    changed, the previous virtual host is the one a fresh render would build, byte for byte (tested:
    tests/translate/test_incremental_routes.py), so a change of one service's routes renders one virtual host
    per route config, not all of them."""

    def __init__(self, routes: dict, stale: frozenset[str]) -> None:
        self.routes = routes  # route config name -> Rendered (the previous base view's)
        self.stale = stale
        self.reused = 0

    def previous(self, name: str) -> dict[str, rc.VirtualHost]:
        r = self.routes.get(name)
        return {vh.name: vh for vh in r.message.virtual_hosts} if r is not None and r.message is not None else {}

    def fresh(self, host: str, resolved) -> bool:
        return host not in self.stale and not (resolved.route_destinations(host) & self.stale)


class RouteBuilder:
    """Builds the routes of one proxy's view; pure. With `reuse`, untouched virtual hosts of the previous
    snapshot's route configs are taken as they are (`VhostReuse`)."""

    def __init__(self, ctx: ViewContext, reuse: VhostReuse | None = None):
        self.ctx = ctx
        self.proxy = ctx.proxy
        self.resolved = ctx.resolved
        self.reuse = reuse

    def _vhost(self, prev: dict[str, rc.VirtualHost], svc: Service, port: int, with_bare: bool) -> rc.VirtualHost:
        old = prev.get(f"{svc.hostname}:{port}")
        if old is not None and self.reuse is not None and self.reuse.fresh(svc.hostname, self.resolved):
            self.reuse.reused += 1
            return old
        return self.virtual_host(svc, port, with_bare)

    def _action(self, r: HTTPRoute, namespace: str, port: int) -> rc.RouteAction:
        dests = [(self.resolved.destination(d.destination, namespace, port), d) for d in r.route]
        if len(dests) > 1:
            dests = [(dst, d) for dst, d in dests if d.weight != 0]
        act = rc.RouteAction()
        if len(r.route) == 1:
            act.cluster = _cluster(dests[0][0])
        else:
            wc = act.weighted_clusters
            for dst, d in dests:
                cw = wc.clusters.add(name=_cluster(dst), weight=u32(d.weight))
                if d.headers:
                    _header_ops(cw, d.headers.request, True)
                    _header_ops(cw, d.headers.response, False)
        act.timeout.CopyFrom(duration(duration_seconds(r.timeout) if r.timeout else 0.0))  # Istio: none unless asked
        self._route_features(act, r, namespace, port)
        policies.apply_route_policy(act, [dst for dst, _ in dests], self.resolved)
        return act

    def _route_features(self, act: rc.RouteAction, r: HTTPRoute, namespace: str, port: int) -> None:
        """retries, mirrors, rewrites of a forwarding route."""
        pol = retry_policy(r.retries)
        if pol is not None:
            act.retry_policy.CopyFrom(pol)
        mirrors = [(m.destination, m.percentage, None) for m in r.mirrors]
        if r.mirror is not None:
            mirrors.append((r.mirror, r.mirror_percentage, r.mirror_percent))
        for dest, pct, legacy in mirrors:  # fire-and-forget: Envoy never waits for the shadow's answer
            act.request_mirror_policies.add(
                cluster=_cluster(self.resolved.destination(dest, namespace, port)),
                runtime_fraction=base_pb2.RuntimeFractionalPercent(default_value=fraction(pct, legacy)))
        if r.rewrite is not None:
            if r.rewrite.uri is not None:
                act.prefix_rewrite = r.rewrite.uri
            elif r.rewrite.uri_regex_rewrite is not None:
                act.regex_rewrite.pattern.regex = r.rewrite.uri_regex_rewrite.match
                act.regex_rewrite.substitution = r.rewrite.uri_regex_rewrite.rewrite
            if r.rewrite.authority is not None:
                act.host_rewrite_literal = r.rewrite.authority

    def routes_for(self, host: str, port: int, at: Chain) -> list[rc.Route]:
        """The routes of `host`'s VirtualService (delegation merged) that apply to this proxy."""
        out: list[rc.Route] = []
        for rr in self.resolved.http_routes(host):
            r = rr.route
            if not r.route and r.redirect is None and r.direct_response is None:
                continue
            matches = self.resolved.matches_for(r, port, self.proxy)
            if not matches:
                continue
            out += self.routes_of(r, rr.owner.namespace, rr.stem, matches, port, at)
        return out

    def routes_of(self, r: HTTPRoute, namespace: str, stem: str, matches, port: int, at: Chain) -> list[rc.Route]:
        """One Envoy route per match of VirtualService route `r` (written in `namespace`, whose destinations
        resolve there — a delegate's own)."""
        out: list[rc.Route] = []
        action = self._action(r, namespace, port) if r.route else None
        for j, m in enumerate(matches):
            route = rc.Route(name=r.name or f"{stem}.{j}", match=route_match(m))
            if action is not None:
                route.route.CopyFrom(action)
            elif r.redirect is not None:
                route.redirect.CopyFrom(redirect_action(r.redirect, port))
            else:
                route.direct_response.CopyFrom(direct_response(r.direct_response))
            if len(r.route) == 1 and r.route[0].headers:  # one destination: its headers act on the route
                _header_ops(route, r.route[0].headers.request, True)
                _header_ops(route, r.route[0].headers.response, False)
            if r.headers:
                _header_ops(route, r.headers.request, True)
                _header_ops(route, r.headers.response, False)
            filters.patch_route(route, r, at, self.ctx)
            out.append(route)
        return out

    def virtual_host(self, svc: Service, port: int, with_bare: bool) -> rc.VirtualHost:
        at = Chain(True, port)
        vh = rc.VirtualHost(name=f"{svc.hostname}:{port}",
                            domains=domains_for(svc, port, self.proxy.namespace, with_bare))
        if self.resolved.virtual_service(svc.hostname) is not None:
            vh.routes.extend(self.routes_for(svc.hostname, port, at))
        else:
            dst = Destination(svc.hostname, None, port)
            act = rc.RouteAction(cluster=_cluster(dst), timeout=duration(0), retry_policy=retry_policy(None))
            policies.apply_route_policy(act, [dst], self.resolved)  # consistent hash also without a VirtualService
            route = rc.Route(name="default", match=rc.RouteMatch(prefix="/"), route=act)
            filters.patch_route(route, None, at, self.ctx)
            vh.routes.append(route)
        filters.patch_virtual_host(vh, svc, at, self.ctx)
        return vh

    def _allow_any(self) -> rc.VirtualHost:
        if self.ctx.snap.outbound_mode(self.proxy) == "REGISTRY_ONLY":
            # a host outside the proxy's scope: refused by the sidecar, as Istio's block_all (502)
            return rc.VirtualHost(name="block_all", domains=["*"], routes=[
                rc.Route(name="block_all", match=rc.RouteMatch(prefix="/"),
                         direct_response=rc.DirectResponseAction(status=502))])
        return rc.VirtualHost(name="allow_any", domains=["*"], routes=[
            rc.Route(name="allow_any", match=rc.RouteMatch(prefix="/"),
                     route=rc.RouteAction(cluster=PASSTHROUGH, timeout=duration(0)))])

    def for_port(self, port: int) -> route_pb2.RouteConfiguration:
        rcfg = route_pb2.RouteConfiguration(name=str(port), validate_clusters={"value": False},
                                            response_headers_to_remove=[UNSERVED_HEADER])
        prev = self.reuse.previous(rcfg.name) if self.reuse is not None else {}
        for svc in self.ctx.services:
            sp = svc.port(port)
            if sp is not None and is_http(sp.protocol):
                rcfg.virtual_hosts.append(self._vhost(prev, svc, port, with_bare=True))
        rcfg.virtual_hosts.append(self._allow_any())
        return rcfg

    def http_proxy(self) -> route_pb2.RouteConfiguration:
        """Loopback mode: one route config for an explicit HTTP proxy, every port."""
        rcfg = route_pb2.RouteConfiguration(name="http_proxy", validate_clusters={"value": False},
                                            response_headers_to_remove=[UNSERVED_HEADER])
        prev = self.reuse.previous(rcfg.name) if self.reuse is not None else {}
        for svc in self.ctx.services:
            for sp in svc.ports:
                if is_http(sp.protocol):
                    rcfg.virtual_hosts.append(self._vhost(prev, svc, sp.port, with_bare=(sp.port == 80)))
        return rcfg

    def inbound(self, port: int) -> route_pb2.RouteConfiguration:
        at = Chain(False, port)
        name = inbound_cluster(port)
        route = rc.Route(name="default", match=rc.RouteMatch(prefix="/"),
                         route=rc.RouteAction(cluster=name, timeout=duration(0),
                                               retry_policy=inbound_retry_policy()))
        filters.patch_route(route, None, at, self.ctx)
        vh = rc.VirtualHost(name=name, domains=["*"], routes=[route])
        filters.patch_virtual_host(vh, None, at, self.ctx)
        return route_pb2.RouteConfiguration(name=name, virtual_hosts=[vh])


def _cluster(d: Destination) -> str:
    return outbound_cluster(d.port, d.subset, d.host)


# Inbound (the sidecar in front of the app): a *safe* request (GET, HEAD, OPTIONS: RFC 9110 §9.2.1) whose pooled
# connection to the app is reset before any response — the app died, or closed an idle keep-alive connection
# just as the request was sent on it — is sent once more on a new connection: to the app if it lives, else
# refused (UF), which callers retry on another replica (UNSERVED_HEADER). Found by `mizzen chaos`: after an
# app kill its sidecar kept writing requests on pooled connections to the dead app for tens of milliseconds.
# Other methods are never retried here (the app may have read the request before it died).
# One exact matcher per method: Envoy allows the retry when any of `retriable_request_headers` matches, and
# comparing `:method` with three strings costs a fraction of running a regex on every request.
INBOUND_RETRY_METHODS = ("GET", "HEAD", "OPTIONS")


def inbound_retry_policy() -> rc.RetryPolicy:
    pol = rc.RetryPolicy(retry_on="reset", num_retries=u32(1))
    for method in INBOUND_RETRY_METHODS:
        pol.retriable_request_headers.add(name=":method", string_match=string_pb2.StringMatcher(exact=method))
    return pol
