"""One HTTP request or one TCP connection event as a sidecar's Envoy reported it over the gRPC access-log
service (envoy.service.accesslog.v3), reduced to what the metrics need. PURE (protobuf in, values out).

Which side reported it is the access log's `log_name` (see `envoy.als_log_name`): the outbound listener's
HCM/tcp_proxy logs as "mizzen.outbound", the inbound one as "mizzen.inbound".
"""
from __future__ import annotations

from typing import NamedTuple

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2

from .envoy import UPSTREAM_LOCAL_TAG, UPSTREAM_PEER_TAG
from .istio import RESPONSE_FLAG_CODES

OUTBOUND, INBOUND = "outbound", "inbound"
# AccessLogType values of TCP entries
TCP_CONNECTED, TCP_PERIODIC, TCP_END = "connected", "periodic", "end"
_TCP_TYPES = {
    accesslog_pb2.TcpUpstreamConnected: TCP_CONNECTED,
    accesslog_pb2.TcpPeriodic: TCP_PERIODIC,
    accesslog_pb2.TcpConnectionEnd: TCP_END,
}
MAX_PATH = 256  # longer paths are cut (they only feed `top` and `tap`, never a metric label)


class RequestRecord(NamedTuple):  # a NamedTuple: built once per request, cheaper than a dataclass
    direction: str  # outbound (this sidecar's app called out) | inbound (someone called this app)
    downstream_ip: str  # who connected to this Envoy
    upstream_host: str  # "ip:port" Envoy sent the request to ("" when none was picked)
    upstream_cluster: str
    authority: str
    method: str
    path: str  # without the query string, at most MAX_PATH characters
    protocol: str  # "http" | "grpc"
    response_code: int  # 0: no response (reset, connect failure before headers)
    grpc_status: str  # "" when not gRPC or unknown
    response_flags: str  # "-" or Envoy's short codes joined with ","
    duration_ms: float
    request_bytes: int
    response_bytes: int
    start: float  # epoch seconds
    # the peer's SPIFFE identity from its certificate's URI SAN when the hop was mutual TLS, else "": the caller's
    # client certificate (inbound), the callee's server certificate (outbound)
    peer_principal: str = ""
    local_principal: str = ""  # this sidecar's identity from the certificate it presented on that hop, else ""
    route_name: str = ""


class TcpRecord(NamedTuple):
    direction: str
    event: str  # connected | periodic | end
    connection: str  # Envoy's stream id of the connection (joins periodic/end to connected)
    downstream_ip: str
    upstream_host: str
    upstream_cluster: str
    received_bytes: int  # cumulative for the connection so far
    sent_bytes: int
    response_flags: str
    start: float
    peer_principal: str = ""
    local_principal: str = ""


def direction_of(log_name: str) -> str:
    return INBOUND if "inbound" in log_name else OUTBOUND


def _ip(addr: address_pb2.Address) -> str:
    return addr.socket_address.address  # "" when unset (or a pipe)


def _host(addr: address_pb2.Address) -> str:
    sa = addr.socket_address
    if sa.address:
        return f"{sa.address}:{sa.port_value}"
    if addr.HasField("pipe"):
        return "unix:" + addr.pipe.path
    return ""


def response_flags(flags: accesslog_pb2.ResponseFlags) -> str:
    fields = flags.ListFields()
    if not fields:
        return "-"
    codes = [RESPONSE_FLAG_CODES[f.name] for f, v in fields if f.name in RESPONSE_FLAG_CODES and v is True]
    return ",".join(codes) if codes else "-"


def _ms(d) -> float:
    return d.seconds * 1000.0 + d.nanos / 1e6


def _spiffe(sans: str) -> str:
    return next((s.strip() for s in sans.split(",") if s.strip().startswith("spiffe://")), "")


def _uri(sans) -> str:
    return next((san.uri for san in sans if san.uri), "")


def _principals(common: accesslog_pb2.AccessLogCommon, direction: str) -> tuple[str, str]:
    """(peer, local) identities of the hop that crossed the mesh, from its certificates' URI SANs ("" without
    mutual TLS): inbound, the downstream connection's TLS properties (the caller's client certificate and the
    server certificate this sidecar presented); outbound, the upstream connection's, which Envoy reports only
    through the formatter (custom tags `envoy.UPSTREAM_PEER_TAG` / `UPSTREAM_LOCAL_TAG`)."""
    if direction == OUTBOUND:
        peer = _spiffe(common.custom_tags.get(UPSTREAM_PEER_TAG, ""))
        return peer, (_spiffe(common.custom_tags.get(UPSTREAM_LOCAL_TAG, "")) if peer else "")
    tls = common.tls_properties
    peer = _uri(tls.peer_certificate_properties.subject_alt_name)
    return peer, (_uri(tls.local_certificate_properties.subject_alt_name) if peer else "")


def from_http_entry(entry: accesslog_pb2.HTTPAccessLogEntry, direction: str) -> RequestRecord:
    c, rq, rs = entry.common_properties, entry.request, entry.response
    grpc = rs.response_trailers.get("grpc-status") or rs.response_headers.get("grpc-status") or ""
    ctype = rq.request_headers.get("content-type", "")
    protocol = "grpc" if ctype.startswith("application/grpc") or grpc else "http"
    duration = c.duration if c.HasField("duration") else c.time_to_last_downstream_tx_byte
    path = rq.original_path or rq.path
    path = path.split("?", 1)[0][:MAX_PATH]
    peer, local = _principals(c, direction)
    return RequestRecord(
        direction=direction,
        downstream_ip=_ip(c.downstream_remote_address),
        upstream_host=_host(c.upstream_remote_address),
        upstream_cluster=c.upstream_cluster,
        authority=rq.authority,
        method=base_pb2.RequestMethod.Name(rq.request_method) if rq.request_method else "",
        path=path,
        protocol=protocol,
        response_code=rs.response_code.value if rs.HasField("response_code") else 0,
        grpc_status=grpc,
        response_flags=response_flags(c.response_flags),
        duration_ms=_ms(duration),
        request_bytes=rq.request_headers_bytes + rq.request_body_bytes,
        response_bytes=rs.response_headers_bytes + rs.response_body_bytes,
        start=c.start_time.seconds + c.start_time.nanos / 1e9,
        peer_principal=peer,
        local_principal=local,
        route_name=c.route_name,
    )


def from_tcp_entry(entry: accesslog_pb2.TCPAccessLogEntry, direction: str) -> TcpRecord:
    c = entry.common_properties
    peer, local = _principals(c, direction)
    event = _TCP_TYPES.get(c.access_log_type)
    if event is None:
        event = TCP_PERIODIC if c.intermediate_log_entry else TCP_END
    return TcpRecord(
        direction=direction, event=event, connection=c.stream_id,
        downstream_ip=_ip(c.downstream_remote_address), upstream_host=_host(c.upstream_remote_address),
        upstream_cluster=c.upstream_cluster, received_bytes=entry.connection_properties.received_bytes,
        sent_bytes=entry.connection_properties.sent_bytes, response_flags=response_flags(c.response_flags),
        start=c.start_time.seconds + c.start_time.nanos / 1e9, peer_principal=peer, local_principal=local,
    )
