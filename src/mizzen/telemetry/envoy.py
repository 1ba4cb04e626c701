"""The Envoy configuration telemetry needs, in Envoy's JSON form (dicts: the bootstrap uses them as they are,
`translate/filters/` turns them into messages with `json_format.ParseDict`). PURE.

- the access-log stream (`envoy.access_loggers.http_grpc` / `tcp_grpc`) to the sidecar's agent, batched by
  Envoy (flush every `flush_interval` or when `buffer_bytes` fill up), one per direction (`als_log_name`);
- tracing with Envoy's OpenTelemetry tracer (W3C `traceparent`; spans as OTLP/gRPC) or with its Zipkin
  tracer in `USE_B3_WITH_W3C_PROPAGATION` mode (B3 *and* W3C headers; spans as Zipkin v2 JSON);
- the tap filter, driven from the admin endpoint (`/tap`), inert while nobody taps;
- the static clusters that carry the access-log and span streams to a unix socket.
"""
from __future__ import annotations

from typing import Any, Mapping

TELEMETRY_CLUSTER = "mizzen-telemetry"  # the sidecar's agent: access-log stream (gRPC over a unix socket)
TRACES_CLUSTER = "mizzen-traces"  # the trace receiver (OTLP/gRPC or Zipkin HTTP)
TAP_CONFIG_ID = "mizzen-tap"
ALS_PREFIX = "mizzen."

HTTP_GRPC = "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig"
TCP_GRPC = "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


SAMPLED_SUFFIX = ".sampled"
# The runtime key (an integer percent, 0 unless the agent sets it through the admin `/runtime_modify`) that
# samples the stream of a proxy whose metrics are counted inside Envoy: only `mizzen top` uses those entries.
TOP_RUNTIME_KEY = "mizzen.top_sampling_percent"


def als_log_name(direction: str, kind: str = "http", sampled: bool = False) -> str:
    """`mizzen.outbound.http` etc.: the receiver learns the direction from the stream's identifier; a `.sampled`
    stream feeds `mizzen top` only (its requests are counted by Envoy's native metrics)."""
    return f"{ALS_PREFIX}{direction}.{kind}" + (SAMPLED_SUFFIX if sampled else "")


def is_sampled(log_name: str) -> bool:
    return log_name.endswith(SAMPLED_SUFFIX)


# The upstream connection's certificates' URI SANs, as custom tags of each outbound entry: the entry's
# `tls_properties` describe the downstream connection only (on the outbound side, the app's plaintext one), so
# the caller's sidecar learns the callee's identity (the server certificate it verified under mTLS) and its
# own (the client certificate it presented) through Envoy's formatter (`%UPSTREAM_PEER_URI_SAN%`,
# `%UPSTREAM_LOCAL_URI_SAN%`: comma-joined SANs; "-" when the upstream connection had no TLS), as Istio's
# stats plugin does from the same connection properties.
UPSTREAM_PEER_TAG = "mizzen.upstream_peer_uri_san"
UPSTREAM_LOCAL_TAG = "mizzen.upstream_local_uri_san"


def _common(direction: str, kind: str, cluster: str, flush_interval: str, buffer_bytes: int,
            sampled: bool = False) -> dict[str, Any]:
    common: dict[str, Any] = {
        "log_name": als_log_name(direction, kind, sampled),
        "transport_api_version": "V3",
        "grpc_service": {"envoy_grpc": {"cluster_name": cluster}},
        "buffer_flush_interval": flush_interval,
        "buffer_size_bytes": buffer_bytes,
    }
    if direction == "outbound":
        common["custom_tags"] = [{"tag": UPSTREAM_PEER_TAG, "value": "%UPSTREAM_PEER_URI_SAN%"},
                                 {"tag": UPSTREAM_LOCAL_TAG, "value": "%UPSTREAM_LOCAL_URI_SAN%"}]
    return common


