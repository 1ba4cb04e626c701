"""DestinationRule traffic policies → Envoy cluster settings and route hash policies. Pure.

Which policy applies (Istio's merge of top-level, port-level, subset and subset port-level settings) is
`model.policy`; `model.Resolved.policy(host, subset, port)` answers it. This module only shapes the answer
into Envoy messages: `apply_cluster` for an outbound cluster, `apply_route_policy` for a route action.
"""
from __future__ import annotations

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import health_check_pb2, protocol_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
from envoy.type.v3 import percent_pb2, range_pb2

from ..api.destination_rule import ConnectionPoolSettings, ConsistentHashLB
from ..api.duration import seconds_or_none as parse_duration
from ..model.policy import Policy
from ..model.resolved import Destination, Resolved
from .common import duration, pack, u32

HPO = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
MAX_U32 = 2**32 - 1
DEFAULT_MAX_EJECTION_PERCENT = 10  # Istio's default


def _secs(text: str | None) -> float | None:
    return parse_duration(text)


# ------------------------------------------------------------------------------------------- cluster

_SIMPLE = {
    None: cluster_pb2.Cluster.ROUND_ROBIN, "UNSPECIFIED": cluster_pb2.Cluster.ROUND_ROBIN,
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN, "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
    "LEAST_CONN": cluster_pb2.Cluster.LEAST_REQUEST, "RANDOM": cluster_pb2.Cluster.RANDOM,
}


def apply_lb(c: cluster_pb2.Cluster, pol: Policy) -> None:
    lb = pol.load_balancer
    ch = pol.consistent_hash
    if ch is not None:
        if ch.maglev is not None:
            c.lb_policy = cluster_pb2.Cluster.MAGLEV
            if ch.maglev.table_size:
                c.maglev_lb_config.table_size.value = ch.maglev.table_size
        else:
            c.lb_policy = cluster_pb2.Cluster.RING_HASH
            size = (ch.ring_hash.minimum_ring_size if ch.ring_hash else None) or ch.minimum_ring_size
            if size:
                c.ring_hash_lb_config.minimum_ring_size.value = size
    else:
        c.lb_policy = _SIMPLE.get(lb.simple if lb else None, cluster_pb2.Cluster.ROUND_ROBIN)
    if lb is not None and lb.warmup_window and c.lb_policy in (  # warmup.duration or warmupDurationSecs
            cluster_pb2.Cluster.ROUND_ROBIN, cluster_pb2.Cluster.LEAST_REQUEST):
        cfg = c.round_robin_lb_config if c.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN else c.least_request_lb_config
        cfg.slow_start_config.slow_start_window.CopyFrom(duration(_secs(lb.warmup_window)))
    if pol.locality_distribute:
        c.common_lb_config.locality_weighted_lb_config.SetInParent()


def thresholds(cp: ConnectionPoolSettings | None = None) -> circuit_breaker_pb2.CircuitBreakers.Thresholds:
    """A cluster's circuit breakers: what a DestinationRule's connectionPool sets, the rest unlimited (Istio's
    defaults, for every cluster it builds, inbound ones too). Envoy's own defaults (1024 connections, pending
    and active requests; 3 concurrent retries) are not Istio's."""
    tcp, http = (cp.tcp, cp.http) if cp is not None else (None, None)
    return circuit_breaker_pb2.CircuitBreakers.Thresholds(
        max_connections=u32(tcp.max_connections if tcp and tcp.max_connections else MAX_U32),
        max_pending_requests=u32(http.http1_max_pending_requests if http and http.http1_max_pending_requests
                                 else MAX_U32),
        max_requests=u32(http.http2_max_requests if http and http.http2_max_requests else MAX_U32),
        max_retries=u32(http.max_retries if http and http.max_retries is not None else MAX_U32),
        track_remaining=True)


