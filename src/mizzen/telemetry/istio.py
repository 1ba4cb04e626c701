"""Istio's standard metrics: names, types, label names and histogram buckets. PURE.

The names and labels are Istio's (https://istio.io/latest/docs/reference/config/metrics/), so existing
dashboards and alerts work unchanged. Values that a side cannot know are "unknown", as in Istio.
"""
from __future__ import annotations

from dataclasses import dataclass

UNKNOWN = "unknown"

# The labels of every standard metric, in Istio's order.
PEER_LABELS = (
    "reporter",
    "source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
    "source_cluster",
    "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
    "destination_version", "destination_service", "destination_service_name", "destination_service_namespace",
    "destination_cluster",
)
HTTP_LABELS = PEER_LABELS + (
    "request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy",
)
TCP_LABELS = PEER_LABELS + ("request_protocol", "response_flags", "connection_security_policy")

# Istio proxy's default buckets: milliseconds for durations, bytes exponential 1..1e8.
DURATION_BUCKETS_MS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
                       300000, 600000, 1800000, 3600000)
BYTES_BUCKETS = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000)


@dataclass(frozen=True)
class Family:
    name: str  # exposition name without the _total/_bucket suffixes
    kind: str  # "counter" | "histogram"
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


REQUESTS = Family("istio_requests", "counter", "Requests handled by a sidecar, by source and destination.",
                  HTTP_LABELS)
DURATION = Family("istio_request_duration_milliseconds", "histogram",
                  "Request duration seen by the reporting sidecar (first byte in to last byte out).",
                  HTTP_LABELS, DURATION_BUCKETS_MS)
REQUEST_BYTES = Family("istio_request_bytes", "histogram", "Request size (headers and body).", HTTP_LABELS,
                       BYTES_BUCKETS)
RESPONSE_BYTES = Family("istio_response_bytes", "histogram", "Response size (headers and body).", HTTP_LABELS,
                        BYTES_BUCKETS)
TCP_SENT = Family("istio_tcp_sent_bytes", "counter", "Bytes sent to the peer on TCP connections.", TCP_LABELS)
TCP_RECEIVED = Family("istio_tcp_received_bytes", "counter", "Bytes received on TCP connections.", TCP_LABELS)
TCP_OPENED = Family("istio_tcp_connections_opened", "counter", "TCP connections opened.", TCP_LABELS)
TCP_CLOSED = Family("istio_tcp_connections_closed", "counter", "TCP connections closed.", TCP_LABELS)

HTTP_FAMILIES = (REQUESTS, DURATION, REQUEST_BYTES, RESPONSE_BYTES)
TCP_FAMILIES = (TCP_SENT, TCP_RECEIVED, TCP_OPENED, TCP_CLOSED)
FAMILIES = HTTP_FAMILIES + TCP_FAMILIES

# Envoy's response flag field names (envoy.data.accesslog.v3.ResponseFlags) -> the short codes Envoy prints
# in access logs and Istio puts in `response_flags`.
RESPONSE_FLAG_CODES = {
    "failed_local_healthcheck": "LH", "no_healthy_upstream": "UH", "upstream_request_timeout": "UT",
    "local_reset": "LR", "upstream_remote_reset": "UR", "upstream_connection_failure": "UF",
    "upstream_connection_termination": "UC", "upstream_overflow": "UO", "no_route_found": "NR",
    "delay_injected": "DI", "fault_injected": "FI", "rate_limited": "RL", "unauthorized_details": "UAEX",
    "rate_limit_service_error": "RLSE", "downstream_connection_termination": "DC",
    "upstream_retry_limit_exceeded": "URX", "stream_idle_timeout": "SI", "invalid_envoy_request_headers": "IH",
    "downstream_protocol_error": "DPE", "upstream_max_stream_duration_reached": "UMSDR",
    "response_from_cache_filter": "RFCF", "no_filter_config_found": "NFCF", "duration_timeout": "DT",
    "upstream_protocol_error": "UPE", "no_cluster_found": "NC", "overload_manager": "OM",
    "dns_resolution_failure": "DF", "downstream_remote_reset": "DR",
}


def is_success(response_code: int, grpc_status: str = "") -> bool:
    """Linkerd/Istio dashboards' notion of success: not a 5xx (and, for gRPC, a status of OK when known).
    A response code of 0 (no response: reset, timeout before headers) is a failure."""
    if response_code == 0 or response_code >= 500:
        return False
    return grpc_status in ("", "0", UNKNOWN)
