"""Rate limits (`mizzen.dev/v1 RateLimit`) → Envoy's rate-limit filters. Pure.

Where (model/ratelimits.py): a `workloadSelector` RateLimit at the selected proxies' inbound chains (the
callee protects itself) — for a gateway workload, at its Gateway servers' HTTP chains (`Chain.gateway`; the
RateLimit's `port` and a match `port` are the server port), as for a callee; a `host` RateLimit at the outbound virtual host of that host in every proxy that sees
it (the callers protect a dependency). A chain with no limit gets none of the filters below: a proxy no
RateLimit touches keeps byte-identical listeners and routes.

HCM filters this feature adds, in this order (only those a chain needs):
1. `mizzen.ratelimit.source.<workload|namespace|principal>` (inbound, limits keyed or classed by the caller):
   RBAC with only shadow rules, one policy per identity whose principals are the registry addresses of that
   identity (`direct_remote_ip`: the TCP peer, which a client cannot forge with a header). The matched policy
   is left in dynamic metadata, read by the descriptors' `metadata` actions. Never denies anything.
2. `mizzen.ratelimit.local` / `mizzen.ratelimit.local.shadow`: Envoy's `local_ratelimit`, disabled at the HCM
   level; routes carry their buckets (`ratelimit_descriptors.local_per_route`). A local limit with a request
   match becomes routes of its own (`split_routes`), so other routes stay untouched. `filter_enabled` is
   100% and `filter_enforced` 100% (0% in the shadow instance) on every route that has limits.
3. `mizzen.ratelimit.strip` (a delay limit applies): `header_mutation` removing client-sent `x-envoy-fault-*`
   headers, so only the rate-limit service can ask the fault filter below for a delay.
4. `mizzen.ratelimit.global[.<failureMode>.<status>]`: Envoy's `ratelimit` filter, domain `mizzen`, to the
   `mizzen_ratelimit` cluster with a short timeout and a retry on another replica of what the service never
   saw (a refused connection or stream); one instance per (failureMode, status) because Envoy has
   one `failure_mode_deny` and one `rate_limited_status` per filter. Virtual hosts carry the descriptors
   (`RateLimitPerRoute.rate_limits`). Envoy's own x-ratelimit headers stay off: the service sets them.
5. `mizzen.ratelimit.delay` (a delay limit applies): the fault filter with `header_delay` at 100%: it waits what
   the service put in `x-envoy-fault-delay-request`; the virtual host removes that header before the app.

Cluster `mizzen_ratelimit` (only in views with a global limit): HTTP/2 to the proxy's RATELIMIT_ADDRESS (its
node metadata: the unix socket(s) `mizzen up` serves the service on; none known → no endpoint, and each
limit's failureMode applies).
"""
from __future__ import annotations

import math
from typing import Iterable

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import address_pb2, backoff_pb2, base_pb2, config_source_pb2, grpc_service_pb2, protocol_pb2
from envoy.config.rbac.v3 import rbac_pb2 as rbac_cfg
from envoy.config.ratelimit.v3 import rls_pb2 as rls_cfg
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2 as hm_pb2
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2 as grl_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2
from envoy.type.v3 import http_status_pb2, percent_pb2

from ...model import ratelimits as M
from ...model.ratelimits import AppliedLimit
from ...model.services import Service, is_http
from ...ratelimit.engine import DELAY_HEADER
from ...ratelimit.table import DOMAIN
from ..common import duration, pack, socket_address
from . import ratelimit_descriptors as D
from .base import Chain, Feature, ViewContext