def http_access_log(direction: str, *, cluster: str = TELEMETRY_CLUSTER, flush_interval: str = "1s",
                    buffer_bytes: int = 16384, sampled: bool = False) -> dict[str, Any]:
    """An HCM `access_log` entry streaming every request to the agent; `sampled`: only the share of requests the
    runtime key TOP_RUNTIME_KEY says (0 % unless the agent raises it while `mizzen top` watches), to a `.sampled`
    stream. Off, it costs a runtime lookup per request: the entry is neither built nor sent."""
    return {
        "name": "envoy.access_loggers.http_grpc",
        **({"filter": {"runtime_filter": {"runtime_key": TOP_RUNTIME_KEY,
                                          "percent_sampled": {"numerator": 0, "denominator": "HUNDRED"},
                                          "use_independent_randomness": True}}} if sampled else {}),
        "typed_config": {
            "@type": HTTP_GRPC,
            "common_config": _common(direction, "http", cluster, flush_interval, buffer_bytes, sampled),
            "additional_request_headers_to_log": ["content-type"],
            "additional_response_headers_to_log": ["grpc-status"],
            "additional_response_trailers_to_log": ["grpc-status"],
        },
    }


# Envoy-native metrics (the `envoy-stats` metrics provider): Envoy's stats access logger counts each request into
# a few stats whose tags are formatter values, and the agent renames them to Istio's series at scrape time
# (`telemetry/native.py`): no per-request entry leaves Envoy and no per-request work runs in Python. The tags are
# the label-relevant fields only (the agent derives Istio's labels from them with its directory, as it does for an
# access-log entry); every one is bounded by the mesh (identities, endpoints, clusters, codes, flags), except the
# caller's IP on the inbound side, which callers outside the mesh make as many as they are.
NATIVE_PREFIX = "mizzen"
STATS_LOGGER = "type.googleapis.com/envoy.extensions.access_loggers.stats.v3.Config"
NATIVE_COUNTER = "requests_total"
NATIVE_DURATION = "request_duration_milliseconds"
NATIVE_REQUEST_BYTES = "request_bytes"
NATIVE_RESPONSE_BYTES = "response_bytes"


# The tags' layout (Envoy formats each tag of each stat once per request, and every tag costs a stat-name copy and a
# longer stat lookup: 8 tags x 4 stats made the logger ~+15 % of a proxy's CPU per request, bench/filtercost.py).
# The values Mizzen controls are packed into ONE tag, `key`, one format string whose fields are joined by
# NATIVE_SEP (a control character no address, cluster name, code, flag or literal of ours contains); the agent
# splits it again (`telemetry/native.py`). The fields are NATIVE_PACKED in this order, then, on a sidecar's
# outbound side, the request's :authority LAST: the caller's app chooses it (any byte but NUL, CR and LF, the
# separator included), so the agent splits only the first len(NATIVE_PACKED) - 1 separators and a crafted Host
# can only ever be the authority. The other values a peer chooses keep a tag each (NATIVE_OWN_TAGS): the grpc-status
# (the callee's app) and the peer certificate's URI SANs (an outside server's certificate, under a DestinationRule
# TLS origination) could contain the separator too, and two such values in one tag could not be split safely.
NATIVE_KEY_TAG = "key"
NATIVE_SEP = "\x1f"  # ASCII unit separator
NATIVE_PACKED = ("direction", "host", "cluster", "code", "flags", "authority")  # authority: optional, last
NATIVE_OWN_TAGS = ("peer", "grpc")