def apply_connection_pool(c: cluster_pb2.Cluster, pol: Policy, protocol: str) -> None:
    """Circuit breakers (Istio's defaults: unlimited unless set), connect timeout, keepalive, HTTP options."""
    cp = pol.connection_pool or ConnectionPoolSettings()
    tcp, http = cp.tcp, cp.http
    th = thresholds(cp)
    if pol.retry_budget is not None:
        rb = pol.retry_budget
        th.retry_budget.budget_percent.CopyFrom(percent_pb2.Percent(value=rb.percent))
        th.retry_budget.min_retry_concurrency.value = rb.min_retry_concurrency
    c.circuit_breakers.thresholds.append(th)
    if tcp is not None:
        if tcp.connect_timeout:
            c.connect_timeout.CopyFrom(duration(_secs(tcp.connect_timeout)))
        if tcp.tcp_keepalive is not None:
            ka = c.upstream_connection_options.tcp_keepalive
            ka.SetInParent()
            if tcp.tcp_keepalive.probes is not None:
                ka.keepalive_probes.value = tcp.tcp_keepalive.probes
            if tcp.tcp_keepalive.time:
                ka.keepalive_time.value = max(1, int(_secs(tcp.tcp_keepalive.time)))
            if tcp.tcp_keepalive.interval:
                ka.keepalive_interval.value = max(1, int(_secs(tcp.tcp_keepalive.interval)))
    if protocol not in ("HTTP", "HTTP2", "GRPC"):
        return
    h2 = protocol in ("HTTP2", "GRPC") or bool(http and http.h2_upgrade_policy == "UPGRADE")
    common = protocol_pb2.HttpProtocolOptions()
    if http is not None:
        if http.max_requests_per_connection:
            common.max_requests_per_connection.value = http.max_requests_per_connection
        if http.idle_timeout:
            common.idle_timeout.CopyFrom(duration(_secs(http.idle_timeout)))
    if tcp is not None and tcp.max_connection_duration:
        common.max_connection_duration.CopyFrom(duration(_secs(tcp.max_connection_duration)))
    if not h2 and common.ByteSize() == 0 and not (http and http.use_client_protocol):
        return  # plain HTTP/1.1 with Envoy's defaults: no protocol options at all
    opts = hpo.HttpProtocolOptions()
    if common.ByteSize():
        opts.common_http_protocol_options.CopyFrom(common)
    if http is not None and http.use_client_protocol:
        opts.use_downstream_protocol_config.SetInParent()
        if h2:
            opts.use_downstream_protocol_config.http2_protocol_options.SetInParent()
    elif h2:
        h2o = opts.explicit_http_config.http2_protocol_options
        h2o.SetInParent()
        if http is not None and http.max_concurrent_streams:
            h2o.max_concurrent_streams.value = http.max_concurrent_streams
    else:
        opts.explicit_http_config.http_protocol_options.SetInParent()
    c.typed_extension_protocol_options[HPO].CopyFrom(pack(opts))


def apply_outlier_detection(c: cluster_pb2.Cluster, pol: Policy) -> None:
    od = pol.outlier_detection
    if od is None:
        return
    out = outlier_detection_pb2.OutlierDetection(enforcing_success_rate=u32(0))  # Istio: success rate off
    n5 = od.consecutive_5xx_errors if od.consecutive_5xx_errors is not None else od.consecutive_errors
    if n5 is not None:
        out.consecutive_5xx.value = n5
        out.enforcing_consecutive_5xx.value = 100 if n5 > 0 else 0
    if od.consecutive_gateway_errors is not None:
        out.consecutive_gateway_failure.value = od.consecutive_gateway_errors
        out.enforcing_consecutive_gateway_failure.value = 100 if od.consecutive_gateway_errors > 0 else 0
    if od.split_external_local_origin_errors:
        out.split_external_local_origin_errors = True
        if od.consecutive_local_origin_failures is not None:
            out.consecutive_local_origin_failure.value = od.consecutive_local_origin_failures
            out.enforcing_consecutive_local_origin_failure.value = 100
    if od.interval:
        out.interval.CopyFrom(duration(_secs(od.interval)))
    if od.base_ejection_time:
        out.base_ejection_time.CopyFrom(duration(_secs(od.base_ejection_time)))
    out.max_ejection_percent.value = (od.max_ejection_percent if od.max_ejection_percent is not None
                                      else DEFAULT_MAX_EJECTION_PERCENT)
    c.outlier_detection.CopyFrom(out)
    # Istio: minHealthPercent is Envoy's panic threshold (0 = never panic, keep ejecting)
    c.common_lb_config.healthy_panic_threshold.value = float(od.min_health_percent or 0)