LOCAL = "mizzen.ratelimit.local"
LOCAL_SHADOW = "mizzen.ratelimit.local.shadow"
STRIP = "mizzen.ratelimit.strip"
GLOBAL = "mizzen.ratelimit.global"
DELAY = "mizzen.ratelimit.delay"
SOURCE = "mizzen.ratelimit.source."
CLUSTER = "mizzen_ratelimit"
RLS_TIMEOUT_S = 0.25  # a decision normally takes ~1 ms; longer means the service is in trouble: failureMode
RLS_CONNECT_TIMEOUT_S = 0.25
RLS_RETRY_BACKOFF_S = 0.002  # a refused connection is known at once: ask the next replica right away
DELAY_GUARD_MIN = 1000  # max_active_faults floor (a memory guard: the queue bound is the service's maxDelay)
FAULT_HEADERS = ("x-envoy-fault-delay-request", "x-envoy-fault-delay-request-percentage",
                 "x-envoy-fault-abort-request", "x-envoy-fault-abort-grpc-request",
                 "x-envoy-fault-abort-request-percentage", "x-envoy-fault-throughput-response",
                 "x-envoy-fault-throughput-response-percentage")


def global_filter_name(a: AppliedLimit) -> str:
    mode = a.spec.failure_mode or "allow"
    status = a.spec.response.status if a.spec.response else 429
    return GLOBAL if (mode, status) == ("allow", 429) else f"{GLOBAL}.{mode}.{status}"


def _status(a: AppliedLimit) -> int:
    return a.spec.response.status if a.spec.response else 429


def _delay(a: AppliedLimit) -> bool:
    return a.mode == "global" and a.limit.strategy == "delay"


# ------------------------------------------------------------------------------------------- where

def vh_limits(at: Chain, svc: Service | None, ctx: ViewContext) -> tuple[AppliedLimit, ...]:
    """The limits of one virtual host: an outbound service's, or the inbound route config's (svc None)."""
    config = ctx.snap.config
    if svc is not None:
        return M.outbound(config, ctx.proxy, svc.hostname, at.port)
    return M.inbound(config, ctx.proxy, at.port) if at.port is not None else ()


def chain_limits(at: Chain, ctx: ViewContext) -> tuple[AppliedLimit, ...]:
    """Every limit under one HCM (an outbound chain serves every visible service of its port)."""
    def compute() -> tuple[AppliedLimit, ...]:
        if not M.relevant(ctx.snap.config, ctx.proxy):
            return ()
        if at.callee:  # an inbound chain, or a gateway's: the limits selecting the proxy's own workload
            return vh_limits(at, None, ctx)
        out: list[AppliedLimit] = []
        for svc in ctx.services:
            for sp in svc.ports:
                if is_http(sp.protocol) and (at.port is None or sp.port == at.port):
                    out += [a for a in M.outbound(ctx.snap.config, ctx.proxy, svc.hostname, sp.port) if a not in out]
        return tuple(out)

    return ctx.once(("rl_chain", at), compute)


def _any_global(ctx: ViewContext) -> bool:
    def compute() -> bool:
        if not M.relevant(ctx.snap.config, ctx.proxy):
            return False
        chains = [Chain(False, p) for p in ctx.proxy.ports] + [Chain(True, None)] + [
            Chain(True, p, gateway=True) for p in M.gateway_ports(ctx.snap.config, ctx.proxy)]
        return any(a.mode == "global" for at in chains for a in chain_limits(at, ctx))

    return ctx.once("rl_any_global", compute)


# ------------------------------------------------------------------------------------------- filters

def _identity_filter(kind: str, ctx: ViewContext) -> hcm_pb2.HttpFilter:
    by_value: dict[str, list[str]] = {}
    for addr, value in M.identities(ctx.snap, kind):
        by_value.setdefault(value, []).append(addr)
    policies = rbac_cfg.RBAC(action=rbac_cfg.RBAC.ALLOW)
    for value, addrs in sorted(by_value.items()):
        pol = policies.policies[value]
        pol.permissions.add(any=True)
        for addr in addrs:
            pol.principals.add(direct_remote_ip=address_pb2.CidrRange(
                address_prefix=addr, prefix_len={"value": 128 if ":" in addr else 32}))
    cfg = rbac_pb2.RBAC(shadow_rules=policies, shadow_rules_stat_prefix=D.identity_stat_prefix(kind))
    return hcm_pb2.HttpFilter(name=SOURCE + kind, typed_config=pack(cfg))


def _local_filter(name: str) -> hcm_pb2.HttpFilter:
    from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as local_pb2

    stat = "mizzen_local_shadow" if name == LOCAL_SHADOW else "mizzen_local"
    return hcm_pb2.HttpFilter(name=name, typed_config=pack(local_pb2.LocalRateLimit(stat_prefix=stat)))


