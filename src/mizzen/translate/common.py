"""Names, small builders and protobuf helpers shared by the translators. Pure."""
from __future__ import annotations

from google.protobuf import any_pb2, duration_pb2, struct_pb2, wrappers_pb2

from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2

PASSTHROUGH = "PassthroughCluster"
BLACKHOLE = "BlackHoleCluster"
INBOUND_PASSTHROUGH = "InboundPassthroughCluster"
VIRTUAL_OUTBOUND = "virtualOutbound"
VIRTUAL_INBOUND = "virtualInbound"
HTTP_PROXY_ROUTE = "http_proxy"
# Set by a sidecar's inbound side on the 503 it answers when it could not even connect to its app (response
# flags UF/UH: the request reached no app); callers' default retry policies retry on it, on another host, and
# their route configs strip it from what reaches the calling app (docs/translation.md, "Retries").
UNSERVED_HEADER = "x-mizzen-unserved"
UNSERVED_FLAGS = ("UF", "UH")


def outbound_cluster(port: int, subset: str | None, host: str) -> str:
    return f"outbound|{port}|{subset or ''}|{host}"


def inbound_cluster(port: int) -> str:
    return f"inbound|{port}||"


def pack(msg) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def u32(v: int) -> wrappers_pb2.UInt32Value:
    return wrappers_pb2.UInt32Value(value=v)


def socket_address(ip: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


def ads_source() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


def parse_duration(text: str | None) -> float | None:
    """Istio durations: '1.5s', '100ms', '1m', '1h'."""
    if not text:
        return None
    t = text.strip()
    for suffix, mult in (("ms", 0.001), ("us", 1e-6), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if t.endswith(suffix):
            return float(t[: -len(suffix)]) * mult
    return float(t)


def struct(d: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(d)
    return s


def metadata(filter_name: str, values: dict) -> base_pb2.Metadata:
    return base_pb2.Metadata(filter_metadata={filter_name: struct(values)})
