"""Build access-log entries as Envoy sends them (the real protobuf messages), for unit tests."""
from __future__ import annotations

from envoy.data.accesslog.v3 import accesslog_pb2

from mizzen.telemetry.envoy import UPSTREAM_LOCAL_TAG, UPSTREAM_PEER_TAG

from tests.telemetry.rig import A_IP, B_IP, INSTANCES, REVIEWS, SERVICES  # noqa: F401 (re-exported)


def http_entry(*, downstream: str = "127.0.0.1", upstream: str = f"{B_IP}:9080",
               cluster: str = f"outbound|9080|v1|{REVIEWS}", authority: str = "reviews:9080", path: str = "/",
               code: int | None = 200, duration_ms: float = 12.0, grpc: str = "", flags: tuple[str, ...] = (),
               method: int = 1, req_bytes: tuple[int, int] = (100, 0), resp_bytes: tuple[int, int] = (80, 500),
               content_type: str = "", san: str = "", local_san: str = "", upstream_sans: tuple[str, str] | None = None,
               start: float = 1_700_000_000.0) -> accesslog_pb2.HTTPAccessLogEntry:
    """`san`/`local_san`: the downstream connection's peer/local certificate URI SANs (inbound mTLS);
    `upstream_sans`: the (peer, local) values of the outbound custom tags, as Envoy's formatter renders them."""
    e = accesslog_pb2.HTTPAccessLogEntry()
    c = e.common_properties
    c.downstream_remote_address.socket_address.address = downstream
    c.downstream_remote_address.socket_address.port_value = 40000
    if upstream:
        host, port = upstream.rsplit(":", 1)
        c.upstream_remote_address.socket_address.address = host
        c.upstream_remote_address.socket_address.port_value = int(port)
    c.upstream_cluster = cluster
    c.start_time.seconds = int(start)
    c.duration.FromNanoseconds(int(duration_ms * 1e6))
    for f in flags:
        setattr(c.response_flags, f, True)
    if san:
        c.tls_properties.peer_certificate_properties.subject_alt_name.add(uri=san)
    if local_san:
        c.tls_properties.local_certificate_properties.subject_alt_name.add(uri=local_san)
    if upstream_sans is not None:
        c.custom_tags[UPSTREAM_PEER_TAG], c.custom_tags[UPSTREAM_LOCAL_TAG] = upstream_sans
    e.request.authority = authority
    e.request.path = path
    e.request.request_method = method
    e.request.request_headers_bytes, e.request.request_body_bytes = req_bytes
    if content_type:
        e.request.request_headers["content-type"] = content_type
    if code is not None:
        e.response.response_code.value = code
    e.response.response_headers_bytes, e.response.response_body_bytes = resp_bytes
    if grpc:
        e.response.response_trailers["grpc-status"] = grpc
    return e


def tcp_entry(*, kind: int, stream: str = "s1", received: int = 0, sent: int = 0, downstream: str = A_IP,
              upstream: str = f"{B_IP}:6379", cluster: str = "outbound|6379||redis.default.svc.cluster.local"
              ) -> accesslog_pb2.TCPAccessLogEntry:
    e = accesslog_pb2.TCPAccessLogEntry()
    c = e.common_properties
    c.access_log_type = kind
    c.stream_id = stream
    c.downstream_remote_address.socket_address.address = downstream
    host, port = upstream.rsplit(":", 1)
    c.upstream_remote_address.socket_address.address = host
    c.upstream_remote_address.socket_address.port_value = int(port)
    c.upstream_cluster = cluster
    e.connection_properties.received_bytes = received
    e.connection_properties.sent_bytes = sent
    return e