def _strip_filter() -> hcm_pb2.HttpFilter:
    muts = hm_pb2.Mutations(request_mutations=[mutation_rules_pb2.HeaderMutation(remove=h) for h in FAULT_HEADERS])
    return hcm_pb2.HttpFilter(name=STRIP, typed_config=pack(hm_pb2.HeaderMutation(mutations=muts)))


def _retry_policy(replicas: int) -> base_pb2.RetryPolicy:
    """A decision the service never saw (connection refused: a replica down or restarting; a refused stream)
    is asked of another replica at once, instead of falling to failureMode. Nothing that may have been counted
    is retried (a timeout or a reset could count one request twice). Envoy makes the back-off's max_interval
    the per-try timeout of a gRPC service's retries (Http::Utility::convertCoreToRouteRetryPolicy): it is the
    whole call's timeout, or a slow answer would be cut short and fall to failureMode."""
    return base_pb2.RetryPolicy(
        retry_on="connect-failure,refused-stream", num_retries={"value": max(1, replicas - 1)},
        retry_back_off=backoff_pb2.BackoffStrategy(base_interval=duration(RLS_RETRY_BACKOFF_S),
                                                   max_interval=duration(RLS_TIMEOUT_S)),
        retry_host_predicate=[base_pb2.RetryPolicy.RetryHostPredicate(
            name="envoy.retry_host_predicates.previous_hosts",
            typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate()))],
        host_selection_retry_max_attempts=3)


def _global_filter(name: str, a: AppliedLimit, replicas: int) -> hcm_pb2.HttpFilter:
    deny = (a.spec.failure_mode or "allow") == "deny"
    cfg = grl_pb2.RateLimit(
        domain=DOMAIN, timeout=duration(RLS_TIMEOUT_S), failure_mode_deny=deny,
        stat_prefix=name.replace(".", "_"),
        rate_limit_service=rls_cfg.RateLimitServiceConfig(
            transport_api_version=config_source_pb2.V3,
            grpc_service=grpc_service_pb2.GrpcService(envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(
                cluster_name=CLUSTER), retry_policy=_retry_policy(replicas))))
    if _status(a) != 429:
        cfg.rate_limited_status.code = _status(a)
    if deny:  # the service cannot be asked: not a rate limit, the limiter is unavailable
        cfg.status_on_error.code = http_status_pb2.ServiceUnavailable
    return hcm_pb2.HttpFilter(name=name, typed_config=pack(cfg))


def _delay_filter(limits: Iterable[AppliedLimit]) -> hcm_pb2.HttpFilter:
    # How many requests can wait at once: ≤ maxDelay·rate per counter (the service's bound). Envoy forwards
    # at once — undelayed — what exceeds max_active_faults, so it is set well above that: a memory guard only.
    queued = sum(math.ceil(a.limit.per_second() * _max_delay(a)) for a in limits if _delay(a))
    cfg = fault_pb2.HTTPFault(delay=common_fault.FaultDelay(
        header_delay=common_fault.FaultDelay.HeaderDelay(),
        percentage=percent_pb2.FractionalPercent(numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED)))
    cfg.max_active_faults.value = max(DELAY_GUARD_MIN, 4 * queued)
    return hcm_pb2.HttpFilter(name=DELAY, typed_config=pack(cfg))


def _max_delay(a: AppliedLimit) -> float:
    from ...api.virtual_service import duration_seconds

    return duration_seconds(a.limit.max_delay) if a.limit.max_delay else 0.0


# ------------------------------------------------------------------------------------------- the feature

