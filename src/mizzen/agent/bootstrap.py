"""Envoy bootstrap from the agent config. Pure: no files, no sockets, no clock.

Everything but the xDS cluster and the admin endpoint comes later over ADS (CDS + LDS; EDS/RDS ride on ADS
through the resources the control plane sends).
"""
from __future__ import annotations

import ipaddress
from typing import Any

import yaml

from mizzen.model.types import Proxy
from mizzen.telemetry import envoy as tel
from mizzen.telemetry import istio

from .config import AgentConfig, parse_address
from .sds import sds_cluster

XDS_CLUSTER = "xds-grpc"
# How Envoy re-establishes its ADS stream after losing it (e.g. the control plane was restarted): a jittered
# exponential back-off, each wait drawn at random below an interval that starts at base_interval and doubles
# per failed attempt. Envoy's own default caps the interval at 30 s, so a sidecar whose control plane was down
# a while could stay disconnected for up to ~30 s after it is back (seen: 15-25 s). 5 s bounds that; a refused
# connect to a unix socket costs next to nothing, so retrying more often while it is down is harmless.
XDS_RETRY_POLICY = {"retry_back_off": {"base_interval": "0.5s", "max_interval": "5s"}}


def proxy_of(cfg: AgentConfig) -> Proxy:
    """The control plane's view of this sidecar (it rebuilds the same value with `Proxy.from_node`)."""
    return Proxy(
        id=cfg.node_id, namespace=cfg.namespace, workload=cfg.workload, labels=cfg.labels, ip=cfg.ip,
        kind="gateway" if cfg.gateway else "sidecar", interception=cfg.interception, ports=cfg.ports,
        outbound_port=cfg.outbound_port,
        inbound_port=cfg.inbound_port, app_host=cfg.app_host, port_map=cfg.port_map,
        service_account=cfg.service_account, locality=cfg.locality, ratelimit_address=cfg.ratelimit_addresses,
        trust_domain=cfg.trust_domain if cfg.ca_address else "",
        bootstrap_clusters=tuple(sorted(c["name"] for c in telemetry_clusters(cfg))),
        host_ports=cfg.host_ports, host_netns=cfg.host_netns,
    )


def telemetry_clusters(cfg: AgentConfig) -> list[dict[str, Any]]:
    """Static clusters for telemetry that generated config may name (the node metadata lists them): the
    agent's access-log receiver, and the embedded trace collector (Zipkin v2 over HTTP)."""
    out = []
    if cfg.telemetry:
        out.append(tel.grpc_unix_cluster(tel.TELEMETRY_CLUSTER, cfg.telemetry_socket))
    if cfg.traces_address:
        out.append(tel.http_cluster(tel.TRACES_CLUSTER, envoy_address(cfg.traces_address)))
    return out


def envoy_address(addr: str) -> dict[str, Any]:
    """`unix:/p` -> Envoy `pipe` address; `host:port` -> `socket_address`."""
    host, port = parse_address(addr, "xdsAddress")
    if host == "unix":
        return {"pipe": {"path": port}}
    return {"socket_address": {"address": host, "port_value": port}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def xds_cluster(cfg: AgentConfig) -> dict[str, Any]:
    # One endpoint per control-plane replica: the ADS stream goes to one (round robin) and, when that one
    # dies, Envoy's reconnect picks the next, so a surviving replica takes the proxy over.
    addrs = [envoy_address(a) for a in cfg.xds_addresses]
    static = all("socket_address" not in a or _is_ip(a["socket_address"]["address"]) for a in addrs)
    cluster: dict[str, Any] = {
        "name": XDS_CLUSTER,
        "type": "STATIC" if static else "STRICT_DNS",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": a}} for a in addrs]}],
        },
        # One long-lived ADS stream; never let default circuit breakers cut it.
        "circuit_breakers": {"thresholds": [{
            "priority": "DEFAULT", "max_connections": 100000, "max_pending_requests": 100000,
            "max_requests": 100000, "max_retries": 3}]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {
                    # HTTP/2 PINGs notice a dead control plane on any transport (also unix sockets).
                    "connection_keepalive": {"interval": "30s", "timeout": "10s"},
                }},
            },
        },
        # TCP keepalive on the socket (ignored by the kernel's unix sockets, harmless there).
        "upstream_connection_options": {"tcp_keepalive": {
            "keepalive_time": 300, "keepalive_interval": 30, "keepalive_probes": 3}},
    }
    return cluster