def apply_health_check(c: cluster_pb2.Cluster, pol: Policy, protocol: str, host: str) -> None:
    hc = pol.health_check
    if hc is None or (hc.grpc is not None and protocol not in ("HTTP2", "GRPC")):
        return  # Envoy checks gRPC health only on HTTP/2 clusters (mizzen analyze reports it, MZ0111)
    h = health_check_pb2.HealthCheck(
        timeout=duration(_secs(hc.timeout)), interval=duration(_secs(hc.interval)),
        unhealthy_threshold=u32(hc.unhealthy_threshold), healthy_threshold=u32(hc.healthy_threshold),
        no_traffic_interval=duration(_secs(hc.interval)))
    if hc.http is not None:
        hh = h.http_health_check
        hh.path = hc.http.path
        # Envoy's default Host is the cluster name, whose '|' the callee's HCM rejects: use the service host
        hh.host = hc.http.host or host
        for code in sorted(set(hc.http.expected_statuses)):
            hh.expected_statuses.append(range_pb2.Int64Range(start=code, end=code + 1))
        if protocol in ("HTTP2", "GRPC"):
            from envoy.type.v3 import http_pb2
            hh.codec_client_type = http_pb2.HTTP2
    elif hc.grpc is not None:
        h.grpc_health_check.service_name = hc.grpc.service_name
        h.grpc_health_check.SetInParent()
    else:
        h.tcp_health_check.SetInParent()
    c.health_checks.append(h)


def apply_cluster(c: cluster_pb2.Cluster, pol: Policy, protocol: str, host: str) -> None:
    """Everything a DestinationRule says about one outbound cluster of `host` (not PASSTHROUGH's lb type)."""
    apply_lb(c, pol)
    apply_connection_pool(c, pol, protocol)
    apply_outlier_detection(c, pol)
    apply_health_check(c, pol, protocol, host)


# -------------------------------------------------------------------------------------------- routes

def hash_policy(ch: ConsistentHashLB) -> rc.RouteAction.HashPolicy:
    hp = rc.RouteAction.HashPolicy()
    if ch.http_header_name:
        hp.header.header_name = ch.http_header_name
    elif ch.http_cookie is not None:
        hp.cookie.name = ch.http_cookie.name
        if ch.http_cookie.path:
            hp.cookie.path = ch.http_cookie.path
        if ch.http_cookie.ttl is not None:
            hp.cookie.ttl.CopyFrom(duration(_secs(ch.http_cookie.ttl) or 0.0))
    elif ch.use_source_ip:
        hp.connection_properties.source_ip = True
    elif ch.http_query_parameter_name:
        hp.query_parameter.name = ch.http_query_parameter_name
    return hp


def apply_route_policy(act: rc.RouteAction, destinations: list[Destination], resolved: Resolved) -> None:
    """The consistentHash of the destinations' effective policies → `hash_policy` (with several weighted
    destinations, only when they all agree, as Istio does). `destinations` are those the action sends to."""
    hashes = [resolved.policy(d.host, d.subset, d.port).consistent_hash for d in destinations]
    if hashes and hashes[0] is not None and all(h == hashes[0] for h in hashes):
        act.hash_policy.append(hash_policy(hashes[0]))


__all__ = ["apply_cluster", "apply_route_policy", "hash_policy"]