def _native_tags(direction: str, authority: bool) -> list[dict[str, str]]:
    # A missing value renders as "" in a stat tag (each empty field of `key` too), so `grpc` is the grpc-status of a
    # trailers-only response (a header) or of a normal one (a trailer), as the access-log path reads it
    # (`%GRPC_STATUS%` would be empty unless the request's content-type was gRPC).
    # A sidecar's outbound side adds the request's :authority: the agent names a passthrough call's
    # destination_service by it (as Istio), and a mesh call's by its cluster (the field then only splits a
    # cluster's series by the spellings the app uses). The callee's side and a gateway have none: there the callers
    # (outside ones, for a gateway) would choose its values, one Envoy series per Host header sent; the callee's
    # side names the service of the inbound port (SelfInfo.port_services), a gateway its route's cluster.
    outbound = direction == "outbound"
    fields = {
        "direction": direction,
        "host": "%UPSTREAM_HOST%" if outbound else "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
        "cluster": "%UPSTREAM_CLUSTER%",
        "code": "%RESPONSE_CODE%",
        "flags": "%RESPONSE_FLAGS%",
        "authority": "%REQ(:AUTHORITY)%",
    }
    packed = NATIVE_PACKED if authority else NATIVE_PACKED[:-1]
    own = {"peer": "%UPSTREAM_PEER_URI_SAN%" if outbound else "%DOWNSTREAM_PEER_URI_SAN%",
           "grpc": "%RESP(grpc-status)%%TRAILER(grpc-status)%"}
    return [{"name": NATIVE_KEY_TAG, "value_format": NATIVE_SEP.join(fields[f] for f in packed)},
            *({"name": k, "value_format": own[k]} for k in NATIVE_OWN_TAGS)]


def native_metrics_log(direction: str, authority: bool = False) -> dict[str, Any]:
    """An HCM `access_log` entry counting each request into `mizzen.*` stats (requests, duration, sizes: the
    bytes on the downstream connection, headers included, as Istio's request/response size); `authority`: tag
    the request's :authority too (a sidecar's outbound side only)."""
    tags = _native_tags(direction, authority)

    def stat(name: str) -> dict[str, Any]:
        return {"name": name, "tags": tags}

    return {"name": "envoy.access_loggers.stats", "typed_config": {
        "@type": STATS_LOGGER, "stat_prefix": NATIVE_PREFIX,
        "counters": [{"stat": stat(NATIVE_COUNTER), "value_fixed": 1}],
        "histograms": [
            {"stat": stat(NATIVE_DURATION), "unit": "Milliseconds", "value_format": "%DURATION%"},
            {"stat": stat(NATIVE_REQUEST_BYTES), "unit": "Bytes", "value_format": "%DOWNSTREAM_WIRE_BYTES_RECEIVED%"},
            {"stat": stat(NATIVE_RESPONSE_BYTES), "unit": "Bytes", "value_format": "%DOWNSTREAM_WIRE_BYTES_SENT%"},
        ]}}


def native_histogram_buckets(duration_ms: tuple[float, ...], size_bytes: tuple[float, ...]) -> list[dict[str, Any]]:
    """Bootstrap `stats_config.histogram_bucket_settings`: Istio's bucket bounds for the native histograms."""
    return [{"match": {"prefix": f"{NATIVE_PREFIX}.{NATIVE_DURATION}"}, "buckets": list(duration_ms)},
            {"match": {"prefix": f"{NATIVE_PREFIX}.{NATIVE_REQUEST_BYTES}"}, "buckets": list(size_bytes)},
            {"match": {"prefix": f"{NATIVE_PREFIX}.{NATIVE_RESPONSE_BYTES}"}, "buckets": list(size_bytes)}]


def tcp_access_log(direction: str, *, cluster: str = TELEMETRY_CLUSTER, flush_interval: str = "1s",
                   buffer_bytes: int = 16384) -> dict[str, Any]:
    """A tcp_proxy `access_log` entry; pair with `tcp_access_log_options` for opened/periodic entries."""
    return {
        "name": "envoy.access_loggers.tcp_grpc",
        "typed_config": {"@type": TCP_GRPC, "common_config": _common(direction, "tcp", cluster, flush_interval,
                                                                     buffer_bytes)},
    }


def tcp_access_log_options(period: str = "5s") -> dict[str, Any]:
    """tcp_proxy `access_log_options`: an entry when the upstream connects, then every `period` (bytes of
    long-lived connections show up while they last), then at the end."""
    return {"flush_access_log_on_connected": True, "access_log_flush_interval": period}


def grpc_unix_cluster(name: str, path: str) -> dict[str, Any]:
    """A static HTTP/2 cluster to a unix socket (Envoy `pipe` address), for a gRPC stream."""
    return grpc_cluster(name, {"pipe": {"path": path}})