class RateLimitFeature(Feature):
    name = "mizzen.ratelimit"

    def patch_hcm(self, hcm: hcm_pb2.HttpConnectionManager, at: Chain, ctx: ViewContext) -> None:
        limits = chain_limits(at, ctx)
        if not limits:
            return
        if at.callee:
            for kind in sorted({k for a in limits for k in a.sources()}):
                hcm.http_filters.append(_identity_filter(kind, ctx))
        local = [a for a in limits if a.mode == "local"]
        if any(not a.limit.shadow for a in local):
            hcm.http_filters.append(_local_filter(LOCAL))
        if any(a.limit.shadow for a in local):
            hcm.http_filters.append(_local_filter(LOCAL_SHADOW))
        glob = [a for a in limits if a.mode == "global"]
        delay = [a for a in glob if _delay(a)]
        if delay:
            hcm.http_filters.append(_strip_filter())
        groups: dict[str, AppliedLimit] = {}
        for a in glob:
            groups.setdefault(global_filter_name(a), a)
        for name in sorted(groups):
            hcm.http_filters.append(_global_filter(name, groups[name], len(ctx.proxy.ratelimit_address)))
        if delay:
            hcm.http_filters.append(_delay_filter(delay))

    def route_inputs(self, snap, proxy):
        return proxy if M.relevant(snap.config, proxy) else ()  # descriptors carry the proxy's own identity

    def patch_virtual_host(self, vh: rc.VirtualHost, svc: Service | None, at: Chain, ctx: ViewContext) -> None:
        limits = vh_limits(at, svc, ctx) if M.relevant(ctx.snap.config, ctx.proxy) else ()
        if not limits:
            return
        outbound = not at.callee  # descriptors: the caller's own identity, or the peer's looked up
        groups: dict[str, list[AppliedLimit]] = {}
        for a in limits:
            if a.mode == "global":
                groups.setdefault(global_filter_name(a), []).append(a)
        for name, group in sorted(groups.items()):
            per = grl_pb2.RateLimitPerRoute(rate_limits=[D.global_rate_limit(a, outbound, ctx.proxy) for a in group])
            vh.typed_per_filter_config[name].CopyFrom(pack(per))
        if any(_delay(a) for a in limits):
            vh.request_headers_to_remove.append(DELAY_HEADER)  # read by the delay filter; the app never sees it
        local = [a for a in limits if a.mode == "local"]
        if local:
            self._local(vh, local, outbound, ctx)

    @staticmethod
    def _local(vh: rc.VirtualHost, local: list[AppliedLimit], outbound: bool, ctx: ViewContext) -> None:
        always = [a for a in local if not D.conditional(a)]
        routes = D.split_routes(list(vh.routes), [a for a in local if D.conditional(a)])
        vh.ClearField("routes")
        for route, combo in routes:
            on = [(a, M.share(ctx.snap, a)) for a in (*combo, *always)]
            for name, shadow in ((LOCAL, False), (LOCAL_SHADOW, True)):
                these = [(a, s) for a, s in on if a.limit.shadow == shadow]
                if these:
                    cfg = D.local_per_route(these, outbound, ctx.proxy, shadow=shadow, status=_status(these[0][0]))
                    route.typed_per_filter_config[name].CopyFrom(pack(cfg))
            vh.routes.append(route)

    def clusters(self, ctx: ViewContext) -> Iterable[cluster_pb2.Cluster]:
        if not _any_global(ctx):
            return ()
        c = cluster_pb2.Cluster(name=CLUSTER, type=cluster_pb2.Cluster.STATIC,
                                connect_timeout=duration(RLS_CONNECT_TIMEOUT_S))
        c.load_assignment.cluster_name = CLUSTER
        lbs = c.load_assignment.endpoints.add().lb_endpoints
        for addr in ctx.proxy.ratelimit_address:
            ep = lbs.add().endpoint
            if addr.startswith("unix:"):
                ep.address.pipe.path = addr[len("unix:"):]
            else:
                host, _, port = addr.rpartition(":")
                ep.address.CopyFrom(socket_address(host, int(port)))
        c.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].CopyFrom(pack(
            hpo_pb2.HttpProtocolOptions(explicit_http_config=hpo_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions()))))
        th = c.circuit_breakers.thresholds.add()  # one decision per request: never let Envoy's defaults cap it
        for f in ("max_connections", "max_pending_requests", "max_requests"):
            getattr(th, f).value = 100000
        return (c,)


FEATURE = RateLimitFeature()