def locality_of(s: str) -> dict[str, str]:
    parts = [p for p in s.split("/")] if s else []
    out = {}
    for key, val in zip(("region", "zone", "sub_zone"), parts):
        if val:
            out[key] = val
    return out


def build_bootstrap(cfg: AgentConfig) -> dict[str, Any]:
    """The Envoy v3 Bootstrap as a plain dict (YAML/JSON serializable)."""
    node: dict[str, Any] = {
        "id": cfg.node_id,
        "cluster": cfg.workload,
        "metadata": proxy_of(cfg).node_metadata(),
    }
    loc = locality_of(cfg.locality)
    if loc:
        node["locality"] = loc
    source = {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0s"}
    return {
        "node": node,
        "admin": {"address": {"pipe": {"path": cfg.admin_socket, "mode": 0o660}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": cfg.xds_protocol,
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER, "retry_policy": XDS_RETRY_POLICY}}],
                "set_node_on_first_message_only": True,
            },
            # 0s: stay un-initialized (admin /ready != LIVE, no listeners) until the control plane answers.
            "cds_config": dict(source),
            "lds_config": dict(source),
        },
        # with a certificate service: `sds-grpc`, the agent's SDS socket (secrets `default` and `ROOTCA`, which
        # the control plane's mTLS listeners and clusters name) — and a gateway's credentials,
        # `kubernetes://<Secret name>` (agent/credentials.py); the telemetry sinks (access-log stream, traces)
        "static_resources": {"clusters": [xds_cluster(cfg)] + ([sds_cluster(cfg.sds_socket)]
                                                               if cfg.ca_address or cfg.gateway else [])
                             + telemetry_clusters(cfg)},
        # The connection cap. Envoy 1.40 deprecates the runtime key overload.global_downstream_max_connections
        # (it warns and still reports "no configured limit"), so the overload manager's monitor carries it.
        "overload_manager": {
            "resource_monitors": [{
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3"
                             ".DownstreamConnectionsConfig",
                    "max_active_downstream_connections": cfg.max_downstream_connections,
                },
            }],
        },
        # A cluster's traffic stats (upstream_rq_*, upstream_cx_*: ~60 of its ~110) are created when the cluster
        # first carries a request, not when it is added: every stat still exists, is exported and counts from
        # zero once used, but the clusters a proxy never calls (most of a full, un-scoped view) do not pay for
        # them. Measured (bench/sidecar.py, 1000 services, no Sidecar): Envoy private memory 102 -> 72 MB,
        # stats 114k -> 51k. As Istio's sidecars (ENABLE_DEFERRED_STATS_CREATION, on by default).
        "deferred_stat_options": {"enable_deferred_creation_stats": True},
        # Istio's bucket bounds for the Envoy-native request metrics (counted inside Envoy, the default metrics
        # provider: telemetry/envoy.native_metrics_log); a Telemetry naming `access-log-stream` has none.
        "stats_config": {"histogram_bucket_settings": tel.native_histogram_buckets(istio.DURATION_BUCKETS_MS,
                                                                                   istio.BYTES_BUCKETS)},
        "layered_runtime": {"layers": [
            # as Istio's bootstrap: RE2 programs up to 32768 (Envoy's default error level, 100, NACKs regexes as
            # plain as `^/api/v[0-9]+/users/[a-z0-9-]{1,64}$`; api/fields.py validates against the same limit)
            {"name": "static", "static_layer": {"re2.max_program_size.error_level": 32768}},
            {"name": "admin", "admin_layer": {}},
        ]},
    }


def render_bootstrap(cfg: AgentConfig) -> str:
    """The bootstrap as YAML text, for `<workDir>/envoy.yaml`."""
    return yaml.safe_dump(build_bootstrap(cfg), sort_keys=False, default_flow_style=False)