def grpc_cluster(name: str, address: Mapping[str, Any]) -> dict[str, Any]:
    """A static HTTP/2 cluster to an Envoy address dict (`pipe` or `socket_address`), for a gRPC stream."""
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name,
                            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": dict(address)}}]}]},
        "typed_extension_protocol_options": {HTTP_PROTOCOL_OPTIONS: {
            "@type": "type.googleapis.com/" + HTTP_PROTOCOL_OPTIONS,
            "explicit_http_config": {"http2_protocol_options": {}},
        }},
    }


def http_cluster(name: str, address: Mapping[str, Any]) -> dict[str, Any]:
    """A static HTTP/1.1 cluster (Zipkin collector) to an Envoy address dict (`pipe` or `socket_address`)."""
    return {
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]},
    }


def _tags(custom_tags: Mapping[str, str] | None) -> list[dict[str, Any]]:
    return [{"tag": k, "literal": {"value": v}} for k, v in sorted((custom_tags or {}).items())]


def otel_tracing(service_name: str, sampling_percent: float, *, cluster: str = TRACES_CLUSTER,
                 custom_tags: Mapping[str, str] | None = None, authority: str = "") -> dict[str, Any]:
    """HCM `tracing` with Envoy's OpenTelemetry tracer: reads and writes W3C `traceparent`/`tracestate`,
    exports spans over OTLP/gRPC to `cluster`. Envoy 1.40's OpenTelemetry tracer has no B3 (see
    `zipkin_tracing`). `random_sampling` applies to requests that arrive without a sampling decision.
    `authority`: the export's `:authority` — Envoy's default is the cluster name, which a mesh cluster's `|`
    makes an invalid header for the collector's own sidecar (a protocol error: no span arrives)."""
    grpc: dict[str, Any] = {"cluster_name": cluster, **({"authority": authority} if authority else {})}
    return {
        "provider": {"name": "envoy.tracers.opentelemetry", "typed_config": {
            "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
            "grpc_service": {"envoy_grpc": grpc, "timeout": "1s"},
            "service_name": service_name,
        }},
        "random_sampling": {"value": sampling_percent},
        "spawn_upstream_span": False,
        **({"custom_tags": _tags(custom_tags)} if custom_tags else {}),
    }


def zipkin_tracing(sampling_percent: float, *, cluster: str = TRACES_CLUSTER,
                   endpoint: str = "/api/v2/spans", custom_tags: Mapping[str, str] | None = None,
                   hostname: str = "") -> dict[str, Any]:
    """HCM `tracing` with Envoy's Zipkin tracer: extracts B3 (then W3C `traceparent` when no B3 is present)
    and injects both B3 and `traceparent`; spans as Zipkin v2 JSON. Client and server spans get their own
    ids (`shared_span_context: false`), as OpenTelemetry does. `hostname`: the POST's Host (Envoy's default
    is the cluster name; see `otel_tracing`)."""
    return {
        "provider": {"name": "envoy.tracers.zipkin", "typed_config": {
            "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
            "collector_cluster": cluster,
            "collector_endpoint": endpoint,
            **({"collector_hostname": hostname} if hostname else {}),
            "collector_endpoint_version": "HTTP_JSON",
            "trace_id_128bit": True,
            "shared_span_context": False,
            "trace_context_option": "USE_B3_WITH_W3C_PROPAGATION",
        }},
        "random_sampling": {"value": sampling_percent},
        **({"custom_tags": _tags(custom_tags)} if custom_tags else {}),
    }


def tap_filter(config_id: str = TAP_CONFIG_ID) -> dict[str, Any]:
    """The HTTP tap filter, configured from the admin endpoint (`POST /tap` with this config id): it taps
    nothing until an admin session attaches, and stops when that session ends."""
    return {
        "name": "envoy.filters.http.tap",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.tap.v3.Tap",
            "common_config": {"admin_config": {"config_id": config_id}},
            "record_headers_received_time": True,
            "record_downstream_connection": True,
            "record_upstream_connection": True,
        },
    }
